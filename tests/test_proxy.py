"""ProxyApp under real uvicorn, in front of real upstreams on loopback ports, over TCP.

The echo upstream answers with the request it saw, so header tests assert on what arrived.
Requests whose path a client library would normalise (`..`, `%2e`) go over a raw socket.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bff.config import RouteSettings
from bff.errors import NotAuthenticated, SessionExpired
from bff.metrics import Metrics
from bff.proxy import ProxyApp
from tests.fakes import FakeBearer
from tests.support.processes import free_port
from tests.support.upstreams import (
    RawServer,
    ServerThread,
    UpstreamApp,
    make_settings,
    proxy_server,
    reset_mid_body,
    silent,
    two_connection_lines,
)

CSRF = {"x-csrf": "1"}


def route(upstream: tuple[ServerThread, UpstreamApp] | str, **options: Any) -> RouteSettings:
    url = upstream if isinstance(upstream, str) else upstream[0].url
    return RouteSettings(path=options.pop("path", "/api"), upstream=url, **options)


def headers_of(seen: dict[str, Any]) -> dict[str, str]:
    names = [name for name, _ in seen["headers"]]
    assert len(names) == len(set(names)), f"repeated headers: {names}"
    return {name: value for name, value in seen["headers"]}


async def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request written by hand; `Connection: close` and read to the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.replace("\n", "\r\n").encode("latin-1") + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head_bytes, _, rest = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, rest


def get(path: str, *extra: str) -> str:
    return (
        f"GET {path} HTTP/1.1\nHost: 127.0.0.1\nX-CSRF: 1\nConnection: close\n"
        + "".join(e + "\n" for e in extra)
        + "\n"
    )


# --- routing and paths -------------------------------------------------------------------------


@pytest.mark.usefixtures("up")
async def test_routes_match_by_longest_prefix_on_segment_boundaries(upstream: Any) -> None:
    settings = make_settings(route(upstream, path="/api"), route(upstream, path="/api/v2", strip_prefix=True))
    with proxy_server(settings) as (proxy, _, metrics):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            assert (await client.get("/api")).json()["path"] == "/api"
            assert (await client.get("/api/x")).json()["path"] == "/api/x"
            assert (await client.get("/api/v2/items")).json()["path"] == "/items"
            assert (await client.get("/api/v2")).json()["path"] == "/"
            assert (await client.get("/api/v2x")).json()["path"] == "/api/v2x"
            apix = await client.get("/apix")
            assert apix.status_code == 404
            assert apix.json() == {"fallback": True}
    assert metrics.value("bff_proxy_requests_total", route="/api", status="200") == 3
    assert metrics.value("bff_proxy_requests_total", route="/api/v2", status="200") == 2


@pytest.mark.usefixtures("up")
async def test_upstream_base_path_strip_prefix_and_encoding_are_kept(upstream: Any) -> None:
    settings = make_settings(route(upstream[0].url + "/base/", strip_prefix=True))
    with proxy_server(settings) as (proxy, _, _):
        status, _, body = await raw_request(proxy.port, get("/api/a%20b/c%3Fd;e=1?x=%2F&y=%C3%A9&z"))
        seen = json.loads(body)
        assert status == 200
        assert seen["raw_path"] == "/base/a%20b/c%3Fd;e=1"
        assert seen["query"] == "x=%2F&y=%C3%A9&z"
        status, _, body = await raw_request(proxy.port, get("/api"))
        assert json.loads(body)["raw_path"] == "/base"


@pytest.mark.parametrize(
    "path",
    [
        "/api/../secret",
        "/api/x/../../secret",
        "/api/./x",
        "/api/%2e%2e/secret",
        "/api/%2E%2e/secret",
        "/api/.%2e/secret",
        "/api/%252e%252e/secret",
        "/api/..;/secret",
        "/api/a%2fb",
        "/api/a%2Fb",
        "/api/a%5cb",
        "/api/a\\..\\b",
        "/api/%00",
        "/api/..",
    ],
)
async def test_path_traversal_is_rejected_before_routing(upstream: Any, up: UpstreamApp, path: str) -> None:
    with proxy_server(make_settings(route(upstream))) as (proxy, _, _):
        status, headers, body = await raw_request(proxy.port, get(path))
    assert status == 400, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "bad_request"
    assert up.requests == []


@pytest.mark.usefixtures("up")
async def test_routing_uses_the_decoded_path_and_strips_whole_segments(upstream: Any) -> None:
    with proxy_server(make_settings(route(upstream, strip_prefix=True))) as (proxy, _, _):
        status, _, body = await raw_request(proxy.port, get("/ap%69/x%20y"))
    assert status == 200
    assert json.loads(body)["raw_path"] == "/x%20y"


@pytest.mark.usefixtures("up")
async def test_doubled_slashes_collapse_before_routing(upstream: Any) -> None:
    with proxy_server(make_settings(route(upstream, strip_prefix=True))) as (proxy, _, _):
        status, _, body = await raw_request(proxy.port, get("//api//x///y/"))
    assert status == 200
    assert json.loads(body)["raw_path"] == "/x/y/"


# --- header hygiene ----------------------------------------------------------------------------


@pytest.mark.usefixtures("up")
async def test_request_headers_are_cleaned_before_the_upstream(upstream: Any) -> None:
    settings = make_settings(route(upstream), public_url="https://app.example.com", trusted_proxies=())
    with proxy_server(settings) as (proxy, _, _):
        status, _, body = await raw_request(
            proxy.port,
            get(
                "/api/echo",
                "Authorization: Bearer from-the-browser",
                "Cookie: __Host-bff=session-value; theme=dark",
                "Connection: close, X-Private",
                "X-Private: hidden",
                "Keep-Alive: timeout=5",
                "TE: trailers",
                "Proxy-Authorization: Basic eA==",
                "X-Forwarded-For: 6.6.6.6",
                "X-Forwarded-Host: evil.example",
                "X-Forwarded-Proto: http",
                "X-Custom: kept",
            ),
        )
    assert status == 200
    seen = headers_of(json.loads(body))
    assert seen == {
        "host": upstream[0].url.removeprefix("http://"),
        "x-csrf": "1",
        "x-custom": "kept",
        "x-forwarded-for": "127.0.0.1",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "app.example.com",
    }
    # Nothing the browser did not send: no Accept-Encoding, User-Agent, Accept or Content-Type.


async def raw_exchange(port: int, request: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """Write `request` as given, read to the end: the status line, every header line in order
    (nothing merged or lowercased) and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, [(name, value) for name, _, value in (line.partition(b": ") for line in lines)], body


