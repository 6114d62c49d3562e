"""TokenSet: the tokens of one session, as the provider issued them.

Lives apart from `oidc` (which issues them) and `session` (which stores them) so that both can
import it. Tokens never appear in a repr.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import jwt

__all__ = ["TokenSet", "jwt_claims", "jwt_exp"]


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None
    """Unix time the access token expires, from `expires_in` or the JWT's `exp`; None when unknown."""
    token_type: str = "Bearer"
    """How the access token is presented: "Bearer" (RFC 6750) or "DPoP" (RFC 9449, with a proof of `dpop_key`)."""
    scope: str | None = None
    dpop_key: str | None = field(default=None, repr=False)
    """The private JWK (`bff.dpop.DPoPKey`) the tokens are bound to; None without DPoP."""

    def merged_with(self, newer: TokenSet) -> TokenSet:
        """`newer`, keeping this set's refresh and ID tokens where a refresh response left them out
        (RFC 6749 §6: the provider may keep the old refresh token valid)."""
        return dataclasses.replace(
            newer,
            refresh_token=newer.refresh_token or self.refresh_token,
            id_token=newer.id_token or self.id_token,
            dpop_key=newer.dpop_key or self.dpop_key,
        )

    def expires_within(self, seconds: float, now: float) -> bool:
        return self.expires_at is not None and self.expires_at - seconds <= now

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenSet:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def jwt_exp(token: str) -> float | None:
    """The `exp` of a JWT access token, unverified (only used to know when to refresh)."""
    claims = jwt_claims(token)
    exp = None if claims is None else claims.get("exp")
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, unverified: the BFF reads tokens it was just handed by the party that
    signed them, it never trusts a browser's copy. None when `token` is not a JWT."""
    if token.count(".") != 2:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None
