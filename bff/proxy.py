"""ProxyApp: the raw-ASGI hot path from a configured route to its upstream.

It owns route matching (longest path prefix on segment boundaries, after the path is
normalised), the anti-forgery check, the bearer-token hook with one replay after a 401, and
streaming both ways over one aiohttp `ClientSession` per upstream. Header rules live in
`bff.headers`, the checks in `bff.csrf`, WebSocket relaying in `bff.websocket`; sessions and
tokens are the bearer source's business. Paths no route claims go to `fallback`.

No Starlette `Request`/`Response` here: each request is one pass over its headers, one aiohttp
request and the ASGI messages of the response. Upstream failures become JSON errors naming the
route (502 `upstream_unavailable`, 504 `upstream_timeout`); once the response has started, a
failing upstream aborts the browser's connection rather than faking a clean end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Protocol
from urllib.parse import quote_from_bytes, unquote, urlsplit

import aiohttp
from multidict import CIMultiDict
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from yarl import URL

from bff import websocket
from bff.config import RouteSettings, Settings
from bff.csrf import AntiForgery
from bff.errors import (
    BadRequest,
    BffError,
    HeadersTooLarge,
    PayloadTooLarge,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from bff.headers import WEBSOCKET_HANDSHAKE, RequestHeaderFilter, ResponseHeaderFilter, TrustedProxies
from bff.metrics import Metrics
from bff.websocket import CLIENT_CLOSED

logger = logging.getLogger("bff.proxy")

# aiohttp adds Accept, Accept-Encoding, User-Agent and (for bodies) Content-Type unless told not
# to: a browser that never asked for gzip must not get gzip, and the upstream should see the
# browser's headers, no more. `skip_auto_headers` would do it at a cost per request (it builds a
# sorted multidict each time); this request class adds nothing in the first place.
_NO_CONTENT_TYPE: CIMultiDict[None] = CIMultiDict({"Content-Type": None})


class _BareRequest(aiohttp.ClientRequest):
    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = _NO_CONTENT_TYPE  # read again when the body is set and sent


# Keep idle upstream connections a little shorter than uvicorn's default keep-alive (5 s), so the
# proxy does not reuse a connection the upstream is closing.
_KEEPALIVE_TIMEOUT = 4.0
# aiohttp warns about (and writes in one go) bytes bodies above 1 MiB: larger replay buffers are
# sent in slices of this size.
_LARGE_BYTES = 1024 * 1024
# Bytes that are safe in a forwarded path or query as they are (non-ASCII gets percent-encoded).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


class BearerSource(Protocol):
    async def bearer(self, route: RouteSettings, headers: Sequence[tuple[bytes, bytes]]) -> str | None:
        """Access token for this request (None: forward without Authorization).
        Raises NotAuthenticated, SessionExpired/RefreshRejected (with a clearing Set-Cookie in
        .headers), ProviderUnavailable, StoreUnavailable."""

    async def bearer_after_rejection(
        self, route: RouteSettings, headers: Sequence[tuple[bytes, bytes]], rejected: str
    ) -> str | None:
        """The upstream answered 401 to `rejected`: refresh once (single flight) and return the new
        token, or None when there is nothing better to try."""


class UpstreamAborted(Exception):
    """The upstream failed after the response started: the server drops the browser's connection."""

    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.status = status


def normalise_path(raw_path: bytes) -> tuple[str, bytes]:
    """The decoded path to route on and the raw path to forward, with doubled slashes collapsed.

    Raise `BadRequest` for a `.` or `..` segment in any form (`%2e`, double encoding, `..;`),
    an encoded slash or backslash, a backslash, or a NUL: nothing may leave its route's prefix.
    """
    if not raw_path.startswith(b"/"):
        raise BadRequest("path must start with '/'")
    if (
        b"%" not in raw_path
        and b"/." not in raw_path
        and b"//" not in raw_path
        and b"\\" not in raw_path
        and raw_path.isascii()
    ):
        return raw_path.decode("ascii"), raw_path  # the common case: nothing to decode or check
    segments = raw_path.split(b"/")
    kept = [b""]
    last = len(segments) - 1
    for i, segment in enumerate(segments[1:], start=1):
        if not segment:
            if i == last:
                kept.append(segment)  # keep a trailing slash
            continue
        _check_segment(segment)
        kept.append(segment)
    forward = b"/".join(kept) if len(kept) > 1 else b"/"
    if not forward.isascii():
        forward = quote_from_bytes(forward, safe=_SAFE).encode("ascii")
    return unquote(forward.decode("ascii")), forward


