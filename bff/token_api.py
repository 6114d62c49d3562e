"""TokenAPIClient: an existing JWT login API (SimpleJWT, flask-jwt-extended, ...) as the login source.

The SPA posts its credentials to the BFF as JSON; the BFF forwards that body as is to the API's
`login_url` and keeps the tokens of the answer. Each call is a pure *build* step (an
`httpx.Request`), one `send`, and a pure *parse* step, as in `bff.oidc`, so the protocol logic is
testable without sockets.

Owns: the login, refresh, logout (blacklist) and userinfo calls, where the tokens sit in the API's
JSON (dotted paths), how the refresh token travels (json, form or bearer), rotation, mapping the
API's statuses onto the `BffError` tree (never quoting its body: it may echo a password or hold a
token), and the user id and claims of a login. Leaves to others: the login endpoint and which
client address to forward (`endpoints`), where tokens are kept (`session`), when to refresh
(`tokens`), and the access token's signature, which the API and the upstreams check: the BFF only
reads the claims of a token it was just handed by the API itself.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import httpx

from bff.config import TokenAPISettings, TokenPlacement
from bff.errors import IdPError, InvalidCredentials, ProviderUnavailable, RefreshRejected, TooManyRequests
from bff.login import LoginResult, send_to_source
from bff.tokenset import TokenSet, jwt_claims, jwt_exp

__all__ = [
    "TokenAPIClient",
    "build_login_request",
    "build_logout_request",
    "build_refresh_request",
    "build_userinfo_request",
    "field",
    "login_claims",
    "parse_login_response",
    "parse_refresh_response",
    "parse_userinfo_response",
]

logger = logging.getLogger("bff.token_api")

# What DRF, SimpleJWT and flask-jwt-extended answer for bad credentials or a dead refresh token.
_REFUSED = frozenset({400, 401, 403, 422})
# Claims about the token, not the user: `/bff/user` does not show them.
_BOOKKEEPING = frozenset({"exp", "iat", "nbf", "jti", "token_type"})
_JSON = "application/json"


def field(data: Any, path: str) -> Any:
    """The value at a dotted `path` (`data.access`) of parsed JSON; None when any step is missing."""
    for name in path.split("."):
        if not isinstance(data, dict) or name not in data:
            return None
        data = data[name]
    return data


def build_login_request(config: TokenAPISettings, body: bytes, *, client_ip: str | None) -> httpx.Request:
    headers = {"content-type": _JSON, "accept": _JSON}
    if client_ip:
        # The API throttles logins per address; without this it would count only the BFF's.
        headers["x-forwarded-for"] = client_ip
    return httpx.Request("POST", config.login_url, content=body, headers=headers)


def build_refresh_request(config: TokenAPISettings, refresh_token: str) -> httpx.Request:
    return _with_token("POST", config.refresh_url, config.refresh_token_in, config.refresh_token_param, refresh_token)


def build_logout_request(config: TokenAPISettings, tokens: TokenSet) -> httpx.Request | None:
    """The call that blacklists the refresh token; None when there is no `logout_url` or nothing to revoke."""
    if not config.logout_url or not tokens.refresh_token:
        return None
    return _with_token(
        config.logout_method,
        config.logout_url,
        config.logout_token_in,
        config.refresh_token_param,
        tokens.refresh_token,
    )


def build_userinfo_request(config: TokenAPISettings, access_token: str) -> httpx.Request | None:
    if not config.userinfo_url:
        return None
    return httpx.Request(
        "GET", config.userinfo_url, headers={"accept": _JSON, "authorization": f"Bearer {access_token}"}
    )


def parse_login_response(
    response: httpx.Response, config: TokenAPISettings, *, now: float, retry_after: float
) -> TokenSet:
    """Login answer → TokenSet. Raises InvalidCredentials when the API refuses the credentials,
    TooManyRequests when it throttles, ProviderUnavailable on 5xx, IdPError on anything else."""
    status = response.status_code
    if status in _REFUSED:
        # Never the answer's body: it may echo the password or hold a token.
        raise InvalidCredentials("the login API refused the credentials")
    if status == 429:
        seconds = _retry_after_of(response)
        raise TooManyRequests(
            "the login API is throttling logins", retry_after=None if seconds is None else str(seconds)
        )
    data, tokens = _token_answer(response, config, "login", now=now, retry_after=retry_after)
    refresh_token = _string(field(data, config.refresh_token_field))
    return TokenSet(access_token=tokens.access_token, refresh_token=refresh_token, expires_at=tokens.expires_at)


def parse_refresh_response(
    response: httpx.Response, config: TokenAPISettings, *, now: float, retry_after: float
) -> TokenSet:
    """Refresh answer → TokenSet. Raises RefreshRejected when the API refuses the refresh token
    (the session ends), ProviderUnavailable on 429 or 5xx (the session is kept), IdPError on
    anything else. `refresh_token` is None unless the answer brings one that `rotation` takes."""
    status = response.status_code
    if status in _REFUSED:
        raise RefreshRejected("the refresh API refused the refresh token", error="invalid_grant", status=status)
    if status == 429:
        raise ProviderUnavailable(
            "token_api.refresh_url answered 429 (throttled)",
            retry_after=_retry_after_or(response, retry_after),
            status=status,
        )
    data, tokens = _token_answer(response, config, "refresh", now=now, retry_after=retry_after)
    refresh_token = _string(field(data, config.refresh_token_field))
    if config.rotation == "never":
        refresh_token = None
    elif config.rotation == "always" and refresh_token is None:
        raise IdPError(
            f'the refresh answer has no "{config.refresh_token_field}" (token_api.rotation is "always")',
            status=status,
        )
    return TokenSet(access_token=tokens.access_token, refresh_token=refresh_token, expires_at=tokens.expires_at)


def parse_userinfo_response(response: httpx.Response, *, retry_after: float = 5) -> dict[str, Any]:
    """The userinfo answer's JSON object; ProviderUnavailable on 5xx, IdPError otherwise."""
    status = response.status_code
    if status >= 500:
        raise ProviderUnavailable(
            f"token_api.userinfo_url answered {status}",
            retry_after=_retry_after_or(response, retry_after),
            status=status,
        )
    if status != 200:
        raise IdPError(f"token_api.userinfo_url answered {status}, expected 200", status=status)
    data = _json_object(response)
    if data is None:
        raise IdPError("token_api.userinfo_url answered without a JSON object", status=status)
    return data


