"""The README's "deployment behind Caddy", for real: Debian's `caddy` terminates TLS (its local CA)
on a loopback port and reverse-proxies to one `bff serve` whose `public_url` is Caddy's URL; the
real OpenID provider, the JWT-validating API and the echo upstream behind it.

The visitor connects from 127.0.0.2 while Caddy and the BFF run on 127.0.0.1, so the upstream's
`X-Forwarded-For` tells the client's address from the proxies'.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.deployment.browser import CLIENT_ADDRESS, Visitor
from tests.deployment.harness import CSRF, new_replica, replica_config
from tests.support.bff_process import BffProcess, new_secret_key
from tests.support.caddy import Caddy
from tests.support.cookies import set_cookies
from tests.support.jwt_api import JwtApi
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import free_port
from tests.support.upstreams import ServerThread, UpstreamApp

pytestmark = pytest.mark.integration

FORGED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "gopher"}


@dataclass
class Edge:
    caddy: Caddy
    bff: BffProcess

    @property
    def url(self) -> str:
        return self.caddy.url

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    def visitor(self) -> Visitor:
        return Visitor(verify=self.caddy.ssl_context() if self.caddy.tls else True)


@contextlib.contextmanager
def running_edge(
    root: Path,
    name: str,
    *,
    tls: bool,
    trusted_proxies: list[str],
    provider: OidcProvider,
    api: JwtApi,
    echo_url: str,
) -> Iterator[Edge]:
    """A BFF and Caddy in front of it, stopped when the block ends."""
    caddy_port = free_port()
    public_url = f"{'https' if tls else 'http'}://127.0.0.1:{caddy_port}"
    client = provider.register_client(f"{name}-{caddy_port}", public_url)
    config = replica_config(
        public_url=public_url,
        provider=provider,
        client=client,
        api=api,
        echo_url=echo_url,
        store=f"sqlite:///{root / name / 'sessions.db'}",
        secret_keys=[new_secret_key()],
        trusted_proxies=trusted_proxies,
    )
    bff = new_replica(root / name, config)
    bff.start()
    caddy = Caddy(root / name / "caddy", [f"127.0.0.1:{bff.port}"], port=caddy_port, tls=tls)
    try:
        caddy.start()
        yield Edge(caddy, bff)
    finally:
        caddy.stop()
        bff.stop()


class StartEdge(Protocol):
    def __call__(self, name: str, *, tls: bool, trusted_proxies: list[str]) -> Edge: ...


@pytest.fixture(scope="module")
def start_edge(
    tmp_path_factory: pytest.TempPathFactory,
    provider: OidcProvider,
    api: JwtApi,
    echo: tuple[ServerThread, UpstreamApp],
) -> Iterator[StartEdge]:
    """Starts a `running_edge` on the session's provider, API and echo upstream; each one started
    stops after the module."""
    root = tmp_path_factory.mktemp("edge")
    with contextlib.ExitStack() as started:

        def start(name: str, *, tls: bool, trusted_proxies: list[str]) -> Edge:
            edge = running_edge(
                root, name, tls=tls, trusted_proxies=trusted_proxies, provider=provider, api=api, echo_url=echo[0].url
            )
            return started.enter_context(edge)

        yield start


@pytest.fixture(scope="module")
def edge(start_edge: StartEdge) -> Edge:
    """Caddy with TLS in front of one BFF that trusts Caddy's address (`127.0.0.1`)."""
    return start_edge("trusting", tls=True, trusted_proxies=["127.0.0.1"])


@pytest.fixture(scope="module")
def untrusting_edge(start_edge: StartEdge) -> Edge:
    """Caddy (plain http) in front of a BFF with `trusted_proxies = []`."""
    return start_edge("untrusting", tls=False, trusted_proxies=[])


def forwarding_headers(echoed: dict[str, Any]) -> dict[str, list[str]]:
    """The echo upstream's view: every value of each forwarding header, in order."""
    seen: dict[str, list[str]] = {}
    for name, value in echoed["headers"]:
        if name.startswith("x-forwarded-") or name in ("forwarded", "x-real-ip"):
            seen.setdefault(name, []).append(value)
    return seen


def forwarding_headers_seen(visitor: Visitor, base_url: str) -> dict[str, list[str]]:
    """GET the echo route at `base_url` with forged forwarding headers; what the upstream saw."""
    response = visitor.api("GET", f"{base_url}/echo/forwarded", headers=FORGED)
    assert response.status_code == 200, response.text
    return forwarding_headers(response.json())


# ---------------------------------------------------------------------------------------- login


