"""create_app: builds the parts from Settings, wires them in request order, owns their lifespan.

Request flow: `BffApp` → `AccessLog` (request id, access line) → `ProxyApp` (a configured route?
the raw-ASGI hot path, with the token manager as its bearer source) → otherwise the Starlette app
of the BFF's own endpoints, health checks and the optional static SPA. Only `cli` and `demo` import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from bff.access import AccessLog
from bff.auth_request import build_auth_request_routes
from bff.config import Settings
from bff.cookie_sessions import CookieSessions
from bff.cookies import CookieCodec
from bff.draining import Drain
from bff.endpoints import build_endpoint_routes
from bff.errors import BffError
from bff.health import build_health_routes
from bff.login import LoginSource
from bff.metrics import Metrics
from bff.oidc import OIDCClient
from bff.oidc_endpoints import build_oidc_routes
from bff.proxy import ProxyApp
from bff.server_sessions import ServerSessions
from bff.session import Devices, Sessions
from bff.stores import Store, open_store
from bff.stores.counted import CountedStore
from bff.streams import OpenStreams
from bff.token_api import TokenAPIClient
from bff.token_api_endpoints import build_token_api_routes
from bff.tokens import TokenManager

__all__ = ["DEFAULT_SOURCE_TIMEOUT", "LEASE_MARGIN", "BffApp", "build_login_source", "create_app"]

log = logging.getLogger("bff.app")

DEFAULT_SOURCE_TIMEOUT = 10.0
"""Timeout of the identity-provider client when no login source is configured (nothing calls it then)."""
LEASE_MARGIN = 5.0
"""The refresh lease outlives one call to the login source by this much, so it never lapses
under a live holder."""


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    idp_transport: httpx.AsyncBaseTransport | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    store: Store | None = None,
) -> BffApp:
    """Build the whole BFF. `idp_transport` lets unit tests answer the provider's calls in-process;
    `extra_routes` lets `bff demo` mount its identity provider and API in the same app; `store`
    replaces the one `settings.session_store` names (a test's double; the app opens and closes it)."""
    return BffApp(settings, clock=clock, idp_transport=idp_transport, extra_routes=extra_routes, store=store)


def build_login_source(
    settings: Settings, http: httpx.AsyncClient, *, clock: Callable[[], float] = time.time
) -> LoginSource | None:
    """The configured login source (also what `bff check` reaches), or None without one."""
    if settings.oidc is not None:
        return OIDCClient(http, settings, clock=clock)
    if settings.token_api is not None:
        return TokenAPIClient(http, settings.token_api, clock=clock)
    return None


class BffApp:
    """The ASGI entry point. Attributes are the wired parts, for tests and `bff demo`."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float],
        idp_transport: httpx.AsyncBaseTransport | None,
        extra_routes: Sequence[BaseRoute],
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        backend = store if store is not None else open_store(settings.session_store)
        self.store: Store = CountedStore(backend, self.metrics)
        self.cookies = CookieCodec(settings, clock=clock)
        source_settings = settings.oidc or settings.token_api
        timeout = source_settings.timeout if source_settings is not None else DEFAULT_SOURCE_TIMEOUT
        self._idp_http = httpx.AsyncClient(transport=idp_transport, timeout=timeout, follow_redirects=False)
        # The one place that picks the implementations: who issues tokens, and where sessions live.
        self.source = build_login_source(settings, self._idp_http, clock=clock)
        self.oidc = self.source if isinstance(self.source, OIDCClient) else None
        lease_ttl = timeout + LEASE_MARGIN
        self.sessions: Sessions
        self.devices: Devices | None
        if settings.token_storage == "cookie":
            self.sessions = CookieSessions(
                self.store,
                self.cookies,
                settings.session,
                lease_ttl=lease_ttl,
                keep_id_token=settings.oidc is not None and settings.oidc.logout_id_token_hint,
                clock=clock,
            )
            self.devices = None
        else:
            server_sessions = ServerSessions(
                self.store, self.cookies, settings.session, lease_ttl=lease_ttl, clock=clock
            )
            self.sessions = self.devices = server_sessions
        self.tokens = TokenManager(
            self.sessions,
            self.source,
            self.metrics,
            client_credentials=self.oidc.client_credentials if self.oidc is not None else None,
            clock=clock,
        )
        routes: list[BaseRoute] = [
            *build_health_routes(self),
            *build_endpoint_routes(self),
            *build_auth_request_routes(self),
        ]
        if self.oidc is not None:
            routes.extend(build_oidc_routes(self, self.oidc))
        if isinstance(self.source, TokenAPIClient):
            routes.extend(build_token_api_routes(self, self.source))
        routes.extend(extra_routes)
        if settings.static_dir:
            routes.append(Mount("/", app=StaticFiles(directory=settings.static_dir, html=True), name="static"))
        self.control = Starlette(
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers={BffError: _render_error},
        )
        self.streams = OpenStreams(self.metrics)
        self.proxy = ProxyApp(
            settings, bearer_source=self.tokens, fallback=self.control, metrics=self.metrics, streams=self.streams
        )
        self._watcher: asyncio.Task[None] | None = None
        self.drain = Drain(self.streams)
        self.drain_on_signals = False
        """`bff serve` sets it: SIGTERM first ends the streams and turns `/readyz` 503 (`bff.draining`)."""
        self.warm_on_start = False
        """`bff serve` sets it: each worker asks the login source once at start (`ready()`: OIDC
        discovery), so that its first login or refresh does not wait for discovery too."""
        self._warming: asyncio.Task[None] | None = None
        # The BFF's own endpoints are named in the access log by their route's path.
        paths: dict[object, str] = {route.endpoint: route.path for route in routes if isinstance(route, Route)}
        self.access_log = AccessLog(self.proxy, lambda scope: paths.get(scope.get("endpoint")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.control(scope, receive, send)
        else:
            await self.access_log(scope, receive, send)

    async def start(self) -> None:
        """Open the store and the upstream pools, start watching the sessions of open streams
        (the lifespan does; tests without a server too)."""
        await self.store.open()
        await self.proxy.start()
        self._watcher = asyncio.ensure_future(self.streams.watch(self.sessions))
        if self.drain_on_signals:
            self.drain.install()
        if self.warm_on_start and self.source is not None:
            self._warming = asyncio.ensure_future(self._warm(self.source))

    async def _warm(self, source: LoginSource) -> None:
        try:
            await source.ready()
        except BffError as exc:  # a provider down at start: the first request that needs it asks again
            log.warning("Login source not ready at start: %s", exc.detail)

    @property
    def draining(self) -> bool:
        """Shutting down: `/readyz` answers 503."""
        return self.drain.draining

    async def stop(self) -> None:
        self.drain.uninstall()
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.gather(self._warming, return_exceptions=True)
            self._warming = None
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        await self.proxy.close()
        await self._idp_http.aclose()
        await self.store.close()

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()


async def _render_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BffError)
    response = Response(exc.body(), status_code=exc.status_code)
    response.raw_headers = exc.raw_headers()
    return response
