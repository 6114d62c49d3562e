"""Auth-request mode: `GET /bff/auth` for nginx `auth_request`, Traefik `ForwardAuth` and Caddy
`forward_auth`, where the edge proxies the body and asks the BFF only for the token.

The edge sends the original request's headers (cookie, anti-forgery header, `Origin`) with its
URI (`X-Forwarded-Uri` or `X-Original-URI`) and method (`X-Forwarded-Method` or
`X-Original-Method`). The `[[routes]]` entry whose path matches that URI decides, as it would
for a proxied request: its `csrf` check, its `token` kind. The answer is 200 with the
`Authorization` (and `DPoP`) header the edge copies upstream, or the usual JSON error. It runs in
server mode only (`bff.config` refuses `token_storage = "cookie"`): the edges drop or cut a 200
answer's `Set-Cookie` (tests/deployment/test_auth_request_edges.py), so a refresh must not
need one. Tokens come from the `BearerSource` (single-flight refresh), route matching and upstream
URLs from `bff.routes`, the proof from `bff.upstream_auth`.

The answer carries a token, so it must never reach a browser: the endpoint is off unless
`auth_request = true`, and it answers only peers in `trusted_proxies` (403 `peer_rejected`);
the edge must not route `/bff/auth` publicly.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bff.config import Settings
from bff.csrf import AntiForgery
from bff.errors import BadRequest, NotAvailable, NotFound, PeerRejected
from bff.headers import TrustedProxies
from bff.paths import normalise_path
from bff.routes import ProxyRoute
from bff.tokens import BearerSource
from bff.upstream_auth import authorized

__all__ = ["AuthParts", "AuthRequest", "build_auth_request_routes"]

_URI_HEADERS = ("x-forwarded-uri", "x-original-uri")
_METHOD_HEADERS = ("x-forwarded-method", "x-original-method")


class AuthParts(Protocol):
    """What the endpoint needs from the app (`BffApp` has these attributes)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def tokens(self) -> BearerSource: ...


class AuthRequest:
    def __init__(self, parts: AuthParts) -> None:
        self.settings = parts.settings
        self.tokens = parts.tokens
        self.trusted = TrustedProxies(parts.settings.trusted_proxies)
        self.anti_forgery = AntiForgery(parts.settings)
        # Longest prefix first, as the proxy chooses. Never opened: only matching and URLs are used.
        routes = (ProxyRoute(route, parts.settings) for route in parts.settings.routes)
        self.routes = tuple(sorted(routes, key=lambda route: route.prefix_len, reverse=True))

    async def auth(self, request: Request) -> Response:
        if not self.settings.auth_request:
            raise NotAvailable("the auth-request endpoint needs auth_request = true")
        peer = request.client.host if request.client else None
        if peer not in self.trusted:
            raise PeerRejected("the auth-request endpoint answers only trusted_proxies")
        uri = _first(request, _URI_HEADERS)
        if uri is None:
            raise NotFound("no X-Forwarded-Uri or X-Original-URI: which route is asked for?")
        method = _first(request, _METHOD_HEADERS)
        if method is None:
            raise BadRequest("no X-Forwarded-Method or X-Original-Method: the original method is needed")
        target = urlsplit(uri)
        path, forward = normalise_path(target.path.encode("latin-1") or b"/")
        route = next((route for route in self.routes if route.matches(path)), None)
        if route is None:
            raise NotFound(f"no route matches {path!r}")
        headers = request.headers.raw
        if route.settings.csrf:
            self.anti_forgery.check(headers)
        response = Response(status_code=200, headers={"cache-control": "no-store"})
        bearer = await self.tokens.bearer(route.settings, headers) if route.needs_token else None
        if bearer is None:
            return response
        url = route.upstream_url(route.forward_path(path, forward), target.query.encode("latin-1"))
        for name, value in authorized([], bearer, method.upper(), url):
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        return response


def _first(request: Request, names: tuple[str, ...]) -> str | None:
    for name in names:
        value = request.headers.get(name)
        if value:
            return value
    return None


def build_auth_request_routes(parts: AuthParts) -> list[BaseRoute]:
    endpoint = AuthRequest(parts)
    return [Route(f"{parts.settings.prefix}/auth", endpoint.auth, methods=["GET"])]
