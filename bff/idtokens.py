"""TokenValidator: the provider's signing keys (JWKS) and the checks on the JWTs it sends.

Owns the JWKS cache (an unknown `kid` refetches it once, for key rotation, at most every
`JWKS_REFETCH_INTERVAL` seconds), signature, `iss` and `aud` checks through PyJWT, and the claim
checks PyJWT leaves to the caller: OIDC Core §3.1.3.7 for ID tokens, Back-Channel Logout 1.0 §2.6
for logout tokens, times against the injected clock. Leaves discovery and sending to `OIDCClient`
(`bff.oidc`, which hands over its `discover` and `send`), and replay of logout-token `jti`s to
`endpoints` (it needs the store).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from bff.discovery import ProviderMetadata, json_or_unavailable
from bff.errors import BadRequest, IdPError, LoginFailed
from bff.oidc_settings import FAPI2_ALGORITHMS, OIDCSettings

__all__ = [
    "BACKCHANNEL_LOGOUT_EVENT",
    "ID_TOKEN",
    "JWKS_REFETCH_INTERVAL",
    "LOGOUT_TOKEN",
    "LOGOUT_TOKEN_MAX_AGE",
    "TokenKind",
    "TokenValidator",
    "check_id_token_claims",
    "check_logout_token_claims",
]

JWKS_REFETCH_INTERVAL = 10.0
LOGOUT_TOKEN_MAX_AGE = 300.0
"""Logout tokens issued longer ago than this (plus leeway) are refused, so remembering each `jti`
for this long is enough to refuse every replay."""
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


@dataclass(frozen=True)
class TokenKind:
    """What differs between the two JWTs the provider sends: how a refusal reads and answers."""

    what: str
    """How messages name it."""
    error: type[BadRequest | LoginFailed]
    """A refused ID token fails the login; a refused logout token is the provider's bad request."""
    require: tuple[str, ...]
    """Claims that must be present."""
    require_exp: bool


ID_TOKEN = TokenKind("ID token", LoginFailed, ("iss", "sub", "aud", "exp", "iat"), require_exp=True)
LOGOUT_TOKEN = TokenKind("logout token", BadRequest, ("iss", "aud", "iat", "jti", "events"), require_exp=False)


def check_id_token_claims(claims: Mapping[str, Any], oidc: OIDCSettings, *, nonce: str, now: float) -> None:
    """OIDC Core §3.1.3.7, the checks PyJWT leaves to the caller (times against the injected clock)."""
    _check_times(claims, oidc.leeway, now, ID_TOKEN)
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    # §3.1.3.7 items 4 and 5: with several audiences azp must be present and be this client.
    if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != oidc.client_id:
        raise LoginFailed(f'ID token "azp" is {claims.get("azp")!r}, expected {oidc.client_id!r}')
    # §3.1.3.7 item 11: nonce must match the one sent with this login.
    if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], nonce):
        raise LoginFailed('ID token "nonce" does not match the login request')


def check_logout_token_claims(claims: Mapping[str, Any], oidc: OIDCSettings, *, now: float) -> None:
    """Back-Channel Logout 1.0 §2.6, items 3 to 6 (signature, iss and aud were checked by PyJWT)."""
    _check_times(claims, oidc.leeway, now, LOGOUT_TOKEN)
    if claims["iat"] < now - LOGOUT_TOKEN_MAX_AGE - oidc.leeway:
        raise BadRequest('logout token "iat" is too old')
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise BadRequest(f'logout token "events" lacks {BACKCHANNEL_LOGOUT_EVENT!r}')
    if "nonce" in claims:
        raise BadRequest('logout token must not contain "nonce"')
    if not isinstance(claims.get("sub"), str) and not isinstance(claims.get("sid"), str):
        raise BadRequest('logout token has neither "sub" nor "sid"')
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise BadRequest('logout token has no "jti"')