def login_claims(
    config: TokenAPISettings, tokens: TokenSet, userinfo: dict[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    """Who logged in (`user_id_claim`, as a string) and the claims `/bff/user` shows: the userinfo
    object when there is one, else the access token's claims without the token's bookkeeping."""
    if userinfo is not None:
        source, found, claims = "the userinfo answer", userinfo, dict(userinfo)
    else:
        token_claims = jwt_claims(tokens.access_token)
        if token_claims is None:
            raise IdPError("the access token is not a JWT: set token_api.userinfo_url to learn who logged in")
        source, found = "the access token", token_claims
        claims = {name: value for name, value in token_claims.items() if name not in _BOOKKEEPING}
    user_id = found.get(config.user_id_claim)
    if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
        raise IdPError(f'{source} has no "{config.user_id_claim}" claim (token_api.user_id_claim)')
    return str(user_id), claims


class TokenAPIClient:
    """The token API as seen from this BFF: a `bff.login.LoginSource` that keeps no state."""

    def __init__(
        self, http: httpx.AsyncClient, config: TokenAPISettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.refresh_skew: float = config.refresh_skew
        self.timeout: float = config.timeout
        self._http = http
        self._clock = clock

    async def login(self, body: bytes, *, client_ip: str | None) -> LoginResult:
        """Forward the SPA's credentials. Raises InvalidCredentials, TooManyRequests,
        ProviderUnavailable (unreachable or 5xx) or IdPError."""
        request = build_login_request(self.config, body, client_ip=client_ip)
        tokens = parse_login_response(
            await self._send(request), self.config, now=self._clock(), retry_after=self.config.retry_after
        )
        userinfo = None
        userinfo_request = build_userinfo_request(self.config, tokens.access_token)
        if userinfo_request is not None:
            userinfo = parse_userinfo_response(await self._send(userinfo_request), retry_after=self.config.retry_after)
        sub, claims = login_claims(self.config, tokens, userinfo)
        return LoginResult(sub=sub, provider_sid=None, claims=claims, tokens=tokens)

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        """Raises RefreshRejected when the token is dead, ProviderUnavailable when unreachable, 429 or 5xx."""
        response = await self._send(build_refresh_request(self.config, tokens.refresh_token or ""))
        return parse_refresh_response(response, self.config, now=self._clock(), retry_after=self.config.retry_after)

    async def end(self, tokens: TokenSet) -> str | None:
        """Blacklist the refresh token at `logout_url`, best effort. Returns None: a token API has
        no end-session page to send the browser to."""
        request = build_logout_request(self.config, tokens)
        if request is None:
            return None
        try:
            response = await self._send(request)
        except Exception as exc:  # best effort: the session ends whatever the API does
            reason = exc.detail if isinstance(exc, ProviderUnavailable) else type(exc).__name__
            logger.warning("Token-API logout failed. error: '%s'", reason)
            return None
        if not response.is_success:
            logger.warning("Token-API logout failed. status: %d", response.status_code)
        return None

    async def ready(self) -> None:
        """Any answer below 500 to `OPTIONS refresh_url` means the API is up."""
        request = httpx.Request("OPTIONS", self.config.refresh_url)
        status = (await self._send(request)).status_code
        if status >= 500:
            raise ProviderUnavailable(
                f"token API at {request.url.host} answered {status}", retry_after=self.config.retry_after, status=status
            )

    async def _send(self, request: httpx.Request) -> httpx.Response:
        return await send_to_source(self._http, request, who="token API", retry_after=self.config.retry_after)


def _with_token(method: str, url: str, placement: TokenPlacement, param: str, token: str) -> httpx.Request:
    headers = {"accept": _JSON}
    if placement == "bearer":
        headers["authorization"] = f"Bearer {token}"
        return httpx.Request(method, url, headers=headers)
    if placement == "form":
        return httpx.Request(method, url, data={param: token}, headers=headers)
    return httpx.Request(method, url, json={param: token}, headers=headers)


def _token_answer(
    response: httpx.Response, config: TokenAPISettings, what: str, *, now: float, retry_after: float
) -> tuple[dict[str, Any], TokenSet]:
    """The JSON object of a 200/201 login or refresh answer, and its access token and expiry."""
    status = response.status_code
    if status >= 500:
        raise ProviderUnavailable(
            f"token_api.{what}_url answered {status}", retry_after=_retry_after_or(response, retry_after), status=status
        )
    if status not in (200, 201):
        raise IdPError(f"token_api.{what}_url answered {status}, expected 200 or 201", status=status)
    data = _json_object(response)
    if data is None:
        raise IdPError(f"token_api.{what}_url answered {status} without a JSON object", status=status)
    access_token = _string(field(data, config.access_token_field))
    if access_token is None:
        raise IdPError(
            f'the {what} answer has no "{config.access_token_field}" (token_api.access_token_field)', status=status
        )
    expires_in = field(data, config.expires_in_field)
    if isinstance(expires_in, str) and expires_in.isascii() and expires_in.isdigit():
        expires_in = int(expires_in)  # some APIs send a string
    expires_at: float | None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and math.isfinite(expires_in):
        expires_at = now + float(expires_in)
    else:
        expires_at = jwt_exp(access_token)
    return data, TokenSet(access_token=access_token, expires_at=expires_at)


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _retry_after_of(response: httpx.Response) -> int | None:
    """The API's `Retry-After` in seconds. RFC 9110 §10.2.3 also allows an HTTP-date, which the
    throttles of DRF and Flask-Limiter do not send by default: it is ignored."""
    value = response.headers.get("retry-after", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _retry_after_or(response: httpx.Response, default: float) -> float:
    seconds = _retry_after_of(response)
    return default if seconds is None else float(seconds)