def _check_segment(segment: bytes) -> None:
    if b"\\" in segment:
        raise BadRequest("backslash in path")
    text = segment.decode("latin-1")
    for _ in range(3):  # double- and triple-encoded forms too
        decoded = unquote(text, encoding="latin-1")
        if decoded == text:
            break
        text = decoded
    if "/" in text or "\\" in text or "\x00" in text:
        raise BadRequest("encoded slash, backslash or NUL in path")
    if text.split(";", 1)[0] in (".", ".."):
        raise BadRequest("'.' or '..' segment in path")


class _Route:
    """One route with everything a request needs computed once."""

    __slots__ = (
        "base_path",
        "needs_token",
        "path",
        "prefix_len",
        "request_filter",
        "response_filter",
        "segments",
        "session",
        "settings",
        "timeout",
        "url_prefix",
        "ws_filter",
        "ws_url_prefix",
    )

    def __init__(self, route: RouteSettings, settings: Settings) -> None:
        self.settings = route
        self.path = route.path
        self.prefix_len = len(route.path)
        self.segments = route.path.count("/")
        self.needs_token = route.token != "none"
        upstream = urlsplit(route.upstream)
        self.base_path = upstream.path.rstrip("/")
        self.url_prefix = f"{upstream.scheme}://{upstream.netloc}"
        ws_scheme = "wss" if upstream.scheme == "https" else "ws"
        self.ws_url_prefix = f"{ws_scheme}://{upstream.netloc}"
        public = urlsplit(settings.public_url)
        trusted = TrustedProxies(settings.trusted_proxies)

        def request_filter(extra_drop: frozenset[bytes] = frozenset()) -> RequestHeaderFilter:
            return RequestHeaderFilter(
                cookie_base=settings.session.cookie_name,
                forward_cookies=route.forward_cookies,
                preserve_host=route.preserve_host,
                trusted_proxies=trusted,
                public_scheme=public.scheme,
                public_host=public.netloc,
                extra_drop=extra_drop,
            )

        self.request_filter = request_filter()
        self.ws_filter = request_filter(WEBSOCKET_HANDSHAKE)
        self.response_filter = ResponseHeaderFilter(cookie_base=settings.session.cookie_name)
        # sock_connect bounds the TCP connect; connect (DNS, connect and waiting for a free pooled
        # connection) is bounded too, so nothing waits forever; sock_read is the longest silence.
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=route.connect_timeout + route.read_timeout,
            sock_connect=route.connect_timeout,
            sock_read=route.read_timeout,
        )
        self.session: aiohttp.ClientSession | None = None

    def matches(self, path: str) -> bool:
        return path.startswith(self.path) and (len(path) == self.prefix_len or path[self.prefix_len] == "/")

    def forward_path(self, path: str, raw: bytes) -> str:
        """Upstream path (still percent-encoded) for a request path this route matched."""
        text = raw.decode("ascii")
        if self.settings.strip_prefix:
            if path != text:  # percent-encoded characters: strip whole segments
                parts = text.split("/", self.segments + 1)
                text = "/" + parts[self.segments + 1] if len(parts) > self.segments + 1 else ""
            else:
                text = text[self.prefix_len :]
            if not text and not self.base_path:
                text = "/"
        return self.base_path + text

    def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_connections,
            limit_per_host=0,
            keepalive_timeout=_KEEPALIVE_TIMEOUT,
            ttl_dns_cache=10,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            request_class=_BareRequest,
            timeout=self.timeout,
            trust_env=False,
        )


class _Body:
    """State of one exchange's request body (read by the error mapping after aiohttp gives up)
    and whether the response has started."""

    __slots__ = ("client_gone", "done", "limit", "started", "too_large")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.started = False  # the response has started: errors can no longer be answered
        self.client_gone = False
        self.too_large = False
        self.done = False

    async def stream(self, receive: Receive, first: bytes = b"", more: bool = True) -> AsyncIterator[bytes]:
        received = len(first)
        if first:
            yield first
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                raise ConnectionResetError("client disconnected")
            chunk: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            if chunk:
                received += len(chunk)
                if self.limit is not None and received > self.limit:
                    self.too_large = True
                    raise PayloadTooLarge(f"request body is larger than {self.limit} bytes")
                yield chunk
        self.done = True


class _DisconnectWatch:
    """Cancels the streaming task when the browser goes away (uvicorn's `send` would silently
    drop the rest, and the upstream would be read to the end for nobody)."""

    __slots__ = ("_future", "_stopped", "_task", "gone")

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._stopped = False
        self._task = asyncio.current_task()
        self._future = asyncio.ensure_future(_disconnected(receive))
        self._future.add_done_callback(self._on_message)

    def _on_message(self, future: asyncio.Future[Message]) -> None:
        if self._stopped or future.cancelled() or future.exception() is not None:
            return
        self.gone = True
        if self._task is not None:
            self._task.cancel()

    def stop(self) -> None:
        self._stopped = True
        self._future.remove_done_callback(self._on_message)
        self._future.cancel()


