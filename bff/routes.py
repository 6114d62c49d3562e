"""ProxyRoute: one configured route with everything a proxied request needs computed once.

Owns route matching (a path prefix on segment boundaries), the upstream path a matched request is
forwarded to, the route's header filters and timeouts, its `UpstreamPool` for HTTP requests and
its aiohttp `ClientSession` for WebSockets (each one connection pool per route). Choosing among
routes and the exchange itself are `bff.proxy`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote_from_bytes, urlsplit

import aiohttp
from multidict import CIMultiDict

from bff.config import RouteSettings, Settings
from bff.headers import WEBSOCKET_HANDSHAKE, RequestHeaderFilter, ResponseHeaderFilter, TrustedProxies
from bff.paths import SAFE
from bff.upstream_pool import KEEPALIVE, UpstreamPool

__all__ = ["ProxyRoute"]

# aiohttp adds Accept, Accept-Encoding, User-Agent and (for bodies) Content-Type unless told not
# to: a browser that never asked for gzip must not get gzip, and the upstream should see the
# browser's headers, no more. `skip_auto_headers` would do it at a cost per request (it builds a
# sorted multidict each time); this request class adds nothing in the first place.
_NO_CONTENT_TYPE: CIMultiDict[None] = CIMultiDict({"Content-Type": None})


class _BareRequest(aiohttp.ClientRequest):
    def update_auto_headers(self, _skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = _NO_CONTENT_TYPE  # read again when the body is set and sent


class ProxyRoute:
    """One route with everything a request needs computed once."""

    __slots__ = (
        "base_path",
        "needs_token",
        "path",
        "pool",
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
        self.pool: UpstreamPool | None = None

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

    def upstream_url(self, path: str, query: bytes, *, websocket: bool = False) -> str:
        """The upstream URL (already percent-encoded) for a forwarded `path` (from `forward_path`)
        and the browser's raw query string, percent-encoding any non-ASCII byte of it; `ws(s)://`
        for a WebSocket."""
        prefix = self.ws_url_prefix if websocket else self.url_prefix
        return prefix + self.target(path, query)

    @staticmethod
    def target(path: str, query: bytes) -> str:
        """The request target (path and query, percent-encoded) for a forwarded `path`."""
        if not query:
            return path
        if not query.isascii():
            query = quote_from_bytes(query, safe=SAFE).encode("ascii")
        return f"{path}?{query.decode('ascii')}"

    def open(self) -> None:
        self.pool = UpstreamPool(
            self.url_prefix,
            limit=self.settings.max_connections,
            connect_timeout=self.settings.connect_timeout,
            read_timeout=self.settings.read_timeout,
        )
        if not self.settings.websocket:
            return
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_connections,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE,
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
