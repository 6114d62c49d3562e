"""The README's "Auth-request mode" examples, for real: Debian's `caddy` running the `forward_auth`
example and Debian's `nginx` running the `auth_request` example, each exactly as printed with
only its addresses moved to loopback ports, in front of one `bff serve` with `auth_request = true`
(the real OpenID provider behind it) and the echo upstream, which answers with the head it got.

The edge proxies `/api/*` to the echo itself; the BFF only answers `GET /bff/auth`. The visitor
connects from 127.0.0.2, the edge and the BFF run on 127.0.0.1 (the BFF's `trusted_proxies`).
A stand-in for the BFF shows what each edge does with the `Set-Cookie` of the auth answer, the
reason `auth_request = true` refuses `token_storage = "cookie"`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import jwt
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.deployment.browser import Visitor
from tests.deployment.harness import CSRF
from tests.support.bff_process import BffProcess, bff_config, new_secret_key
from tests.support.caddy import Caddy
from tests.support.jwt_api import wait_for_expiry
from tests.support.nginx import Nginx, nginx_or_skip
from tests.support.oidc_provider import Client, OidcProvider
from tests.support.processes import free_port
from tests.support.readme_configs import readme_block
from tests.support.upstreams import ServerThread, UpstreamApp

pytestmark = pytest.mark.integration

EdgeKind = Literal["caddy", "nginx"]
EDGES: tuple[EdgeKind, ...] = ("caddy", "nginx")
README_BFF = "127.0.0.1:8000"
README_UPSTREAM = "10.0.0.20:8080"


class EdgeProcess(Protocol):
    @property
    def url(self) -> str: ...
    def start(self, timeout: float = 20) -> None: ...
    def stop(self) -> None: ...


def moved(text: str, replacements: dict[str, str]) -> str:
    """`text` with each key replaced by its value; each key must be there (the README drifted if not)."""
    for old, new in replacements.items():
        assert old in text, f"the README's example no longer has {old!r}"
        text = text.replace(old, new)
    return text


def edge_process(kind: EdgeKind, workdir: Path, *, bff: str, upstream: str) -> EdgeProcess:
    """The README's example for `kind` with the BFF at `bff` and the API at `upstream` (host:port)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    addresses = {README_BFF: bff, README_UPSTREAM: upstream}
    if kind == "nginx":
        server = moved(readme_block("auth-request-nginx", language="nginx"), addresses)
        return Nginx(workdir, server, port=port, executable=nginx_or_skip())
    example = moved(readme_block("auth-request-caddy", language="caddyfile"), addresses)
    # The site's name becomes a plain-http loopback address; no admin endpoint to collide on.
    caddyfile = workdir / "Caddyfile"
    caddyfile.write_text("{\n\tadmin off\n}\n" + moved(example, {"app.example.com {": f"http://127.0.0.1:{port} {{"}))
    return Caddy(workdir, [], port=port, caddyfile=caddyfile)


@contextlib.contextmanager
def running(process: EdgeProcess) -> Iterator[EdgeProcess]:
    process.start()
    try:
        yield process
    finally:
        if isinstance(process, Nginx):
            process.close()  # its readiness client too
        else:
            process.stop()


@dataclass
class Edge:
    kind: EdgeKind
    edge: EdgeProcess
    bff: BffProcess
    client: Client
    upstream: UpstreamApp

    @property
    def url(self) -> str:
        return self.edge.url

    def signed_in(self, user: str) -> Visitor:
        visitor = Visitor()
        visitor.login(self.url, user)
        assert visitor.cookie("bff"), "no session cookie after the login"
        return visitor


@pytest.fixture(scope="module", params=EDGES)
def edge(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    provider: OidcProvider,
    echo: tuple[ServerThread, UpstreamApp],
) -> Iterator[Edge]:
    """The README's example of one edge in front of a BFF in auth-request mode, on the echo."""
    kind: EdgeKind = request.param
    if kind == "nginx":
        nginx_or_skip()  # skips (or fails, under CI) before anything starts
    root = tmp_path_factory.mktemp(f"auth-request-{kind}")
    server, upstream = echo
    bff_port = free_port()
    process = edge_process(kind, root / kind, bff=f"127.0.0.1:{bff_port}", upstream=server.url.split("://")[1])
    client = provider.register_client(f"auth-request-{kind}-{bff_port}", process.url)
    config = bff_config(
        port=bff_port,
        public_url=process.url,
        issuer=provider.issuer,
        client_id=client.client_id,
        client_secret=client.client_secret,
        api_url=server.url,
        store=f"sqlite:///{root / 'sessions.db'}",
        secret_keys=[new_secret_key()],
        refresh_skew="1s",
        extra={"trusted_proxies": ["127.0.0.1"], "auth_request": True},
    )
    bff = BffProcess(workdir=root / "bff", config=config, port=bff_port)
    bff.start()
    try:
        with running(process):
            yield Edge(kind, process, bff, client, upstream)
    finally:
        bff.stop()


