"""ProxyApp: the raw-ASGI hot path from a configured route to its upstream.

It owns the choice of route (the longest matching path prefix, after the path is normalised),
the anti-forgery check, the bearer-token hook with one replay after a 401, and the exchange with
the upstream over the route's `UpstreamPool` (`bff.upstream_pool`). Path normalisation lives in
`bff.paths`, each route's prepared state (matching, forwarded path, filters, pools) in
`bff.routes`, reading the browser's body and noticing its disconnect in `bff.request_body`,
header rules in `bff.headers`, the checks in `bff.csrf`, streaming the answer back in `bff.responses`, WebSocket
relaying in `bff.websocket`, the registry of open streams in `bff.streams`; sessions and
tokens are the bearer source's business. Paths no route claims go to `fallback`.

No Starlette `Request`/`Response` here: each request is one pass over its headers, one upstream
exchange and the ASGI messages of the response. Upstream failures become JSON errors naming the
route (502 `upstream_unavailable`, 504 `upstream_timeout`); once the response has started, a
failing upstream aborts the browser's connection rather than faking a clean end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from starlette.types import ASGIApp, Receive, Scope, Send
from yarl import URL

from bff import request_ids, websocket
from bff.config import Settings
from bff.csrf import AntiForgery
from bff.errors import (
    BadRequest,
    BffError,
    HeadersTooLarge,
    PayloadTooLarge,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from bff.http1 import Answer, UpstreamError
from bff.metrics import Metrics
from bff.paths import normalise_path
from bff.request_body import ClientGone, RequestBody, read_up_to
from bff.responses import UpstreamAborted, respond
from bff.routes import ProxyRoute
from bff.streams import OpenStreams
from bff.tokens import Bearer, BearerSource
from bff.upstream_auth import authorized, replacement
from bff.upstream_pool import UpstreamConnectError
from bff.websocket import CLIENT_CLOSED

__all__ = ["ProxyApp"]

logger = logging.getLogger("bff.proxy")


class ProxyApp:
    """ASGI app for the configured routes; everything else goes to `fallback`."""

    def __init__(
        self,
        settings: Settings,
        *,
        bearer_source: BearerSource | None,
        fallback: ASGIApp,
        metrics: Metrics,
        streams: OpenStreams | None = None,
    ) -> None:
        """`streams` (when given) tracks the SSE responses and WebSockets of signed-in sessions."""
        self.settings = settings
        self._streams = streams
        self._bearer = bearer_source
        self._fallback = fallback
        self._metrics = metrics
        self._anti_forgery = AntiForgery(settings)
        self._max_replay = settings.max_replay_body
        self._max_body = settings.max_request_body
        self._max_header_size = settings.max_header_size
        routes = (ProxyRoute(route, settings) for route in settings.routes)
        self._routes = tuple(sorted(routes, key=lambda route: route.prefix_len, reverse=True))

    async def start(self) -> None:
        for route in self._routes:
            route.open()

    async def close(self) -> None:
        for route in self._routes:
            if route.pool is not None:
                await route.pool.close()
                route.pool = None
            if route.session is not None:
                await route.session.close()
                route.session = None

    def connections_in_use(self) -> dict[str, int]:
        """Each route's upstream connections carrying a request now, by route path (for tests
        and diagnostics)."""
        return {route.path: route.pool.in_use for route in self._routes if route.pool is not None}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            raw = scope.get("raw_path") or scope["path"].encode()
            try:
                # The HTTP parser puts no bound on headers; this one keeps a bloated request (often
                # a cookie pile-up) from being forwarded anywhere.
                if sum(len(name) + len(value) for name, value in scope["headers"]) > self._max_header_size:
                    raise HeadersTooLarge(f"request headers are larger than {self._max_header_size} bytes")
                path, forward = normalise_path(raw)
            except BffError as exc:
                if kind == "http":
                    await _send_error(send, exc)
                else:
                    await websocket.deny(scope, receive, send, exc)
                return
            for route in self._routes:
                if route.matches(path):
                    if kind == "http":
                        await self._http(route, scope, receive, send, route.forward_path(path, forward))
                        return
                    if route.settings.websocket:
                        await self._websocket(route, scope, receive, send, route.forward_path(path, forward))
                        return
                    break
        await self._fallback(scope, receive, send)

    async def _http(self, route: ProxyRoute, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        access = request_ids.current.get()
        if access is not None:
            access.route = route.path
        status = CLIENT_CLOSED
        body = RequestBody(self._max_body)
        try:
            status = await self._forward(route, scope, receive, send, path, body)
        except BffError as exc:
            status = exc.status_code
            await _send_error(send, exc)
        except ClientGone:
            pass
        except UpstreamAborted as exc:
            status = exc.status
            raise  # uvicorn closes the connection: a truncated body must not look complete
        except Exception:
            if body.response_started:
                raise
            logger.exception("Proxy error. route: %r", route.path)
            status = 500
            await _send_error(send, BffError(f"route {route.path!r}: proxy error"))
        finally:
            self._metrics.proxied(route.path, status)

    async def _forward(
        self, route: ProxyRoute, scope: Scope, receive: Receive, send: Send, path: str, body: RequestBody
    ) -> int:
        """Send the request upstream and stream the answer back; return the status sent.
        Raises `BffError` only before the response has started (`body.response_started`)."""
        headers = scope["headers"]
        if route.settings.csrf:
            self._anti_forgery.check(headers)
        try:
            forwarded, length, chunked = route.request_filter.apply(headers, _client_host(scope))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if length is not None and self._max_body is not None and length > self._max_body:
            raise PayloadTooLarge(f"request body is larger than {self._max_body} bytes")

        bearer: Bearer | None = None
        if route.needs_token and self._bearer is not None:
            bearer = await self._bearer.bearer(route.settings, headers)

        target = route.target(path, scope.get("query_string", b""))
        url = route.url_prefix + target
        method: str = scope["method"]

        data, replayable = await self._outgoing_body(
            receive, body, length, chunked=chunked, with_token=bearer is not None
        )
        if length and not isinstance(data, bytes):  # streamed: the upstream still learns its length
            forwarded.append((b"content-length", b"%d" % length))

        attempt = forwarded if bearer is None else authorized(forwarded, bearer, method, url)
        response = await self._request(route, method, target, attempt, data, body)
        if response.status == 401 and replayable and bearer is not None:
            try:
                fresh = await replacement(self._bearer, route.settings, bearer, url, response.headers)
            except BaseException:
                response.close()
                raise
            if fresh is not None:
                response.release()
                bearer = fresh
                attempt = authorized(forwarded, bearer, method, url)
                response = await self._request(route, method, target, attempt, data, body)
        if bearer is None:
            return await respond(route, response, receive, send, body, ())
        return await respond(
            route, response, receive, send, body, bearer.set_cookies, streams=self._streams, session=bearer.session
        )

    async def _outgoing_body(
        self, receive: Receive, body: RequestBody, length: int | None, *, chunked: bool, with_token: bool
    ) -> tuple[bytes | AsyncIterator[bytes] | None, bool]:
        """The body to send upstream and whether it can be sent again: a replay after a refresh
        needs it whole in memory, so only a request with a token buffers it, up to `max_replay_body`."""
        if not chunked and not length:
            body.done = True
            return None, True
        if with_token and (length is None or length <= self._max_replay):
            buffered, more = await read_up_to(receive, self._max_replay, body)
            if not more and len(buffered) <= self._max_replay:
                return buffered, True
            return body.stream(receive, first=buffered, more=more), False  # over the replay limit: sent once
        return body.stream(receive), False

    async def _request(
        self,
        route: ProxyRoute,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        data: bytes | AsyncIterator[bytes] | None,
        body: RequestBody,
    ) -> Answer:
        pool = route.pool
        if pool is None:
            raise UpstreamUnavailable(f"route {route.path!r}: proxy not started")
        start = time.perf_counter()
        try:
            response = await pool.request(method, target, headers, data)
        except PayloadTooLarge:
            raise
        except TimeoutError:
            raise UpstreamTimeout(f"route {route.path!r}: the upstream did not answer in time") from None
        except (UpstreamError, OSError) as exc:  # OSError: the browser's body stream broke off
            if body.too_large:
                raise PayloadTooLarge(f"request body is larger than {body.limit} bytes") from None
            if body.client_gone:
                raise ClientGone from None
            if isinstance(exc, UpstreamConnectError):
                detail = "cannot connect to the upstream"
            else:
                detail = "the upstream closed the connection before answering"
            logger.warning("Upstream unavailable. route: %r, error: %s", route.path, exc)
            raise UpstreamUnavailable(f"route {route.path!r}: {detail}") from None
        finally:
            elapsed = time.perf_counter() - start
            access = request_ids.current.get()
            if access is not None:
                access.upstream += elapsed
        self._metrics.upstream(route.path, elapsed)
        return response

    async def _websocket(self, route: ProxyRoute, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        access = request_ids.current.get()
        if access is not None:
            access.route = route.path
        headers = scope["headers"]
        try:
            self._anti_forgery.check_websocket(headers)
            bearer: Bearer | None = None
            if route.needs_token and self._bearer is not None:
                bearer = await self._bearer.bearer(route.settings, headers)
        except BffError as exc:
            self._metrics.proxied(route.path, exc.status_code)
            await websocket.deny(scope, receive, send, exc)
            return
        forwarded, _, _ = route.ws_filter.apply(headers, _client_host(scope))
        url = route.upstream_url(path, scope.get("query_string", b""), websocket=True)
        if bearer is not None:
            forwarded = authorized(forwarded, bearer, "GET", url)  # the upgrade is a GET
        if route.session is None:
            self._metrics.proxied(route.path, UpstreamUnavailable.status_code)
            await websocket.deny(scope, receive, send, UpstreamUnavailable(f"route {route.path!r}: proxy not started"))
            return
        status = await websocket.relay(
            scope,
            receive,
            send,
            session=route.session,
            url=URL(url, encoded=True),
            headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in forwarded],
            route_path=route.path,
            set_cookies=bearer.set_cookies if bearer is not None else (),
            streams=self._streams,
            owner=bearer.session if bearer is not None else None,
        )
        self._metrics.proxied(route.path, status)


def _client_host(scope: Scope) -> str | None:
    """The peer's address as the server saw it (a trusted proxy's, behind one), if known."""
    client = scope.get("client")
    return client[0] if client else None


async def _send_error(send: Send, error: BffError) -> None:
    await send({"type": "http.response.start", "status": error.status_code, "headers": error.raw_headers()})
    await send({"type": "http.response.body", "body": error.body(), "more_body": False})
