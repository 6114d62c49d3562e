"""CookieCodec: the BFF's cookies as `Set-Cookie` strings, and what goes inside them.

Owns three things, all keyed by `Settings.secret_keys` (the first signs and encrypts, every key
verifies and decrypts, so that a new key can be put in front without logging anyone out):

- the session cookie: a random session id signed with itsdangerous (HMAC-SHA256). The id means
  nothing without the store; the cookie carries no token;
- `seal`/`unseal`: small dicts (the login state) encrypted and authenticated with AES-GCM under
  a key derived by HKDF from the secret and a `purpose` (`bff.sealing`), with the time they were
  sealed;
- the attributes: `HttpOnly`, `Path=/`, no `Domain`, `SameSite`, and `Secure` plus the
  `__Host-` name prefix whenever `public_url` is https.

Reading a cookie never raises: a missing, tampered, truncated, foreign-key or garbage value
reads as `None`. What a session id points to is `bff.session`'s business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from itsdangerous import BadData, Signer

from bff.config import Settings
from bff.sealing import OVERHEAD, Sealer

__all__ = ["MAX_CHUNKS", "MAX_SET_COOKIE", "SESSION_ID_PATTERN", "VERIFIED_CACHE_SIZE", "CookieCodec"]

# secrets.token_urlsafe(32): 32 random bytes, 43 base64url characters.
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
_SEAL_VERSION = b"\x01"
_MAX_COOKIE_VALUE = 4096
MAX_SET_COOKIE = 4000
"""Every `Set-Cookie` the BFF sends is shorter than this: browsers keep about 4096 bytes of name,
value and attributes per cookie (RFC 6265 §6.1), and some count the attributes too."""
MAX_CHUNKS = 8
"""At most this many cookies carry one chunked value (about 31 KB): a cookie-mode session that
needs more fails its login instead of sending a cookie the browser would drop. (nginx's default
`large_client_header_buffers` refuses a `Cookie` header over 8 KiB: raise it, or keep the
session to two chunks.)"""
_SAME_SITE = {"strict": "Strict", "lax": "Lax"}
VERIFIED_CACHE_SIZE = 4096
"""Session-cookie values whose signature a process remembers having verified (a signature
without a timestamp stays valid while the process's `secret_keys` do)."""


class CookieCodec:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        if not settings.secret_keys:
            raise ValueError("CookieCodec needs at least one secret key")
        self.session_cookie_name = settings.session_cookie_name
        self._secure = settings.is_https
        self._same_site = _same_site(settings.session.same_site)
        self._clock = clock
        secrets_ = [str(secret).encode() for secret in settings.secret_keys]
        # itsdangerous signs with the *last* key of its list and verifies with all of them.
        self._signer = Signer(
            list(reversed(secrets_)),
            salt=b"bff.session-id",
            key_derivation="hmac",
            digest_method=hashlib.sha256,
        )
        self._secrets = secrets_
        self._sealers: dict[str, Sealer] = {}
        # signed value -> session id, for values that verified (an HMAC per key costs ~17 us, the
        # lookup ~0.2 us); unsigned values never enter, so no forgery can crowd it.
        self._verified: OrderedDict[str, str] = OrderedDict()

    def __repr__(self) -> str:
        return f"CookieCodec(session_cookie_name={self.session_cookie_name!r}, keys={len(self._secrets)})"

    # -- the session cookie -------------------------------------------------------------------

    def sign_session_id(self, session_id: str) -> str:
        return self._signer.sign(session_id.encode("ascii")).decode("ascii")

    def read_session_id(self, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
        """The verified session id from raw ASGI request headers, or None.

        When the browser sends several cookies of our name (one planted by a sibling domain
        cannot use the `__Host-` prefix, but over http it can), the first that verifies wins.
        """
        for value in self._cookie_values(headers, self.session_cookie_name):
            session_id = self._unsign(value)
            if session_id is not None:
                return session_id
        return None

    def _unsign(self, value: str) -> str | None:
        known = self._verified.get(value)
        if known is not None:
            self._verified.move_to_end(value)
            return known
        if len(value) > _MAX_COOKIE_VALUE:
            return None
        try:
            session_id = self._signer.unsign(value.encode("ascii")).decode("ascii")
        except (BadData, UnicodeError, ValueError):
            return None
        if not SESSION_ID_PATTERN.fullmatch(session_id):
            return None
        self._verified[value] = session_id
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return session_id

    @staticmethod
    def _cookie_values(headers: Sequence[tuple[bytes, bytes]], name: str) -> list[str]:
        values: list[str] = []
        for header, raw in headers:
            if header.lower() != b"cookie":
                continue
            for part in raw.decode("latin-1").split(";"):
                key, sep, value = part.strip().partition("=")
                if sep and key.strip() == name:
                    value = value.strip()
                    if len(value) >= 2 and value[0] == value[-1] == '"':
                        value = value[1:-1]
                    values.append(value)
        return values

    # -- a value in numbered chunks: <name> = "<count>.<part 0>", <name>-1 ... <name>-<count-1> ---

    def set_chunked(self, name: str, value: str, *, max_age: int, previous_chunks: int) -> list[str] | None:
        """`Set-Cookie` values carrying `value` in as few chunks as fit, each header under
        `MAX_SET_COOKIE` bytes, and deleting the chunks beyond them that the browser had
        (`previous_chunks`); None when more than `MAX_CHUNKS` would be needed."""
        # The longest header a chunk can get: the longest name, a count prefix, every attribute.
        room = (
            MAX_SET_COOKIE - 1 - len(self._header(f"{name}-{MAX_CHUNKS}", f"{MAX_CHUNKS}.", max_age, self._same_site))
        )
        parts = [value[i : i + room] for i in range(0, len(value), room)] or [""]
        if len(parts) > MAX_CHUNKS:
            return None
        headers = [self._header(name, f"{len(parts)}.{parts[0]}", max_age, self._same_site)]
        headers += [self._header(f"{name}-{i}", part, max_age, self._same_site) for i, part in enumerate(parts) if i]
        headers += [self._header(f"{name}-{i}", "", 0, self._same_site) for i in range(len(parts), previous_chunks)]
        return headers

    def read_chunked(self, headers: Sequence[tuple[bytes, bytes]], name: str) -> tuple[str, int] | None:
        """The value `set_chunked` wrote and how many chunks it came in, or None when a chunk is
        missing, oversized or malformed."""
        jar: dict[str, str] = {}
        for header, raw in headers:
            if header.lower() != b"cookie":
                continue
            for part in raw.decode("latin-1").split(";"):
                key, sep, item = part.strip().partition("=")
                key = key.strip()
                if sep and (key == name or key.startswith(name + "-")) and key not in jar:
                    jar[key] = item.strip()
        count, dot, first = jar.get(name, "").partition(".")
        if not dot or not count.isdigit() or not 1 <= int(count) <= MAX_CHUNKS:
            return None
        parts = [first, *(jar.get(f"{name}-{i}") for i in range(1, int(count)))]
        if not all(part is not None and len(part) <= _MAX_COOKIE_VALUE for part in parts):
            return None
        return "".join(part for part in parts if part is not None), int(count)

    def chunks_held(self, headers: Sequence[tuple[bytes, bytes]], name: str) -> int:
        """How many chunk names of `name` the browser sends (the highest index plus one), whether
        or not they make a valid value: what a new value has to delete beyond its own."""
        held = 0
        for header, raw in headers:
            if header.lower() != b"cookie":
                continue
            for part in raw.decode("latin-1").split(";"):
                key = part.strip().partition("=")[0].strip()
                if key == name:
                    held = max(held, 1)
                elif key.startswith(name + "-") and key[len(name) + 1 :].isdigit():
                    held = max(held, min(int(key[len(name) + 1 :]), MAX_CHUNKS - 1) + 1)
        return held

    def clear_chunked(self, name: str, chunks: int) -> list[str]:
        """`Set-Cookie` values deleting `name` and its chunks up to `chunks`."""
        return [self._header(name, "", 0, self._same_site)] + [
            self._header(f"{name}-{i}", "", 0, self._same_site) for i in range(1, chunks)
        ]

    def cookie_value(self, headers: Sequence[tuple[bytes, bytes]], name: str) -> str | None:
        """The raw value of the first cookie called `name` (e.g. the login-state cookie), or None."""
        values = self._cookie_values(headers, name)
        return values[0] if values else None

    def session_set_cookie(self, signed_value: str, max_age: int) -> str:
        return self._header(self.session_cookie_name, signed_value, max_age, self._same_site)

    def session_clear_cookie(self) -> str:
        return self._header(self.session_cookie_name, "", 0, self._same_site)

    # -- any other cookie of the BFF (the login state) ----------------------------------------

    def set_cookie(self, name: str, value: str, *, max_age: int, same_site: str) -> str:
        return self._header(name, value, max_age, _same_site(same_site))

    def clear_cookie(self, name: str, *, same_site: str) -> str:
        return self._header(name, "", 0, _same_site(same_site))

    def _header(self, name: str, value: str, max_age: int, same_site: str) -> str:
        parts = [f"{name}={value}", f"Max-Age={max(0, int(max_age))}", "Path=/", "HttpOnly"]
        if self._secure:
            # Secure flag can be used with HTTPS only; the __Host- prefix requires it.
            parts.append("Secure")
        parts.append(f"SameSite={same_site}")
        return "; ".join(parts)

    # -- sealed values ------------------------------------------------------------------------

    def seal(self, data: Mapping[str, Any], *, purpose: str) -> str:
        """`data` as JSON, encrypted and authenticated for `purpose`, stamped with the time:
        base64url text, safe in a cookie or a URL."""
        plaintext = struct.pack(">d", self._clock()) + json.dumps(dict(data), separators=(",", ":")).encode()
        sealed = self.sealer(purpose).seal(plaintext, _seal_aad(purpose))
        return base64.urlsafe_b64encode(_SEAL_VERSION + sealed).rstrip(b"=").decode("ascii")

    def unseal(self, token: str, *, purpose: str, max_age: float) -> dict[str, Any] | None:
        """The dict `seal` was given, or None when the token is bad, older than `max_age`
        seconds, sealed for another purpose or with a key no longer in the list."""
        if not token or len(token) > _MAX_COOKIE_VALUE:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < 1 + OVERHEAD + 8 or raw[:1] != _SEAL_VERSION:
            return None
        plaintext = self.sealer(purpose).open(raw[1:], _seal_aad(purpose))
        if plaintext is None:
            return None
        (sealed_at,) = struct.unpack(">d", plaintext[:8])
        age = self._clock() - sealed_at
        if age > max_age or age < -5:  # 5 s of tolerance for a clock stepping back
            return None
        try:
            data = json.loads(plaintext[8:])
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def sealer(self, purpose: str) -> Sealer:
        """The box for `purpose` under every secret key (the first seals), derived once."""
        sealer = self._sealers.get(purpose)
        if sealer is None:
            sealer = Sealer(self._secrets, salt=b"bff-proxy", info=b"bff seal:" + purpose.encode())
            self._sealers[purpose] = sealer
        return sealer


def _seal_aad(purpose: str) -> bytes:
    return b"bff seal v1:" + purpose.encode()


def _same_site(value: str) -> str:
    try:
        return _SAME_SITE[value.lower()]
    except KeyError:
        raise ValueError(f"same_site {value!r}: expected strict or lax") from None