@pytest.mark.parametrize("http", ["httptools", "h11"])
async def test_headers_named_in_any_connection_line_do_not_reach_the_upstream(
    upstream: Any, up: UpstreamApp, http: str
) -> None:
    settings = make_settings(route(upstream), public_url="https://app.example.com")
    with proxy_server(settings, http=http) as (proxy, _, _):
        status, _, body = await raw_exchange(
            proxy.port,
            b"GET /api/echo HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n"
            b"X-CSRF: 1\r\n"
            b"Connection: X-Remove-Me\r\n"
            b"Connection: close\r\n"
            b"X-Remove-Me: secret\r\n"
            b"X-Kept: yes\r\n"
            b"\r\n",
        )
    assert status == b"HTTP/1.1 200 OK", body
    assert len(up.requests) == 1
    assert up.requests[0]["headers"] == [
        ["host", upstream[0].url.removeprefix("http://")],
        ["x-csrf", "1"],
        ["x-kept", "yes"],
        ["x-forwarded-for", "127.0.0.1"],
        ["x-forwarded-proto", "https"],
        ["x-forwarded-host", "app.example.com"],
    ]


async def test_headers_named_in_any_upstream_connection_line_do_not_reach_the_browser() -> None:
    with RawServer(two_connection_lines) as server, proxy_server(make_settings(route(server.url))) as (proxy, _, _):
        status, headers, body = await raw_exchange(
            proxy.port, b"GET /api/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-CSRF: 1\r\nConnection: close\r\n\r\n"
        )
    assert status == b"HTTP/1.1 200 OK"
    assert headers == [
        (b"content-type", b"text/plain"),
        (b"x-kept", b"yes"),
        (b"content-length", b"2"),
        (b"connection", b"close"),  # uvicorn's own, answering the browser's Connection: close
    ]
    assert body == b"ok"