def header_values(echoed: dict[str, Any], name: str) -> list[str]:
    return [value for header, value in echoed["headers"] if header == name]


def latest_access_token(provider: OidcProvider, client: Client) -> str:
    token: str = [entry for entry in provider.issued(client.client_id) if entry.get("access_token")][-1]["access_token"]
    return token


# ----------------------------------------------------------------------------- a signed-in call


def test_signed_in_call_reaches_the_upstream_with_the_sessions_bearer_token(edge: Edge, provider: OidcProvider) -> None:
    visitor = edge.signed_in(f"{edge.kind}-signed-in")
    try:
        # A browser's own Authorization never gets through: the BFF's token replaces it.
        response = visitor.api("GET", f"{edge.url}/api/orders", params={"page": "2"}, headers={"Authorization": "x"})
        assert response.status_code == 200, response.text
        echoed = response.json()
        assert (echoed["method"], echoed["path"], echoed["query"]) == ("GET", "/api/orders", "page=2")
        assert header_values(echoed, "authorization") == [f"Bearer {latest_access_token(provider, edge.client)}"]
        # The session cookie stays between the browser, the edge and the BFF.
        assert header_values(echoed, "cookie") == []
        assert header_values(echoed, "dpop") == []
        assert edge.upstream.requests[-1] == echoed
    finally:
        visitor.close()


def test_post_body_goes_from_the_edge_to_the_upstream(edge: Edge) -> None:
    visitor = edge.signed_in(f"{edge.kind}-post")
    try:
        response = visitor.api("POST", f"{edge.url}/api/orders", content=b'{"item": 7}')
        assert response.status_code == 200, response.text
        assert (response.json()["method"], response.json()["body"]) == ("POST", '{"item": 7}')
    finally:
        visitor.close()


# ---------------------------------------------------------------------------------- refusals


def test_anonymous_call_is_the_bffs_401_and_never_reaches_the_upstream(edge: Edge) -> None:
    visitor = Visitor()
    before = len(edge.upstream.requests)
    try:
        response = visitor.api("GET", f"{edge.url}/api/orders")
    finally:
        visitor.close()
    assert response.status_code == 401
    if edge.kind == "caddy":  # Caddy passes a non-2xx auth answer on as it is
        assert response.json() == {"error": "not_authenticated", "detail": "this route needs a signed-in user"}
    else:  # nginx keeps only the status (the README says so)
        assert "401 Authorization Required" in response.text
    assert len(edge.upstream.requests) == before


def test_call_without_the_anti_forgery_header_is_the_bffs_403(edge: Edge) -> None:
    visitor = edge.signed_in(f"{edge.kind}-no-csrf")
    before = len(edge.upstream.requests)
    try:
        response = visitor.http.get(f"{edge.url}/api/orders")
    finally:
        visitor.close()
    assert response.status_code == 403
    if edge.kind == "caddy":
        assert response.json() == {"error": "csrf_rejected", "detail": "header 'X-CSRF' must be '1'"}
    else:
        assert "403 Forbidden" in response.text
    assert len(edge.upstream.requests) == before


def test_auth_endpoint_is_not_routed_publicly_and_refuses_untrusted_peers(edge: Edge) -> None:
    visitor = edge.signed_in(f"{edge.kind}-peer")
    asking = {"X-Forwarded-Uri": "/api/orders", "X-Forwarded-Method": "GET", **CSRF}
    try:
        # Through the edge: the example answers /bff/auth itself, with a 404.
        through_edge = visitor.http.get(f"{edge.url}/bff/auth", headers=asking)
        # Straight to the BFF from 127.0.0.2, with the session cookie: not a trusted proxy.
        straight = visitor.http.get(f"{edge.bff.url}/bff/auth", headers=asking)
    finally:
        visitor.close()
    assert through_edge.status_code == 404
    assert "authorization" not in through_edge.headers
    assert straight.status_code == 403
    assert straight.json() == {
        "error": "peer_rejected",
        "detail": "the auth-request endpoint answers only trusted_proxies",
    }
    assert "authorization" not in straight.headers


# ------------------------------------------------------------------------------------ refresh


def test_expired_token_is_refreshed_once_for_concurrent_calls(edge: Edge, provider: OidcProvider) -> None:
    visitor = edge.signed_in(f"{edge.kind}-refresh")
    try:
        first = visitor.api("GET", f"{edge.url}/api/first")
        assert first.status_code == 200, first.text
        (old,) = header_values(first.json(), "authorization")
        exp = jwt.decode(old.removeprefix("Bearer "), options={"verify_signature": False})["exp"]
        wait_for_expiry(exp)
        refreshes = provider.refresh_count(edge.client.client_id)
        call: Callable[[int], Any] = lambda i: visitor.api("GET", f"{edge.url}/api/after/{i}")  # noqa: E731
        with ThreadPoolExecutor(max_workers=6) as pool:
            responses = list(pool.map(call, range(6)))
    finally:
        visitor.close()
    assert [response.status_code for response in responses] == [200] * 6
    seen = {value for response in responses for value in header_values(response.json(), "authorization")}
    assert seen == {f"Bearer {latest_access_token(provider, edge.client)}"}
    assert seen != {old}
    assert provider.refresh_count(edge.client.client_id) == refreshes + 1
    assert provider.refresh_errors(edge.client.client_id) == {}