async def _disconnected(receive: Receive) -> Message:
    while True:  # a request without a body still has its one empty `http.request` to take
        message = await receive()
        if message["type"] == "http.disconnect":
            return message


class ProxyApp:
    """ASGI app for the configured routes; everything else goes to `fallback`."""

    def __init__(
        self, settings: Settings, *, bearer_source: BearerSource | None, fallback: ASGIApp, metrics: Metrics
    ) -> None:
        self.settings = settings
        self._bearer = bearer_source
        self._fallback = fallback
        self._metrics = metrics
        self._anti_forgery = AntiForgery(settings)
        self._max_replay = settings.max_replay_body
        self._max_body = settings.max_request_body
        self._max_header_size = settings.max_header_size
        routes = (_Route(route, settings) for route in settings.routes)
        self._routes = tuple(sorted(routes, key=lambda route: route.prefix_len, reverse=True))

    async def start(self) -> None:
        for route in self._routes:
            route.open()

    async def close(self) -> None:
        for route in self._routes:
            if route.session is not None:
                await route.session.close()
                route.session = None

    def connectors(self) -> dict[str, aiohttp.BaseConnector]:
        """Each route's connection pool, by route path (for tests and diagnostics)."""
        return {
            route.path: route.session.connector for route in self._routes if route.session and route.session.connector
        }

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

    async def _http(self, route: _Route, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        status = CLIENT_CLOSED
        body = _Body(self._max_body)
        try:
            status = await self._forward(route, scope, receive, send, path, body)
        except BffError as exc:
            status = exc.status_code
            await _send_error(send, exc)
        except _ClientGone:
            pass
        except UpstreamAborted as exc:
            status = exc.status
            raise  # uvicorn closes the connection: a truncated body must not look complete
        except Exception:
            if body.started:
                raise
            logger.exception("Proxy error. route: %r", route.path)
            status = 500
            await _send_error(send, BffError(f"route {route.path!r}: proxy error"))
        finally:
            self._metrics.proxied(route.path, status)

    async def _forward(self, route: _Route, scope: Scope, receive: Receive, send: Send, path: str, body: _Body) -> int:
        """Send the request upstream and stream the answer back; return the status sent.
        Raises `BffError` only before the response has started (`body.started`)."""
        headers = scope["headers"]
        if route.settings.csrf:
            self._anti_forgery.check(headers)
        client = scope.get("client")
        try:
            forwarded, length, chunked = route.request_filter.apply(headers, client[0] if client else None)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if length is not None and self._max_body is not None and length > self._max_body:
            raise PayloadTooLarge(f"request body is larger than {self._max_body} bytes")

        token: str | None = None
        if route.needs_token and self._bearer is not None:
            token = await self._bearer.bearer(route.settings, headers)

        query: bytes = scope.get("query_string", b"")
        if query:
            if not query.isascii():
                query = quote_from_bytes(query, safe=_SAFE).encode("ascii")
            url = URL(f"{route.url_prefix}{path}?{query.decode('ascii')}", encoded=True)
        else:
            url = URL(route.url_prefix + path, encoded=True)
        method: str = scope["method"]

        data: bytes | AsyncIterator[bytes] | None = None
        replayable = False
        if chunked or length:
            if route.needs_token and token is not None and (length is None or length <= self._max_replay):
                buffered, more = await _read_up_to(receive, self._max_replay, body)
                if more or len(buffered) > self._max_replay:
                    data = body.stream(receive, buffered, more)  # over the replay limit: sent once
                else:
                    data, replayable = buffered, True
            else:
                data = body.stream(receive)
            if length is not None and not isinstance(data, bytes):
                forwarded.append(("content-length", str(length)))
        else:
            body.done = replayable = True

        attempt = forwarded if token is None else [*forwarded, ("authorization", "Bearer " + token)]
        response = await self._request(route, method, url, attempt, data, body)
        if response.status == 401 and replayable and token is not None and self._bearer is not None:
            try:
                fresh = await self._bearer.bearer_after_rejection(route.settings, headers, token)
            except BaseException:
                response.close()
                raise
            if fresh is not None:
                response.release()
                attempt = [*forwarded, ("authorization", "Bearer " + fresh)]
                response = await self._request(route, method, url, attempt, data, body)
        return await self._respond(route, response, receive, send, body)

    async def _request(
        self,
        route: _Route,
        method: str,
        url: URL,
        headers: list[tuple[str, str]],
        data: bytes | AsyncIterator[bytes] | None,
        body: _Body,
    ) -> aiohttp.ClientResponse:
        session = route.session
        if session is None:
            raise UpstreamUnavailable(f"route {route.path!r}: proxy not started")
        if isinstance(data, bytes) and len(data) > _LARGE_BYTES:
            headers = [*headers, ("content-length", str(len(data)))]
            data = _slices(data)
        try:
            return await session.request(method, url, headers=headers, data=data, allow_redirects=False, compress=None)
        except PayloadTooLarge:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(f"route {route.path!r}: the upstream did not answer in time") from None
        except aiohttp.ClientError as exc:
            if body.too_large:
                raise PayloadTooLarge(f"request body is larger than {body.limit} bytes") from None
            if body.client_gone:
                raise _ClientGone from None
            if isinstance(exc, aiohttp.ClientConnectorError):
                detail = "cannot connect to the upstream"
            else:
                detail = "the upstream closed the connection before answering"
            logger.warning("Upstream unavailable. route: %r, error: %s", route.path, type(exc).__name__)
            raise UpstreamUnavailable(f"route {route.path!r}: {detail}") from None

    async def _respond(
        self, route: _Route, response: aiohttp.ClientResponse, receive: Receive, send: Send, body: _Body
    ) -> int:
        status = response.status
        body.started = True
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": route.response_filter.apply(response.raw_headers),
            }
        )
        content = response.content
        watch: _DisconnectWatch | None = None
        try:
            chunk = await content.readany()
            if content.at_eof():  # the whole body arrived at once: no disconnect watcher needed
                await send({"type": "http.response.body", "body": chunk, "more_body": False})
                return status
            # Watch for the browser leaving only once its request body is read (else the body
            # stream is the one receiving, and it notices).
            watch = _DisconnectWatch(receive) if body.done else None
            while chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                chunk = await content.readany()
            if watch is not None:
                watch.stop()
                watch = None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return status
        except asyncio.CancelledError:
            if watch is not None and watch.gone:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                return CLIENT_CLOSED
            raise
        except (TimeoutError, aiohttp.ClientError) as exc:
            logger.warning("Upstream failed mid-response. route: %r, error: %s", route.path, type(exc).__name__)
            raise UpstreamAborted(f"route {route.path!r}: the upstream failed mid-response", status) from None
        finally:
            if watch is not None:
                watch.stop()
            if content.at_eof():
                response.release()
            else:
                response.close()  # unread body: the connection cannot go back to the pool

    async def _websocket(self, route: _Route, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        headers = scope["headers"]
        try:
            self._anti_forgery.check_websocket(headers)
            token: str | None = None
            if route.needs_token and self._bearer is not None:
                token = await self._bearer.bearer(route.settings, headers)
        except BffError as exc:
            self._metrics.proxied(route.path, exc.status_code)
            await websocket.deny(scope, receive, send, exc)
            return
        client = scope.get("client")
        forwarded, _, _ = route.ws_filter.apply(headers, client[0] if client else None)
        if token is not None:
            forwarded.append(("authorization", "Bearer " + token))
        query: bytes = scope.get("query_string", b"")
        if not query.isascii():
            query = quote_from_bytes(query, safe=_SAFE).encode("ascii")
        url = URL(route.ws_url_prefix + path + ("?" + query.decode("ascii") if query else ""), encoded=True)
        if route.session is None:
            self._metrics.proxied(route.path, UpstreamUnavailable.status_code)
            await websocket.deny(scope, receive, send, UpstreamUnavailable(f"route {route.path!r}: proxy not started"))
            return
        status = await websocket.relay(
            scope, receive, send, session=route.session, url=url, headers=forwarded, route_path=route.path
        )
        self._metrics.proxied(route.path, status)


class _ClientGone(Exception):
    pass


async def _slices(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), _LARGE_BYTES):
        yield bytes(view[start : start + _LARGE_BYTES])


async def _read_up_to(receive: Receive, limit: int, body: _Body) -> tuple[bytes, bool]:
    """Read the request body while it fits in `limit`; return it and whether more is coming."""
    parts: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            body.client_gone = True
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    if body.limit is not None and size > body.limit:
        raise PayloadTooLarge(f"request body is larger than {body.limit} bytes")
    if not more:
        body.done = True
    return b"".join(parts), more


async def _send_error(send: Send, error: BffError) -> None:
    await send({"type": "http.response.start", "status": error.status_code, "headers": error.raw_headers()})
    await send({"type": "http.response.body", "body": error.body(), "more_body": False})
