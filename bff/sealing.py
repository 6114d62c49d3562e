"""Sealer: bytes encrypted and authenticated with AES-GCM under keys derived by HKDF-SHA256.

The one box every sealed thing of the BFF uses: the login-state cookie and cookie-mode sessions
(keys derived from `secret_keys`), a server-mode store record (a key derived from its session
id) and a cookie-mode successor record (a key derived from the refresh token it replaces).
Keys are given newest first, as `secret_keys` are: the first seals, every one opens, so that a
new key can be put in front without breaking what the older ones sealed. What goes inside and
how it is framed (versions, base64) is the caller's business.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["NONCE_BYTES", "OVERHEAD", "TAG_BYTES", "Sealer"]

NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = NONCE_BYTES + TAG_BYTES
"""How many bytes a sealed value is longer than its plaintext."""


class Sealer:
    """`seal`/`open` under HKDF(material, salt, info) for each material, newest first."""

    def __init__(self, materials: Sequence[bytes], *, salt: bytes, info: bytes) -> None:
        if not materials:
            raise ValueError("Sealer needs at least one key")
        self._keys = [
            AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(material))
            for material in materials
        ]

    def __repr__(self) -> str:
        return f"Sealer(keys={len(self._keys)})"

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """nonce | ciphertext and tag, under the newest key."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._keys[0].encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes = b"") -> bytes | None:
        """The plaintext, or None when `sealed` is short, tampered, or from a key not in the list."""
        if len(sealed) < OVERHEAD:
            return None
        nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        for key in self._keys:
            try:
                return key.decrypt(nonce, ciphertext, aad)
            except InvalidTag:
                continue
        return None