@pytest.mark.usefixtures("up")
async def test_forwarded_for_is_appended_behind_a_trusted_proxy(upstream: Any) -> None:
    with proxy_server(make_settings(route(upstream), trusted_proxies=("127.0.0.1",))) as (proxy, _, _):
        _, _, body = await raw_request(proxy.port, get("/api/echo", "X-Forwarded-For: 203.0.113.7"))
    assert headers_of(json.loads(body))["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"


@pytest.mark.usefixtures("up")
async def test_other_cookies_and_host_are_forwarded_when_configured(upstream: Any) -> None:
    settings = make_settings(route(upstream, forward_cookies=True, preserve_host=True))
    with proxy_server(settings) as (proxy, _, _):
        _, _, body = await raw_request(
            proxy.port,
            get("/api/echo", "Cookie: bff=sid; theme=dark; bff-login=state; lang=en").replace(
                "Host: 127.0.0.1", "Host: app.example.com"
            ),
        )
    seen = headers_of(json.loads(body))
    assert seen["cookie"] == "theme=dark; lang=en"
    assert seen["host"] == "app.example.com"


@pytest.mark.usefixtures("up")
async def test_response_headers_are_cleaned_and_bff_cookies_cannot_be_set(upstream: Any) -> None:
    with proxy_server(make_settings(route(upstream))) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.get("/api/cookies")
    assert response.status_code == 200
    assert response.headers.get_list("set-cookie") == [
        "theme=dark; Path=/",
        "lang=en; Path=/",
        "BFF=kept-other-case",
        "bffx=kept",
    ]
    assert response.headers["x-kept"] == "yes"
    assert "x-hop" not in response.headers
    assert "keep-alive" not in response.headers


@pytest.mark.usefixtures("up")
async def test_the_bearer_sources_cookies_ride_on_the_upstreams_answer_after_its_own(upstream: Any) -> None:
    refreshed = "bff=resealed; Max-Age=60; Path=/; HttpOnly; SameSite=Strict"
    bearer = FakeBearer(first="abc", set_cookies=[refreshed])
    with proxy_server(make_settings(route(upstream, token="user")), bearer_source=bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.get("/api/cookies")
    assert response.headers.get_list("set-cookie") == [
        "theme=dark; Path=/",
        "lang=en; Path=/",
        "BFF=kept-other-case",
        "bffx=kept",
        refreshed,
    ]


@pytest.mark.usefixtures("up")
async def test_the_cookies_of_the_replayed_attempts_bearer_are_the_ones_sent(upstream: Any) -> None:
    bearer = FakeBearer(set_cookies=["bff=after-refresh; Path=/"])
    with proxy_server(make_settings(route(upstream, token="user")), bearer_source=bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.post("/api/auth", content=b"payload")
    assert response.status_code == 200
    assert bearer.rejected == ["stale"]
    assert response.headers.get_list("set-cookie") == ["bff=after-refresh; Path=/"]


@pytest.mark.usefixtures("up")
async def test_encoded_bodies_pass_untouched(upstream: Any) -> None:
    with proxy_server(make_settings(route(upstream))) as (proxy, _, _):
        status, headers, body = await raw_request(proxy.port, get("/api/gzip"))
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(body)
    assert gzip.decompress(body) == b"compressible " * 1000


@pytest.mark.usefixtures("up")
async def test_post_body_and_method_pass_through(upstream: Any) -> None:
    with proxy_server(make_settings(route(upstream))) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.request(
                "PATCH", "/api/echo", content=b"\x00\xffbody", headers={"content-type": "x/y"}
            )
            seen = response.json()
            assert seen["method"] == "PATCH"
            assert seen["body"] == "\x00\xffbody"
            assert headers_of(seen)["content-length"] == "6"
            assert headers_of(seen)["content-type"] == "x/y"

            async def chunks() -> AsyncIterator[bytes]:
                yield b"part1-"
                yield b"part2"

            chunked = (await client.post("/api/echo", content=chunks())).json()
            assert chunked["body"] == "part1-part2"
            assert headers_of(chunked)["transfer-encoding"] == "chunked"
            head = await client.head("/api/bytes?n=5000")
            assert head.status_code == 200
            assert head.content == b""


# --- anti-forgery ------------------------------------------------------------------------------


async def test_missing_anti_forgery_header_is_rejected(upstream: Any, up: UpstreamApp) -> None:
    settings = make_settings(route(upstream), route(upstream, path="/open", csrf=False))
    with proxy_server(settings) as (proxy, _, metrics):
        async with httpx.AsyncClient(base_url=proxy.url) as client:
            response = await client.post("/api/echo", content=b"x")
            assert response.status_code == 403
            assert response.json() == {"error": "csrf_rejected", "detail": "header 'X-CSRF' must be '1'"}
            cross = await client.get("/api/echo", headers={**CSRF, "sec-fetch-site": "cross-site"})
            assert cross.status_code == 403
            assert cross.json()["error"] == "origin_rejected"
            foreign = await client.get("/api/echo", headers={**CSRF, "origin": "https://evil.example"})
            assert foreign.status_code == 403
            assert foreign.json()["error"] == "origin_rejected"
            assert (await client.get("/open/echo")).status_code == 200
    assert up.requests
    assert all(seen["path"] == "/open/echo" for seen in up.requests)
    assert metrics.value("bff_proxy_requests_total", route="/api", status="403") == 3


# --- bearer tokens and replay ------------------------------------------------------------------


async def test_request_is_replayed_once_with_the_identical_body_after_a_401(upstream: Any, up: UpstreamApp) -> None:
    bearer = FakeBearer()
    body = bytes(range(256)) * 100
    with proxy_server(make_settings(route(upstream, token="user")), bearer_source=bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.post("/api/auth", content=body, headers={"authorization": "Bearer browser"})
    assert response.status_code == 200
    assert response.json() == {"ok": True, "length": len(body)}
    assert [seen["authorization"] for seen in up.requests] == ["Bearer stale", "Bearer fresh"]
    assert [seen["body"] for seen in up.requests] == [body, body]
    assert bearer.rejected == ["stale"]


async def test_large_replay_buffers_are_replayed_identically(upstream: Any, up: UpstreamApp) -> None:
    body = bytes(range(256)) * 10000  # 2.5 MB
    settings = make_settings(route(upstream, token="user"), max_replay_body=4 * 1024 * 1024)
    with proxy_server(settings, bearer_source=FakeBearer()) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.put("/api/auth", content=body)
    assert response.status_code == 200
    assert [seen["body"] == body for seen in up.requests] == [True, True]


async def test_bodies_over_the_replay_limit_are_sent_once_and_the_401_reaches_the_browser(
    upstream: Any, up: UpstreamApp
) -> None:
    bearer = FakeBearer()
    settings = make_settings(route(upstream, token="user"), max_replay_body=1024)
    with proxy_server(settings, bearer_source=bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.post("/api/auth", content=b"x" * 4096)
            assert response.status_code == 401

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(4):
                    yield b"y" * 1000

            streamed = await client.post("/api/auth", content=chunks())
            assert streamed.status_code == 401
            small_chunked = await client.post("/api/auth", content=_once(b"z" * 100))
            assert small_chunked.status_code == 200
    assert [len(seen["body"]) for seen in up.requests] == [4096, 4000, 100, 100]
    assert bearer.rejected == ["stale"]


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_no_replay_when_the_bearer_source_has_nothing_better(upstream: Any, up: UpstreamApp) -> None:
    bearer = FakeBearer(after=None)
    with proxy_server(make_settings(route(upstream, token="user")), bearer_source=bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.get("/api/auth")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert len(up.requests) == 1


async def test_bearer_errors_become_json_with_their_headers(upstream: Any, up: UpstreamApp) -> None:
    expired = SessionExpired("session ended", headers=[("set-cookie", "bff=; Max-Age=0; Path=/")])
    for error, status, code in [
        (NotAuthenticated("sign in first"), 401, "not_authenticated"),
        (expired, 401, "session_expired"),
    ]:
        bearer = FakeBearer(error=error)
        with proxy_server(make_settings(route(upstream, token="user")), bearer_source=bearer) as (proxy, _, _):
            async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
                response = await client.get("/api/echo")
        assert response.status_code == status
        assert response.json()["error"] == code
    assert response.headers["set-cookie"] == "bff=; Max-Age=0; Path=/"
    assert up.requests == []


@pytest.mark.usefixtures("up")
async def test_token_none_routes_never_ask_the_bearer_source(upstream: Any) -> None:
    bearer = FakeBearer()
    with proxy_server(make_settings(route(upstream)), bearer_source=bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            seen = (await client.get("/api/echo", headers={"authorization": "Bearer browser"})).json()
    assert "authorization" not in headers_of(seen)
    assert bearer.calls == []


@pytest.mark.usefixtures("up")
async def test_bearer_token_is_set_on_the_upstream_request(upstream: Any) -> None:
    bearer = FakeBearer(first="abc")
    with proxy_server(make_settings(route(upstream, token="client")), bearer_source=bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            seen = (await client.get("/api/echo", headers={"authorization": "Bearer browser"})).json()
    assert headers_of(seen)["authorization"] == "Bearer abc"


async def test_a_token_with_a_line_break_never_reaches_the_upstream(upstream: Any, up: UpstreamApp) -> None:
    bearer = FakeBearer(first="abc\r\nx-injected: 1")
    with proxy_server(make_settings(route(upstream, token="client")), bearer_source=bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.get("/api/echo")
    assert response.status_code == 500
    assert response.json() == {"error": "server_error", "detail": "route '/api': proxy error"}
    assert up.client_ports == []  # no request reached it


async def test_request_body_over_the_limit_gets_413(upstream: Any, up: UpstreamApp) -> None:
    settings = make_settings(route(upstream), max_request_body=1000)
    with proxy_server(settings) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.post("/api/echo", content=b"x" * 1001)
            assert response.status_code == 413
            assert response.json()["error"] == "payload_too_large"
            chunked = await client.post("/api/count", content=_chunks(b"x" * 600, 3))
            assert chunked.status_code == 413
            assert (await client.post("/api/echo", content=b"x" * 1000)).status_code == 200
    assert len(up.requests) == 1


async def test_oversized_request_headers_get_431_and_reach_nothing(upstream: Any, up: UpstreamApp) -> None:
    settings = make_settings(route(upstream), max_header_size=8192)
    with proxy_server(settings) as (proxy, _, _):
        status, _, body = await raw_request(proxy.port, get("/api/echo", "Cookie: a=" + "x" * 9000))
        assert status == 431
        assert json.loads(body)["error"] == "headers_too_large"
        status, _, _ = await raw_request(proxy.port, get("/anything-else", "X-Big: " + "x" * 9000))
        assert status == 431  # the BFF's own endpoints are behind the same guard
        status, _, _ = await raw_request(proxy.port, get("/api/echo", "X-Fine: " + "x" * 7000))
        assert status == 200
    assert len(up.requests) == 1


async def _chunks(data: bytes, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield data
        await asyncio.sleep(0.01)


# --- upstream failures -------------------------------------------------------------------------


async def test_upstream_down_gives_502_naming_the_route() -> None:
    settings = make_settings(
        route(f"http://127.0.0.1:{free_port()}"), route("http://nonexistent.invalid:9", path="/dns")
    )
    with proxy_server(settings) as (proxy, _, metrics):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF, timeout=10) as client:
            refused = await client.get("/api/x")
            unknown = await client.get("/dns/x")
    assert refused.status_code == 502
    assert refused.json() == {"error": "upstream_unavailable", "detail": "route '/api': cannot connect to the upstream"}
    assert unknown.status_code == 502
    assert unknown.json()["detail"].startswith("route '/dns':")
    assert metrics.value("bff_proxy_requests_total", route="/api", status="502") == 1


@pytest.mark.usefixtures("up")
async def test_slow_upstream_gives_504(upstream: Any) -> None:
    with RawServer(silent) as mute:
        settings = make_settings(route(upstream, read_timeout=0.5), route(mute.url, path="/mute", read_timeout=0.5))
        with proxy_server(settings) as (proxy, _, _):
            async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF, timeout=10) as client:
                started = time.monotonic()
                slow = await client.get("/api/slow?delay=3")
                silent_answer = await client.get("/mute/x")
                elapsed = time.monotonic() - started
    assert slow.status_code == 504
    assert slow.json() == {"error": "upstream_timeout", "detail": "route '/api': the upstream did not answer in time"}
    assert silent_answer.status_code == 504
    assert elapsed < 2.5


@pytest.mark.usefixtures("up")
async def test_a_request_beyond_max_connections_waits_then_gets_504(upstream: Any) -> None:
    settings = make_settings(route(upstream, max_connections=1, connect_timeout=0.2, read_timeout=0.5))
    with proxy_server(settings) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF, timeout=10) as client:
            async with client.stream("GET", "/api/endless") as holding:  # holds the one connection
                assert holding.status_code == 200
                started = time.monotonic()
                waited = await client.get("/api/x")
                elapsed = time.monotonic() - started
            after = await client.get("/api/x")
    assert waited.status_code == 504
    assert waited.json() == {"error": "upstream_timeout", "detail": "route '/api': the upstream did not answer in time"}
    assert 0.7 <= elapsed < 2  # connect_timeout + read_timeout
    assert after.status_code == 200


async def test_upstream_reset_mid_body_aborts_the_browser_connection() -> None:
    with RawServer(reset_mid_body) as server, proxy_server(make_settings(route(server.url))) as (proxy, _, metrics):
        async with (
            httpx.AsyncClient(base_url=proxy.url, headers=CSRF, timeout=10) as client,
            client.stream("GET", "/api/download") as response,
        ):
            assert response.status_code == 200
            received = bytearray()
            with pytest.raises(httpx.RemoteProtocolError):
                await read_into(response, received)
    assert 0 < len(received) < 1000000
    assert metrics.value("bff_proxy_requests_total", route="/api", status="200") == 1


async def test_client_disconnect_mid_download_cancels_the_upstream_request(upstream: Any, up: UpstreamApp) -> None:
    with proxy_server(make_settings(route(upstream))) as (proxy, app, metrics):
        async with (
            httpx.AsyncClient(base_url=proxy.url, headers=CSRF, timeout=10) as client,
            client.stream("GET", "/api/endless") as response,
        ):
            async for _ in response.aiter_raw():
                break
        assert await asyncio.to_thread(up.disconnected.wait, 5), "the upstream never saw the disconnect"
        await _until(lambda: _acquired(app) == 0)
    await _until(lambda: metrics.value("bff_proxy_requests_total", route="/api", status="499") == 1)


async def test_connections_to_the_upstream_are_kept_alive_and_reused(upstream: Any, up: UpstreamApp) -> None:
    with proxy_server(make_settings(route(upstream))) as (proxy, app, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            for _ in range(5):
                assert (await client.get("/api/echo")).status_code == 200
            await client.post("/api/echo", content=b"x" * 10000)
            await client.get("/api/bytes?n=300000")
            await client.get("/api/echo")
        assert _acquired(app) == 0
    assert len(up.client_ports) == 8
    assert len(set(up.client_ports)) == 1


async def test_requests_before_start_fail_cleanly(upstream: Any) -> None:
    app = ProxyApp(make_settings(route(upstream)), bearer_source=None, fallback=_unused, metrics=Metrics())
    with ServerThread(app) as server:
        async with httpx.AsyncClient(base_url=server.url, headers=CSRF) as client:
            response = await client.get("/api/x")
    assert response.status_code == 502


async def _unused(_scope: Any, _receive: Any, _send: Any) -> None:
    raise AssertionError("fallback called")


async def read_into(response: httpx.Response, received: bytearray) -> None:
    """Read the body into `received` chunk by chunk, so what arrived before a failure is kept."""
    async for chunk in response.aiter_raw():
        received.extend(chunk)


def _acquired(app: ProxyApp) -> int:
    return app.connections_in_use()["/api"]


async def _until(condition: Any, within: float = 5) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.usefixtures("up")
async def test_client_disconnect_mid_upload_cancels_the_upstream_request(upstream: Any) -> None:
    with proxy_server(make_settings(route(upstream))) as (proxy, app, metrics):
        _reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        head = "POST /api/count HTTP/1.1\r\nHost: x\r\nX-CSRF: 1\r\nContent-Length: 10000000\r\n\r\n"
        writer.write(head.encode() + b"x" * 100000)
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await _until(lambda: metrics.value("bff_proxy_requests_total", route="/api", status="499") == 1)
        await _until(lambda: _acquired(app) == 0)


@pytest.mark.usefixtures("up")
async def test_unexpected_errors_before_the_response_are_json_500(upstream: Any) -> None:
    bearer = FakeBearer(error=RuntimeError("bug"))
    with proxy_server(make_settings(route(upstream, token="user")), bearer_source=bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.get("/api/echo")
    assert response.status_code == 500
    assert response.json() == {"error": "server_error", "detail": "route '/api': proxy error"}
