"""Login sources: who issued a session's tokens and renews them, and what a finished login hands over.

Owns the `LoginSource` protocol (implemented by `bff.oidc.OIDCClient` and
`bff.token_api.TokenAPIClient`), `LoginResult` (what either hands the sessions after a login),
`check_return_to` (the open-redirect guard of every login), `user_claims` (which claims a
session keeps) and `send_to_source` (one call to a source, its network failures made 503s).
Leaves the protocols themselves to their modules, and where the session is kept to
`bff.session`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from bff.errors import BadRequest, ProviderUnavailable
from bff.request_ids import current
from bff.tokenset import TokenSet

__all__ = ["MAX_RETURN_TO", "LoginResult", "LoginSource", "check_return_to", "send_to_source", "user_claims"]

MAX_RETURN_TO = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class LoginResult:
    """A login that succeeded: who signed in, and the tokens to keep for them."""

    sub: str
    provider_sid: str | None
    """The provider's session id (OIDC `sid`), for back-channel logout; None for a token API."""
    claims: Mapping[str, Any] = field(repr=False)
    """The claims `/bff/user` shows."""
    tokens: TokenSet = field(repr=False)


class LoginSource(Protocol):
    """Who issued the session's tokens and renews them: `OIDCClient` or `TokenAPIClient`."""

    refresh_skew: float
    """Refresh this long before the access token expires (0: only after an upstream 401)."""
    timeout: float
    """How long one call to the source may take (the refresh lease outlives it)."""

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        """New tokens for `tokens` (the session's; the caller checked its `refresh_token` is set).
        Its DPoP key, if any, signs the request and stays with the result. Raises
        `RefreshRejected` when the refresh token is dead (the session ends), `ProviderUnavailable`
        when the source is down or answers 5xx (the session is kept), `IdPError` for any other
        refusal."""

    async def end(self, tokens: TokenSet) -> str | None:
        """Revoke or blacklist the grant at logout, best effort (a failure is logged, never
        raised); return where to send the browser next (the provider's end-session URL), if anywhere."""

    async def ready(self) -> None:
        """Return when the source answers; raise a `BffError` naming what failed (`/readyz`, `bff check`)."""


def check_return_to(value: str | None) -> str:
    """A local path to send the browser to after login; raise BadRequest for anything that could
    leave this origin (`//x`, `https://x`, `/\\x`, `javascript:`, control characters)."""
    if not value:
        return "/"
    parts = urlsplit(value)
    if (
        len(value) > MAX_RETURN_TO
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value  # browsers read a backslash as a slash: /\evil.example is //evil.example
        or _CONTROL.search(value)  # browsers drop tabs and newlines: /\t/evil.example
        or parts.scheme
        or parts.netloc
    ):
        raise BadRequest('parameter "returnTo" must be a local path such as /app')
    return quote(value, safe="/?&=#%:@!$'()*+,;~-._[]")  # a Location header is ASCII


def user_claims(claims: Mapping[str, Any], *, hidden: Iterable[str], keep: Iterable[str]) -> dict[str, Any]:
    """The claims a session keeps: none of `hidden`, and only `keep` (plus `sub`) when it is not empty."""
    kept = set(keep)
    dropped = set(hidden)
    return {
        name: value
        for name, value in claims.items()
        if name not in dropped and (not kept or name in kept or name == "sub")
    }


async def send_to_source(
    http: httpx.AsyncClient, request: httpx.Request, *, who: str, retry_after: float
) -> httpx.Response:
    """Send `request` and read its answer; a network failure is `ProviderUnavailable` naming
    `who` ("provider", "token API") and the host, never the request's content. Sent during a
    request, it carries that request's `X-Request-ID`."""
    access = current.get()
    if access is not None:
        request.headers["x-request-id"] = access.request_id
    try:
        response = await http.send(request)
        await response.aread()
    except httpx.TransportError as exc:
        raise ProviderUnavailable(
            f"{who} unreachable at {request.url.host}: {type(exc).__name__}", retry_after=retry_after
        ) from None
    return response