def test_upstreams_401_reaches_the_browser_without_a_refresh_or_a_replay(edge: Edge, provider: OidcProvider) -> None:
    """The README's "what it cannot do": the edge sent the body, the BFF never had it."""
    visitor = edge.signed_in(f"{edge.kind}-rejected")
    before = len(edge.upstream.requests)
    refreshes = provider.refresh_count(edge.client.client_id)
    try:
        # The echo's `.../auth` answers 401 invalid_token to any token but "fresh".
        response = visitor.api("POST", f"{edge.url}/api/auth", content=b"sent once")
    finally:
        visitor.close()
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token"}
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    attempts = edge.upstream.requests[before:]
    assert [attempt["body"] for attempt in attempts] == [b"sent once"]
    assert provider.refresh_count(edge.client.client_id) == refreshes


# ------------------------------------------------------------------------ the answer's cookies

STAND_IN_COOKIES = ("bff=resealed; Path=/; HttpOnly", "bff.1=second-chunk; Path=/; HttpOnly")
CLEARING_COOKIE = "bff=; Max-Age=0; Path=/; HttpOnly"


async def stand_in_auth(request: Request) -> Response:
    """What the BFF would answer: 200 with a token and two `Set-Cookie` (a resealed, chunked
    cookie); for `/api/refused` a 401 that clears the cookie; for `/api/public` 200 alone."""
    uri = request.headers.get("x-forwarded-uri") or request.headers.get("x-original-uri") or ""
    if uri.startswith("/api/refused"):
        refused = JSONResponse({"error": "session_expired", "detail": "stand-in"}, status_code=401)
        refused.headers.append("set-cookie", CLEARING_COOKIE)
        return refused
    if uri.startswith("/api/public"):  # a token = "none" route's answer
        return Response(status_code=200, headers={"cache-control": "no-store"})
    answer = Response(status_code=200, headers={"authorization": "Bearer stand-in", "cache-control": "no-store"})
    for cookie in STAND_IN_COOKIES:
        answer.headers.append("set-cookie", cookie)
    return answer


@pytest.mark.parametrize("kind", EDGES)
def test_what_the_edge_does_with_the_auth_answers_set_cookie(
    kind: EdgeKind, tmp_path: Path, caddy_executable: str, echo: tuple[ServerThread, UpstreamApp]
) -> None:
    """Caddy drops a 200 answer's `Set-Cookie` (only `copy_headers` go into the upstream request)
    and passes a 401 on whole; nginx's `add_header` passes the first `Set-Cookie` only (also on
    its bodiless 401). Either way a cookie-mode refresh's resealed, chunked cookie is lost: hence
    no `token_storage = "cookie"` with `auth_request = true`."""
    del caddy_executable  # the conftest's check that caddy is there
    app = Starlette(
        routes=[Route("/bff/auth", stand_in_auth), Route("/healthz", lambda _: Response("ok"))],
    )
    server, _ = echo
    with ServerThread(app) as stand_in:
        process = edge_process(
            kind, tmp_path / kind, bff=f"127.0.0.1:{stand_in.port}", upstream=server.url.split("://")[1]
        )
        with running(process):
            visitor = Visitor()
            try:
                allowed = visitor.api("GET", f"{process.url}/api/allowed")
                refused = visitor.api("GET", f"{process.url}/api/refused")
                public = visitor.api("GET", f"{process.url}/api/public")
            finally:
                visitor.close()
    assert allowed.status_code == 200, allowed.text
    assert header_values(allowed.json(), "authorization") == ["Bearer stand-in"]
    expected = [] if kind == "caddy" else STAND_IN_COOKIES[:1]
    assert allowed.headers.get_list("set-cookie") == list(expected)
    assert refused.status_code == 401
    assert refused.headers.get_list("set-cookie") == [CLEARING_COOKIE]
    if kind == "caddy":
        assert refused.json() == {"error": "session_expired", "detail": "stand-in"}
    # An answer without Authorization: nginx sends none; Caddy 2.6 sends copy_headers' placeholder
    # itself (hence the README: forward_auth only in front of routes that always get a token).
    assert public.status_code == 200, public.text
    placeholder = ["{http.reverse_proxy.header.Authorization}"]
    assert header_values(public.json(), "authorization") == (placeholder if kind == "caddy" else [])
