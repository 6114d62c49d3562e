"""SigningKey: the RS256 key pair of the development identity provider, made at first start;
TokenMinter: the access and ID tokens it signs.

Owns signing JWTs, the claims of the tokens the provider issues, and publishing the public half
as a JWK. The key id is the RFC 7638 thumbprint, so a new key (a restart) has a new `kid` and
verifiers can tell the difference. Which grant a token belongs to is `demo.grants`' business.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

__all__ = ["ALGORITHM", "SigningKey", "TokenMinter"]

ALGORITHM = "RS256"


class SigningKey:
    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private_key = private_key
        self._public_jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(private_key.public_key()))
        self.kid = _thumbprint(self._public_jwk)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        """A key saved by `to_pem`; raises `ValueError` for anything else."""
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA private key")
        return cls(key)

    def to_pem(self) -> bytes:
        return self._private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"

    def public_jwk(self) -> dict[str, Any]:
        return {**self._public_jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    def sign(self, claims: Mapping[str, Any], *, typ: str = "JWT") -> str:
        return jwt.encode(dict(claims), self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": typ})

    def verify(self, token: str, *, verify_exp: bool = True, issuer: str) -> dict[str, Any]:
        """Claims of a token this key signed; raises `jwt.InvalidTokenError`. The audience is the
        caller's to check (the provider accepts its tokens for several audiences)."""
        claims: dict[str, Any] = jwt.decode(
            token,
            self._private_key.public_key(),
            algorithms=[ALGORITHM],
            issuer=issuer,
            options={"verify_aud": False, "verify_exp": verify_exp, "require": ["iss", "sub", "iat"]},
        )
        return claims


class TokenMinter:
    """Signs the provider's access tokens (`at+jwt`, RFC 9068, for the demo API's audience) and
    ID tokens (for the client), each stamped with the injected clock."""

    def __init__(
        self,
        key: SigningKey,
        *,
        issuer: str,
        api_audience: str,
        access_ttl: float,
        id_token_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.issuer = issuer
        self.access_ttl = int(access_ttl)
        self._audience = api_audience
        self._id_token_ttl = int(id_token_ttl)
        self._clock = clock

    def access_token(self, *, sub: str, client_id: str, scope: str, **extra: str) -> str:
        issued_at = int(self._clock())
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "aud": self._audience,
            "iat": issued_at,
            "exp": issued_at + self.access_ttl,
            "jti": secrets.token_urlsafe(12),
            "client_id": client_id,
            "scope": scope,
            **extra,
        }
        return self.key.sign(claims, typ="at+jwt")

    def id_token(self, *, sub: str, client_id: str, **claims: Any) -> str:
        """OIDC Core §2: `claims` adds `auth_time`, `nonce`, `sid`, the profile claims."""
        issued_at = int(self._clock())
        body = {
            "iss": self.issuer,
            "sub": sub,
            "aud": client_id,
            "azp": client_id,
            "iat": issued_at,
            "exp": issued_at + self._id_token_ttl,
            **claims,
        }
        return self.key.sign(body)


def _thumbprint(jwk: Mapping[str, Any]) -> str:
    # RFC 7638 §3: the required members in lexicographic order, no whitespace.
    canonical = json.dumps({"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
