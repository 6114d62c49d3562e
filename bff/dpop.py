"""DPoP (RFC 9449), pure: a session's key pair, its proofs, and the nonces servers hand out.

Owns `DPoPKey` (an ES256 key pair: generated per session, kept as a private JWK string in the
session's sealed `TokenSet`, public JWK and RFC 7638 thumbprint for `dpop_jkt`/`cnf.jkt`, and
`proof()` for one request), `htu_of` (§4.2: the URL without query and fragment), reading a
`DPoP-Nonce` header and a resource server's `use_dpop_nonce` challenge (§8, §9), and `nonces`, the
newest nonce of each server origin this process has seen. No sockets, no settings: sending proofs
to the provider is `bff.oidc`'s business, to upstreams `bff.upstream_auth`'s.

A proof is signed for every proxied request, so the header segment is encoded once per key and a
small cache keeps keys loaded by their JWK string: a proof costs one ES256 signature.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

__all__ = [
    "KEY_CACHE_SIZE",
    "DPoPKey",
    "NonceMemory",
    "access_token_hash",
    "asks_for_nonce",
    "htu_of",
    "jwk_thumbprint",
    "nonce_of",
    "nonces",
    "origin_of",
]

KEY_CACHE_SIZE = 1024
"""Loaded keys kept per process (by private JWK string): about the sessions active at once."""
_COORDINATE_BYTES = 32  # P-256
_ES256 = ec.ECDSA(hashes.SHA256())
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
_NONCE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # §8.1: NQCHAR
_CHALLENGE_ERROR = re.compile(r'(?:^|[\s,])error\s*=\s*"?use_dpop_nonce"?(?:$|[\s,])', re.IGNORECASE)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_int(value: int) -> str:
    return _b64(value.to_bytes(_COORDINATE_BYTES, "big"))


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def jwk_thumbprint(jwk: Mapping[str, object]) -> str:
    """RFC 7638: base64url SHA-256 of the key's required members, in order, without whitespace."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise ValueError(f"no thumbprint for key type {jwk.get('kty')!r}")
    return _b64(hashlib.sha256(_json({name: jwk[name] for name in members})).digest())


def access_token_hash(access_token: str) -> str:
    """§4.2 `ath`: base64url SHA-256 of the access token's ASCII."""
    return _b64(hashlib.sha256(access_token.encode("ascii")).digest())


def htu_of(url: str) -> str:
    """§4.2: the target URI without query and fragment; a WebSocket URL in its http(s) form (the
    upgrade is an HTTP GET, RFC 6455 §4.1)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path or "/", "", ""))


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of `url`: the server a nonce belongs to."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


def nonce_of(header: str | None) -> str | None:
    """The `DPoP-Nonce` header's value when it is a well-formed nonce (§8.1), else None."""
    if header is None:
        return None
    value = header.strip()
    return value if _NONCE.fullmatch(value) else None


def asks_for_nonce(www_authenticate: str | None) -> bool:
    """A resource server's `WWW-Authenticate: DPoP error="use_dpop_nonce"` challenge (§9)."""
    if not www_authenticate:
        return False
    scheme, _, params = www_authenticate.strip().partition(" ")
    return scheme.lower() == "dpop" and _CHALLENGE_ERROR.search(params) is not None


class DPoPKey:
    """One session's ES256 key pair. The private half leaves only as `private_jwk()`, for the
    sealed session; no repr shows it."""

    __slots__ = ("_header", "_private", "jkt", "public_jwk")

    def __init__(self, private: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private.curve, ec.SECP256R1):
            raise ValueError("a DPoP key must be a P-256 key (ES256)")
        numbers = private.public_key().public_numbers()
        self._private = private
        self.public_jwk: dict[str, str] = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64_int(numbers.x),
            "y": _b64_int(numbers.y),
        }
        self.jkt = jwk_thumbprint(self.public_jwk)
        """RFC 7638 thumbprint: the `dpop_jkt` of the authorization request, the token's `cnf.jkt`."""
        self._header = _b64(_json({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.public_jwk})) + "."

    def __repr__(self) -> str:
        return f"DPoPKey(jkt={self.jkt!r})"

    @classmethod
    def generate(cls) -> DPoPKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_jwk(cls, private_jwk: str) -> DPoPKey:
        """The key of `private_jwk()`'s JSON, loaded once per process while it stays in the cache."""
        return _load_key(private_jwk)

    def private_jwk(self) -> str:
        """The key pair as a private JWK JSON string (it holds `d`: keep it sealed)."""
        d = self._private.private_numbers().private_value
        return json.dumps({**self.public_jwk, "d": _b64_int(d)}, separators=(",", ":"))

    def proof(
        self,
        method: str,
        url: str,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        now: float | None = None,
    ) -> str:
        """A DPoP proof JWT (§4.2) for one request of `method` to `url`; with `access_token` it
        carries `ath` (§7.1), with `nonce` the server's nonce (§8)."""
        claims: dict[str, object] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": htu_of(url),
            "iat": int(time.time() if now is None else now),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        signing_input = self._header + _b64(json.dumps(claims, separators=(",", ":")).encode())
        r, s = decode_dss_signature(self._private.sign(signing_input.encode("ascii"), _ES256))
        return signing_input + "." + _b64(r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big"))


@functools.lru_cache(maxsize=KEY_CACHE_SIZE)
def _load_key(private_jwk: str) -> DPoPKey:
    data = json.loads(private_jwk)
    if not isinstance(data, dict) or data.get("kty") != "EC" or data.get("crv") != "P-256":
        raise ValueError("a DPoP key must be a P-256 EC JWK")
    public = ec.EllipticCurvePublicNumbers(_int(data.get("x")), _int(data.get("y")), ec.SECP256R1())
    return DPoPKey(ec.EllipticCurvePrivateNumbers(_int(data.get("d")), public).private_key())


def _int(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("a JWK member must be a base64url string")
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


class NonceMemory:
    """The newest `DPoP-Nonce` of each server origin, for the next proof to it (§8.2); bounded, the
    origin heard from longest ago is forgotten first."""

    def __init__(self, capacity: int = 256) -> None:
        self._capacity = capacity
        self._nonces: OrderedDict[str, str] = OrderedDict()

    def get(self, origin: str) -> str | None:
        return self._nonces.get(origin)

    def remember(self, origin: str, header: str | None) -> str | None:
        """Keep the nonce of a `DPoP-Nonce` header (if well-formed) for `origin`; return it."""
        nonce = nonce_of(header)
        if nonce is not None:
            self._nonces[origin] = nonce
            self._nonces.move_to_end(origin)
            if len(self._nonces) > self._capacity:
                self._nonces.popitem(last=False)
        return nonce


nonces = NonceMemory()
"""The process's nonces: the provider's and every upstream's."""