def test_login_through_caddy_sets_a_host_prefixed_secure_cookie_and_the_api_call_works(edge: Edge, api: JwtApi) -> None:
    visitor = edge.visitor()
    try:
        callback = visitor.login(edge.url, "caddy-login")
        assert callback.headers["location"] == "/app"
        cookies = {name: attributes for name, (_, attributes) in set_cookies(callback).items()}
        # TLS at Caddy, public_url https: the session cookie is __Host- prefixed and Secure.
        attributes = cookies["__Host-bff"]
        assert "secure" in attributes
        assert "httponly" in attributes
        assert attributes["path"] == "/"
        assert "domain" not in attributes
        assert attributes["samesite"].lower() == "strict"
        assert visitor.cookie("__Host-bff")

        user = visitor.api("GET", f"{edge.url}/bff/user")
        assert user.status_code == 200, user.text
        assert user.json()["sub"] == "caddy-login"

        response = visitor.api("GET", f"{edge.url}/api/orders", params={"page": "2"})
        assert response.status_code == 200, response.text
        assert response.json()["sub"] == "caddy-login"
        assert response.json()["query"] == "page=2"
        seen = api.seen_for("/api/orders")[-1]
        assert seen.status == 200
        # Behind the trusted proxy, the client's address comes first, then Caddy's own.
        assert seen.headers["x-forwarded-for"] == f"{CLIENT_ADDRESS}, 127.0.0.1"
        assert seen.headers["x-forwarded-proto"] == "https"
        assert seen.headers["x-forwarded-host"] == edge.host
    finally:
        visitor.close()


# ------------------------------------------------------------------------------- X-Forwarded-*


def test_upstream_sees_the_client_address_behind_a_trusted_caddy_and_forwarding_from_public_url(
    edge: Edge,
) -> None:
    visitor = edge.visitor()
    try:
        assert forwarding_headers_seen(visitor, edge.url) == {
            "x-forwarded-for": [f"{CLIENT_ADDRESS}, 127.0.0.1"],
            "x-forwarded-proto": ["https"],
            "x-forwarded-host": [edge.host],
        }
        # Straight to the BFF from 127.0.0.2, which is not a trusted proxy: the forgery is dropped.
        assert forwarding_headers_seen(visitor, edge.bff.url) == {
            "x-forwarded-for": [CLIENT_ADDRESS],
            "x-forwarded-proto": ["https"],
            "x-forwarded-host": [edge.host],
        }
    finally:
        visitor.close()


def test_forged_forwarding_headers_are_not_believed_with_no_trusted_proxies(untrusting_edge: Edge) -> None:
    edge = untrusting_edge
    visitor = edge.visitor()
    try:
        # Through Caddy: the BFF believes nothing Caddy says either; its peer is Caddy.
        assert forwarding_headers_seen(visitor, edge.url) == {
            "x-forwarded-for": ["127.0.0.1"],
            "x-forwarded-proto": ["http"],
            "x-forwarded-host": [edge.host],
        }
        # Straight to the BFF: the forged X-Forwarded-For is replaced by the real peer.
        assert forwarding_headers_seen(visitor, edge.bff.url) == {
            "x-forwarded-for": [CLIENT_ADDRESS],
            "x-forwarded-proto": ["http"],
            "x-forwarded-host": [edge.host],
        }
    finally:
        visitor.close()


# ------------------------------------------------------------------------------ streaming, ws


def test_server_sent_events_through_caddy_and_the_bff_are_not_buffered(
    edge: Edge, echo: tuple[ServerThread, UpstreamApp]
) -> None:
    """The upstream sends event n+1 only once the test has received event n (or 3 s later)."""
    _, upstream = echo
    already = len(upstream.sse_waited)
    visitor = edge.visitor()
    received: list[tuple[str, float]] = []
    try:
        with visitor.http.stream("GET", f"{edge.url}/echo/sse", params={"events": "4"}, headers=CSRF) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data: event "):
                    index = int(line.removeprefix("data: event "))
                    received.append((line, time.monotonic()))
                    upstream.sse_acks[index].set()
    finally:
        visitor.close()
    assert [line for line, _ in received] == [f"data: event {i}" for i in range(4)]
    # Every event reached the client while the upstream was still holding back the next one.
    assert upstream.sse_waited[already:] == [True, True, True, True]


def test_cross_site_websocket_upgrade_through_caddy_is_refused_with_403(edge: Edge) -> None:
    context: ssl.SSLContext = edge.caddy.ssl_context()
    url = f"wss://{edge.host}/echo/ws"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, ssl=context, origin=Origin("https://evil.example"), open_timeout=10).close()
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body or b"{}")["error"] == "origin_rejected"
    # The same upgrade from the BFF's own origin goes through Caddy and the BFF to the upstream.
    with connect(url, ssl=context, origin=Origin(edge.url), open_timeout=10) as socket:
        socket.send("hello through caddy")
        assert socket.recv(timeout=5) == "hello through caddy"
