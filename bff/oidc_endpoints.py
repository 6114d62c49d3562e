"""The OpenID Connect endpoints: `GET /bff/login`, `GET /bff/callback`, `POST /bff/backchannel-logout`,
`GET /bff/jwks` (the client's public keys, with `private_key_jwt`).

Thin: the protocol steps live in `oidc`, the session in `Sessions`, the common tail of a login
in `endpoints.start_session`; errors are `BffError`s rendered by the app.

Login keeps nothing on the server until it succeeds: `state`, `nonce`, the PKCE verifier and
`returnTo` are sealed into a short-lived `SameSite=Lax` cookie named after a hash of `state`, so
several tabs can log in at once. A `state` is accepted once (a marker in the store).
Back-channel logout needs no anti-forgery header: the provider calls it.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bff.client_keys import public_jwks
from bff.endpoints import Parts, json_response, media_type, read_body, redirect, start_session
from bff.errors import BadRequest, BffError, IdPError, LoginFailed, NotAvailable, PayloadTooLarge
from bff.idtokens import LOGOUT_TOKEN_MAX_AGE
from bff.login import LoginResult, check_return_to, user_claims
from bff.oidc import OIDCClient
from bff.oidc_messages import LoginRequest, check_issuer_parameter, new_login_request

__all__ = [
    "JWKS_MAX_AGE",
    "LOGIN_PURPOSE",
    "MAX_BACKCHANNEL_BODY",
    "OIDCEndpoints",
    "build_oidc_routes",
    "login_cookie_name",
]

log = logging.getLogger("bff.endpoints")

LOGIN_PURPOSE = "login"
MAX_BACKCHANNEL_BODY = 64 * 1024
JWKS_MAX_AGE = 300
# ID-token claims that mean nothing to the SPA.
_HIDDEN_CLAIMS = frozenset({"nonce", "at_hash", "c_hash", "s_hash"})


def login_cookie_name(cookie_name: str, state: str) -> str:
    return f"{cookie_name}-login-{hashlib.sha256(state.encode()).hexdigest()[:12]}"


class OIDCEndpoints:
    def __init__(self, parts: Parts, oidc: OIDCClient) -> None:
        self.parts = parts
        self.oidc = oidc
        self.cookies = parts.cookies
        self.login_timeout = parts.settings.session.login_timeout

    # -- login --------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        return_to = check_return_to(request.query_params.get("returnTo"))
        login = new_login_request(return_to, dpop=self.oidc.config.dpop)
        url = await self.oidc.authorization_url(login)
        response = redirect(url)
        sealed = self.cookies.seal(login.to_dict(), purpose=LOGIN_PURPOSE)
        name = login_cookie_name(self.cookies.session_cookie_name, login.state)
        # Lax: the provider's redirect back to the callback is a cross-site top-level navigation.
        response.headers.append(
            "set-cookie", self.cookies.set_cookie(name, sealed, max_age=int(self.login_timeout), same_site="lax")
        )
        return response

    async def callback(self, request: Request) -> Response:
        params = request.query_params
        state = params.get("state") or ""
        name = login_cookie_name(self.cookies.session_cookie_name, state)
        clear = self.cookies.clear_cookie(name, same_site="lax")
        try:
            login = await self._finish_login_checks(request, state)
            tokens, claims = await self._exchange(params.get("code") or "", login)
            result = LoginResult(
                sub=str(claims["sub"]),
                provider_sid=claims.get("sid") if isinstance(claims.get("sid"), str) else None,
                claims=user_claims(claims, hidden=_HIDDEN_CLAIMS, keep=self.parts.settings.session.keep_claims),
                tokens=tokens,
            )
            _, cookies = await start_session(self.parts, result, request)
        except BffError as exc:
            self.parts.metrics.logged_in("failure")
            exc.headers.append(("set-cookie", clear))
            raise
        response = redirect(login.return_to)
        for cookie in [*cookies, clear]:
            response.headers.append("set-cookie", cookie)
        return response

    async def _finish_login_checks(self, request: Request, state: str) -> LoginRequest:
        params = request.query_params
        if "error" in params:
            error = params["error"][:100]
            description = params.get("error_description", "")[:300]
            raise LoginFailed(f"the provider answered error {error!r}: {description}".rstrip(": "))
        if not state:
            raise LoginFailed('callback parameter "state" is missing')
        name = login_cookie_name(self.cookies.session_cookie_name, state)
        sealed = self.cookies.cookie_value(request.headers.raw, name)
        data = self.cookies.unseal(sealed or "", purpose=LOGIN_PURPOSE, max_age=self.login_timeout)
        if data is None:
            raise LoginFailed('callback parameter "state" does not match a login started in this browser')
        try:
            login = LoginRequest.from_dict(data)
        except (KeyError, TypeError):
            raise LoginFailed("login state is malformed") from None
        if login.state != state:
            raise LoginFailed('callback parameter "state" does not match')
        provider = await self.oidc.discover()
        check_issuer_parameter(params.get("iss"), provider, profile=self.oidc.config.profile)
        marker = "login-state:" + hashlib.sha256(state.encode()).hexdigest()
        if not await self.parts.store.add_if_absent(marker, b"1", self.login_timeout):
            raise LoginFailed('callback parameter "state" was already used')
        return login

    async def _exchange(self, code: str, login: LoginRequest) -> tuple[Any, dict[str, Any]]:
        if not code:
            raise LoginFailed('callback parameter "code" is missing')
        try:
            return await self.oidc.exchange_code(code, login)
        except IdPError as exc:
            if exc.error == "invalid_grant":
                raise LoginFailed("the provider refused the authorization code (expired or used)") from None
            raise

    # -- the client's public keys -------------------------------------------------------------

    async def jwks(self, _request: Request) -> Response:
        """The public keys of `private_key_jwt`, for a provider registered with `jwks_uri`."""
        if not self.oidc.client_keys:
            raise NotAvailable("no client keys: oidc.token_endpoint_auth_method is not 'private_key_jwt'")
        response = json_response(public_jwks(self.oidc.client_keys))
        # Short: a provider that refetches on an unknown `kid` sees a rotation within minutes.
        response.headers["cache-control"] = f"max-age={JWKS_MAX_AGE}"
        return response

    # -- back-channel logout ------------------------------------------------------------------

    async def backchannel_logout(self, request: Request) -> Response:
        """OpenID Connect Back-Channel Logout 1.0 §2.5: 200 when done, 400 `invalid_request`."""
        try:
            token = await _logout_token(request)
            claims = await self.oidc.validate_logout_token(token)
        except BadRequest as exc:
            self.parts.metrics.logged_out("backchannel_refused")
            log.warning("Back-channel logout refused: %s", exc.detail)
            return json_response({"error": "invalid_request", "error_description": exc.detail}, status=400)
        jti = hashlib.sha256(f"{claims['iss']}\x00{claims['jti']}".encode()).hexdigest()
        ttl = LOGOUT_TOKEN_MAX_AGE + 2 * self.oidc.config.leeway
        if not await self.parts.store.add_if_absent(f"logout-jti:{jti}", b"1", ttl):
            self.parts.metrics.logged_out("backchannel_refused")
            log.warning("Back-channel logout refused: jti replayed. sub: '%s'", claims.get("sub"))
            return json_response(
                {"error": "invalid_request", "error_description": "logout token was already used"}, status=400
            )
        sub, sid = claims.get("sub"), claims.get("sid")
        ended = await self.parts.sessions.destroy_where(
            sub=sub if isinstance(sub, str) else None, sid=sid if isinstance(sid, str) else None
        )
        self.parts.metrics.logged_out("backchannel")
        log.info("Back-channel logout. sub: '%s', sid: '%s', sessions: %d", sub, sid, ended)
        return Response(status_code=200, headers={"cache-control": "no-store"})


async def _logout_token(request: Request) -> str:
    if media_type(request) != "application/x-www-form-urlencoded":
        raise BadRequest("expected an application/x-www-form-urlencoded body")
    try:
        body = await read_body(request, MAX_BACKCHANNEL_BODY)
    except PayloadTooLarge:
        raise BadRequest("body too large") from None  # §2.8: every refusal is a 400
    values = parse_qs(body.decode("latin-1")).get("logout_token", [])
    if len(values) != 1 or not values[0]:
        raise BadRequest('form parameter "logout_token" is missing')
    return values[0]


def build_oidc_routes(parts: Parts, oidc: OIDCClient) -> list[BaseRoute]:
    endpoints = OIDCEndpoints(parts, oidc)
    prefix = parts.settings.prefix
    return [
        Route(f"{prefix}/login", endpoints.login, methods=["GET"]),
        Route(f"{prefix}/callback", endpoints.callback, methods=["GET"]),
        Route(f"{prefix}/backchannel-logout", endpoints.backchannel_logout, methods=["POST"]),
        Route(f"{prefix}/jwks", endpoints.jwks, methods=["GET"]),
    ]
