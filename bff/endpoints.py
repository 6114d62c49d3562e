"""The BFF's own endpoints that every login source shares, under `settings.prefix` (default
`/bff`): the signed-in user, logout, and the user's sessions (devices, server mode only). Also
the common tail of every login (`start_session`) and the response helpers the login sources'
endpoints use. Thin: sessions live in `Sessions`, ending a grant is the `LoginSource`'s
business; errors are `BffError`s rendered by the app.

Every state-changing endpoint needs the anti-forgery header; a `GET` logout link proves itself
with the session's public handle instead, which a cross-site page cannot know.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bff.config import Settings
from bff.cookies import CookieCodec
from bff.csrf import AntiForgery
from bff.devices import describe_device
from bff.errors import BadRequest, NotAuthenticated, NotAvailable, NotFound, PayloadTooLarge
from bff.login import LoginResult, LoginSource
from bff.metrics import Metrics
from bff.request_ids import note_session
from bff.session import Devices, Session, Sessions
from bff.stores import Store

__all__ = [
    "Endpoints",
    "Parts",
    "build_endpoint_routes",
    "json_response",
    "media_type",
    "read_body",
    "redirect",
    "start_session",
    "user_body",
]

log = logging.getLogger("bff.endpoints")


class Parts(Protocol):
    """What the endpoints need from the app (`BffApp` has these attributes)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def store(self) -> Store:
        """One-time markers (a used login state, a logout token's `jti`)."""

    @property
    def cookies(self) -> CookieCodec: ...
    @property
    def sessions(self) -> Sessions: ...
    @property
    def devices(self) -> Devices | None:
        """The sessions as devices; None in cookie mode, where they cannot be listed."""

    @property
    def source(self) -> LoginSource | None: ...


async def start_session(parts: Parts, login: LoginResult, request: Request) -> tuple[Session, list[str]]:
    """The tail of every successful login: a new session, counted and logged; it and its `Set-Cookie` values."""
    session, cookies = await parts.sessions.create(login, request.headers.raw)
    parts.metrics.logged_in("success")
    note_session(session.key, session.sub)
    log.info("Login. sub: '%s', sid: '%s'", session.sub, session.sid)
    return session, cookies


def user_body(session: Session, settings: Settings) -> dict[str, Any]:
    """What `GET /bff/user` (and a token-API login) answers about the signed-in user: claims and
    session facts, never a token."""
    return {
        "sub": session.sub,
        "sid": session.key,
        "claims": dict(session.claims),
        "createdAt": session.created_at,
        "expiresAt": min(session.expires_at, session.last_used_at + settings.session.idle_timeout),
        "accessTokenExpiresAt": session.tokens.expires_at,
        "logoutUrl": f"{settings.prefix}/logout?sid={session.key}",
    }


