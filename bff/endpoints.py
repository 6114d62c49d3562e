"""The BFF's own endpoints under `settings.prefix` (default `/bff`): login, callback, user,
logout, the user's sessions and back-channel logout. Thin: protocol steps live in `oidc`,
sessions in `session`, refreshing in `tokens`; errors are `BffError`s rendered by the app.

Login keeps nothing on the server until it succeeds: `state`, `nonce`, the PKCE verifier and
`returnTo` are sealed into a short-lived `SameSite=Lax` cookie named after a hash of `state`, so
several tabs can log in at once. A `state` is accepted once (a marker in the store).
Every state-changing endpoint needs the anti-forgery header, except back-channel logout, which
the provider calls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bff.config import Settings
from bff.cookies import CookieCodec
from bff.csrf import AntiForgery
from bff.errors import BadRequest, BffError, IdPError, LoginFailed, NotAuthenticated, NotFound
from bff.idtokens import LOGOUT_TOKEN_MAX_AGE
from bff.metrics import Metrics
from bff.oidc import LoginRequest, OIDCClient, new_login_request
from bff.session import Session, SessionManager
from bff.stores import Store
from bff.tokenset import TokenSet

__all__ = ["Parts", "build_endpoint_routes", "check_return_to"]

log = logging.getLogger("bff.endpoints")

LOGIN_PURPOSE = "login"
MAX_BACKCHANNEL_BODY = 64 * 1024
# ID-token claims that mean nothing to the SPA.
_HIDDEN_CLAIMS = frozenset({"nonce", "at_hash", "c_hash", "s_hash"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Parts(Protocol):
    """What the endpoints need from the app (`BffApp` has these attributes)."""

    settings: Settings
    metrics: Metrics
    store: Store
    cookies: CookieCodec
    sessions: SessionManager
    oidc: OIDCClient | None


def check_return_to(value: str | None) -> str:
    """A local path to send the browser to after login; raise BadRequest for anything that could
    leave this origin (`//x`, `https://x`, `/\\x`, `javascript:`, control characters)."""
    if not value:
        return "/"
    parts = urlsplit(value)
    if (
        len(value) > 2048
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value  # browsers read a backslash as a slash: /\evil.example is //evil.example
        or _CONTROL.search(value)  # browsers drop tabs and newlines: /\t/evil.example
        or parts.scheme
        or parts.netloc
    ):
        raise BadRequest('parameter "returnTo" must be a local path such as /app')
    return quote(value, safe="/?&=#%:@!$'()*+,;~-._[]")  # a Location header is ASCII


def login_cookie_name(cookies: CookieCodec, state: str) -> str:
    return f"{cookies.session_cookie_name}-login-{hashlib.sha256(state.encode()).hexdigest()[:12]}"


class Endpoints:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.prefix = parts.settings.prefix
        self.sessions = parts.sessions
        self.cookies = parts.cookies
        self.anti_forgery = AntiForgery(parts.settings)
        self.login_timeout = parts.settings.session.login_timeout

    @property
    def oidc(self) -> OIDCClient:
        if self.parts.oidc is None:
            raise NotFound("login needs an [oidc] section in the configuration")
        return self.parts.oidc

    # -- login --------------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        return_to = check_return_to(request.query_params.get("returnTo"))
        login = new_login_request(return_to)
        url = await self.oidc.authorization_url(login)
        response = _redirect(url)
        sealed = self.cookies.seal(login.to_dict(), purpose=LOGIN_PURPOSE)
        name = login_cookie_name(self.cookies, login.state)
        # Lax: the provider's redirect back to the callback is a cross-site top-level navigation.
        response.headers.append(
            "set-cookie", self.cookies.set_cookie(name, sealed, max_age=int(self.login_timeout), same_site="lax")
        )
        return response

    async def callback(self, request: Request) -> Response:
        params = request.query_params
        state = params.get("state") or ""
        clear = ("set-cookie", self.cookies.clear_cookie(login_cookie_name(self.cookies, state), same_site="lax"))
        try:
            login = await self._finish_login_checks(request, state)
            tokens, claims = await self._exchange(params.get("code") or "", login)
        except BffError as exc:
            self.parts.metrics.logged_in("failure")
            exc.headers.append(clear)
            raise
        session = await self.sessions.create(
            sub=str(claims["sub"]),
            sid=claims.get("sid") if isinstance(claims.get("sid"), str) else None,
            claims={key: value for key, value in claims.items() if key not in _HIDDEN_CLAIMS},
            tokens=tokens,
            user_agent=request.headers.get("user-agent", ""),
        )
        self.parts.metrics.logged_in("success")
        log.info("Login. sub: '%s', sid: '%s'", session.sub, session.sid)
        response = _redirect(login.return_to)
        response.headers.append("set-cookie", self.sessions.set_cookie_header(session))
        response.headers.append(*clear)
        return response

    async def _finish_login_checks(self, request: Request, state: str) -> LoginRequest:
        params = request.query_params
        if "error" in params:
            error = params["error"][:100]
            description = params.get("error_description", "")[:300]
            raise LoginFailed(f"the provider answered error {error!r}: {description}".rstrip(": "))
        if not state:
            raise LoginFailed('callback parameter "state" is missing')
        sealed = self.cookies.cookie_value(request.headers.raw, login_cookie_name(self.cookies, state))
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
        issuer = params.get("iss")
        # RFC 9207: when sent, `iss` must be our provider (mix-up attacks).
        if issuer is not None and issuer != provider.issuer:
            raise LoginFailed(f'callback parameter "iss" is {issuer[:200]!r}, expected {provider.issuer!r}')
        if issuer is None and provider.authorization_response_iss_parameter_supported:
            raise LoginFailed('callback parameter "iss" is missing')
        marker = "login-state:" + hashlib.sha256(state.encode()).hexdigest()
        if not await self.parts.store.add_if_absent(marker, b"1", self.login_timeout):
            raise LoginFailed('callback parameter "state" was already used')
        return login

    async def _exchange(self, code: str, login: LoginRequest) -> tuple[TokenSet, dict[str, Any]]:
        if not code:
            raise LoginFailed('callback parameter "code" is missing')
        try:
            return await self.oidc.exchange_code(code, login)
        except IdPError as exc:
            if exc.error == "invalid_grant":
                raise LoginFailed("the provider refused the authorization code (expired or used)") from None
            raise

    # -- the signed-in user ---------------------------------------------------------------------

    async def user(self, request: Request) -> Response:
        session = await self._session(request)
        body = {
            "sub": session.sub,
            "sid": session.key,
            "claims": dict(session.claims),
            "createdAt": session.created_at,
            "expiresAt": min(session.expires_at, session.last_used_at + self.settings.session.idle_timeout),
            "accessTokenExpiresAt": session.tokens.expires_at,
            "logoutUrl": f"{self.prefix}/logout?sid={session.key}",
        }
        return _json(body, headers={"vary": "Cookie"})

    async def logout(self, request: Request) -> Response:
        """POST (anti-forgery header) answers JSON; GET needs `?sid=` (the session's public key,
        which a cross-site page cannot know) and redirects to the provider's end-session page."""
        if request.method == "POST":
            self.anti_forgery.check(request.headers.raw)
        session = await self.sessions.load_from_headers(request.headers.raw)
        if request.method == "GET" and session is not None and request.query_params.get("sid") != session.key:
            raise BadRequest('parameter "sid" must be the session\'s "sid" from the user endpoint')
        url = await self._end_session(session) if session is not None else None
        clear = self.sessions.clear_cookie_header()
        if request.method == "GET":
            response = _redirect(url or self.settings.public_url.rstrip("/") + "/")
        else:
            response = _json({"logoutUrl": url})
        response.headers.append("set-cookie", clear)
        return response

    async def _end_session(self, session: Session) -> str | None:
        refresh_token = session.tokens.refresh_token
        if refresh_token and self.parts.oidc is not None:
            try:
                await self.parts.oidc.revoke(refresh_token, "refresh_token")
            except BffError as exc:  # the local logout goes ahead; the grant ends at its expiry
                log.warning("Revocation failed at logout: %s. sub: '%s'", exc.detail, session.sub)
        await self.sessions.destroy(session)
        log.info("Logout. sub: '%s', sid: '%s'", session.sub, session.sid)
        if self.parts.oidc is None:
            return None
        hint = session.tokens.id_token if self.parts.oidc.config.logout_id_token_hint else None
        try:
            return await self.parts.oidc.end_session_url(hint)
        except BffError:
            return None

    # -- the user's sessions (devices) --------------------------------------------------------

    async def list_sessions(self, request: Request) -> Response:
        session = await self._session(request)
        rows = [
            {
                "id": info.key,
                "createdAt": info.created_at,
                "lastUsedAt": info.last_used_at,
                "expiresAt": info.expires_at,
                "userAgent": info.user_agent,
                "current": info.key == session.key,
            }
            for info in await self.sessions.list_for(session.sub)
        ]
        return _json({"sessions": rows}, headers={"vary": "Cookie"})

    async def delete_session(self, request: Request) -> Response:
        self.anti_forgery.check(request.headers.raw)
        session = await self._session(request)
        target = request.path_params["id"]
        if not await self.sessions.destroy_key(target, sub=session.sub):  # only the user's own
            raise NotFound("no such session of this user")
        log.info("Session ended by its user. sub: '%s', session: '%s'", session.sub, target[:12])
        response = Response(status_code=204, headers={"cache-control": "no-store"})
        if target == session.key:
            response.headers.append("set-cookie", self.sessions.clear_cookie_header())
        return response

    async def revoke_others(self, request: Request) -> Response:
        self.anti_forgery.check(request.headers.raw)
        session = await self._session(request)
        ended = 0
        for info in await self.sessions.list_for(session.sub):
            if info.key != session.key and await self.sessions.destroy_key(info.key, sub=session.sub):
                ended += 1
        log.info("Other sessions ended by their user. sub: '%s', count: %d", session.sub, ended)
        return _json({"ended": ended})

    # -- back-channel logout ------------------------------------------------------------------

    async def backchannel_logout(self, request: Request) -> Response:
        """OpenID Connect Back-Channel Logout 1.0 §2.5: 200 when done, 400 `invalid_request`."""
        try:
            token = await self._logout_token(request)
            claims = await self.oidc.validate_logout_token(token)
        except BadRequest as exc:
            log.warning("Back-channel logout refused: %s", exc.detail)
            return _json({"error": "invalid_request", "error_description": exc.detail}, status=400)
        jti = hashlib.sha256(f"{claims['iss']}\x00{claims['jti']}".encode()).hexdigest()
        ttl = LOGOUT_TOKEN_MAX_AGE + 2 * self.oidc.config.leeway
        if not await self.parts.store.add_if_absent(f"logout-jti:{jti}", b"1", ttl):
            log.warning("Back-channel logout refused: jti replayed. sub: '%s'", claims.get("sub"))
            return _json({"error": "invalid_request", "error_description": "logout token was already used"}, status=400)
        sub, sid = claims.get("sub"), claims.get("sid")
        ended = await self.sessions.destroy_where(
            sub=sub if isinstance(sub, str) else None, sid=sid if isinstance(sid, str) else None
        )
        log.info("Back-channel logout. sub: '%s', sid: '%s', sessions: %d", sub, sid, ended)
        return Response(status_code=200, headers={"cache-control": "no-store"})

    @staticmethod
    async def _logout_token(request: Request) -> str:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            raise BadRequest("expected an application/x-www-form-urlencoded body")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BACKCHANNEL_BODY:
                raise BadRequest("body too large")
        values = parse_qs(body.decode("latin-1")).get("logout_token", [])
        if len(values) != 1 or not values[0]:
            raise BadRequest('form parameter "logout_token" is missing')
        return values[0]

    async def _session(self, request: Request) -> Session:
        session = await self.sessions.load_from_headers(request.headers.raw)
        if session is None:
            raise NotAuthenticated("not signed in")
        return session


def build_endpoint_routes(parts: Parts) -> list[BaseRoute]:
    endpoints = Endpoints(parts)
    prefix = parts.settings.prefix
    return [
        Route(f"{prefix}/login", endpoints.login, methods=["GET"]),
        Route(f"{prefix}/callback", endpoints.callback, methods=["GET"]),
        Route(f"{prefix}/user", endpoints.user, methods=["GET"]),
        Route(f"{prefix}/logout", endpoints.logout, methods=["GET", "POST"]),
        Route(f"{prefix}/sessions", endpoints.list_sessions, methods=["GET"]),
        Route(f"{prefix}/sessions/revoke-others", endpoints.revoke_others, methods=["POST"]),
        Route(f"{prefix}/sessions/{{id:str}}", endpoints.delete_session, methods=["DELETE"]),
        Route(f"{prefix}/backchannel-logout", endpoints.backchannel_logout, methods=["POST"]),
    ]


def _json(body: Mapping[str, Any], *, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status_code=status, media_type="application/json")
    response.headers["cache-control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _redirect(url: str) -> Response:
    return Response(status_code=302, headers={"location": url, "cache-control": "no-store"})