class TokenValidator:
    """ID and logout tokens of one provider, with the JWKS cache of one process."""

    def __init__(
        self,
        config: OIDCSettings,
        *,
        discover: Callable[[], Awaitable[ProviderMetadata]],
        send: Callable[[httpx.Request], Awaitable[httpx.Response]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._discover = discover
        self._send = send
        self._clock = clock
        self._jwks: dict[str, dict[str, Any]] = {}
        self._jwks_fetched_at: float | None = None
        self._jwks_lock = asyncio.Lock()

    async def validate_id_token(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        claims = await self._decode(id_token, ID_TOKEN)
        check_id_token_claims(claims, self.config, nonce=nonce, now=self._clock())
        return claims

    async def validate_logout_token(self, logout_token: str) -> dict[str, Any]:
        """Back-Channel Logout 1.0 §2.6, but for `jti` replay, which needs the store."""
        claims = await self._decode(logout_token, LOGOUT_TOKEN)
        check_logout_token_claims(claims, self.config, now=self._clock())
        return claims

    async def _decode(self, token: str, kind: TokenKind) -> dict[str, Any]:
        what, error = kind.what, kind.error
        provider = await self._discover()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise error(f"{what} is not a JWT") from None
        alg = header.get("alg")
        allowed = provider.algorithms
        if self.config.profile == "fapi2":
            allowed = [name for name in allowed if name in FAPI2_ALGORITHMS]
        if alg not in allowed:
            raise error(f"{what} algorithm {alg!r} is not one of {allowed}")
        jwk = await self._signing_key(header.get("kid"), alg)
        if jwk is None:
            raise error(f"{what} is signed with an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=jwt.PyJWK(jwk, algorithm=alg),
                algorithms=[alg],
                audience=self.config.client_id,
                issuer=provider.issuer,
                # exp, iat and nbf are checked against the injected clock in check_*_claims.
                options={"require": list(kind.require), "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError as exc:
            raise error(f"{what} rejected: {exc}") from None
        return claims

    async def _signing_key(self, kid: str | None, alg: str) -> dict[str, Any] | None:
        key = self._find_key(kid, alg)
        if key is not None:
            return key
        async with self._jwks_lock:  # concurrent validations with an unknown kid fetch once
            fetched_at = self._jwks_fetched_at
            if fetched_at is None or self._clock() - fetched_at >= JWKS_REFETCH_INTERVAL:
                await self._fetch_jwks()  # first use, or the provider may have rotated its keys
            return self._find_key(kid, alg)

    def _find_key(self, kid: str | None, alg: str) -> dict[str, Any] | None:
        kty = {"R": "RSA", "P": "RSA", "E": "EC"}.get(alg[0], "OKP")
        candidates = [
            key
            for key in self._jwks.values()
            if key.get("kty") == kty and key.get("alg", alg) == alg and (kid is None or key.get("kid") == kid)
        ]
        # Without a kid the key must be unambiguous (OIDC Core §10.1).
        return candidates[0] if len(candidates) == 1 or (kid is not None and candidates) else None

    async def _fetch_jwks(self) -> None:
        provider = await self._discover()
        response = await self._send(httpx.Request("GET", provider.jwks_uri, headers={"accept": "application/json"}))
        data = json_or_unavailable(response, "JWKS", retry_after=self.config.retry_after)
        try:
            jwt.PyJWKSet.from_dict(data)  # refuses a set without one usable key
        except jwt.PyJWTError as exc:
            raise IdPError(f"JWKS unusable: {exc}") from None
        keys = [key for key in data["keys"] if isinstance(key, dict) and key.get("use", "sig") == "sig"]
        self._jwks = {str(key.get("kid", i)): key for i, key in enumerate(keys)}
        self._jwks_fetched_at = self._clock()


def _check_times(claims: Mapping[str, Any], leeway: float, now: float, kind: TokenKind) -> None:
    what, error = kind.what, kind.error
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if (value is not None or (name == "exp" and kind.require_exp) or name == "iat") and (
            not isinstance(value, int | float) or isinstance(value, bool)
        ):
            raise error(f'{what} "{name}" must be a number')
    if "exp" in claims and claims["exp"] <= now - leeway:
        raise error(f"{what} has expired")
    if claims["iat"] > now + leeway or claims.get("nbf", 0) > now + leeway:
        raise error(f"{what} is not valid yet")