def media_type(request: Request) -> str:
    """The request's `Content-Type` without its parameters, lowercased (`application/json`)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body; `PayloadTooLarge` as soon as it passes `limit` bytes (the rest is
    never read)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    return body


class Endpoints:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.prefix = parts.settings.prefix
        self.sessions = parts.sessions
        self.anti_forgery = AntiForgery(parts.settings)

    # -- the signed-in user ---------------------------------------------------------------------

    async def user(self, request: Request) -> Response:
        session = await self._session(request)
        return json_response(
            user_body(session, self.settings),
            headers={"vary": "Cookie"},
            cookies=self.sessions.cookies_for(session, loaded=session),
        )

    # -- logout ---------------------------------------------------------------------------------

    async def logout_json(self, request: Request) -> Response:
        """POST with the anti-forgery header: `{"logoutUrl": ...}`, the provider's end-session URL."""
        self.anti_forgery.check(request.headers.raw)
        session = await self.sessions.load(request.headers.raw)
        url, cleared = await self._end_session(session)
        return json_response({"logoutUrl": url}, cookies=cleared)

    async def logout_link(self, request: Request) -> Response:
        """GET with `?sid=` (the session's public handle): redirects to the provider's end-session page."""
        session = await self.sessions.load(request.headers.raw)
        if session is not None and request.query_params.get("sid") != session.key:
            raise BadRequest('parameter "sid" must be the session\'s "sid" from the user endpoint')
        url, cleared = await self._end_session(session)
        return redirect(url or self.settings.public_url.rstrip("/") + "/", cookies=cleared)

    async def _end_session(self, session: Session | None) -> tuple[str | None, list[str]]:
        """End `session` here and its grant at the source; where to send the browser, and the
        `Set-Cookie` values that clear it."""
        if session is None:
            self.parts.metrics.logged_out("no_session")
            return None, self.sessions.clear_cookies()
        note_session(session.key, session.sub)
        source = self.parts.source
        url = await source.end(session.tokens) if source is not None else None
        cleared = await self.sessions.destroy(session)
        self.parts.metrics.logged_out("success")
        log.info("Logout. sub: '%s', sid: '%s'", session.sub, session.sid)
        return url, cleared

    # -- the user's sessions (devices) --------------------------------------------------------

    async def list_sessions(self, request: Request) -> Response:
        devices = self._devices()
        session = await self._session(request)
        rows = [
            {
                "id": info.key,
                "createdAt": info.created_at,
                "lastUsedAt": info.last_used_at,
                "expiresAt": info.expires_at,
                "userAgent": info.user_agent,
                "device": describe_device(info.user_agent),
                "current": info.key == session.key,
            }
            for info in await devices.list_for(session.sub)
        ]
        return json_response({"sessions": rows}, headers={"vary": "Cookie"})

    async def delete_session(self, request: Request) -> Response:
        devices = self._devices()
        self.anti_forgery.check(request.headers.raw)
        session = await self._session(request)
        target = request.path_params["id"]
        if not await devices.destroy_own(target, sub=session.sub):  # only the user's own
            raise NotFound("no such session of this user")
        log.info("Session ended by its user. sub: '%s', session: '%s'", session.sub, target[:12])
        response = Response(status_code=204, headers={"cache-control": "no-store"})
        if target == session.key:
            for cookie in self.sessions.clear_cookies(session):
                response.headers.append("set-cookie", cookie)
        return response

    async def revoke_others(self, request: Request) -> Response:
        devices = self._devices()
        self.anti_forgery.check(request.headers.raw)
        session = await self._session(request)
        ended = 0
        for info in await devices.list_for(session.sub):
            if info.key != session.key and await devices.destroy_own(info.key, sub=session.sub):
                ended += 1
        log.info("Other sessions ended by their user. sub: '%s', count: %d", session.sub, ended)
        return json_response({"ended": ended})

    def _devices(self) -> Devices:
        if self.parts.devices is None:
            raise NotAvailable('the sessions API needs token_storage = "server": cookie sessions cannot be listed')
        return self.parts.devices

    async def _session(self, request: Request) -> Session:
        session = await self.sessions.load(request.headers.raw)
        if session is None:
            raise NotAuthenticated("not signed in")
        note_session(session.key, session.sub)
        return session


def build_endpoint_routes(parts: Parts) -> list[BaseRoute]:
    endpoints = Endpoints(parts)
    prefix = parts.settings.prefix
    return [
        Route(f"{prefix}/user", endpoints.user, methods=["GET"]),
        Route(f"{prefix}/logout", endpoints.logout_json, methods=["POST"]),
        Route(f"{prefix}/logout", endpoints.logout_link, methods=["GET"]),
        Route(f"{prefix}/sessions", endpoints.list_sessions, methods=["GET"]),
        Route(f"{prefix}/sessions/revoke-others", endpoints.revoke_others, methods=["POST"]),
        Route(f"{prefix}/sessions/{{id:str}}", endpoints.delete_session, methods=["DELETE"]),
    ]


def json_response(
    body: Mapping[str, Any],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    cookies: Sequence[str] = (),
) -> Response:
    response = Response(json.dumps(body), status_code=status, media_type="application/json")
    response.headers["cache-control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    return response


def redirect(url: str, *, cookies: Sequence[str] = ()) -> Response:
    response = Response(status_code=302, headers={"location": url, "cache-control": "no-store"})
    for cookie in cookies:
        response.headers.append("set-cookie", cookie)
    return response
