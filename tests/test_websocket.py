"""WebSocket upgrades through the proxy: echo both ways, close codes, the Origin allowlist and the
bearer token on the upgrade, against a real uvicorn upstream over TCP."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from bff.config import RouteSettings
from bff.errors import NotAuthenticated
from tests.fakes import FakeBearer
from tests.support.processes import free_port
from tests.support.upstreams import UpstreamApp, make_settings, proxy_server

ORIGIN = {"origin": "http://127.0.0.1:8000"}  # the default public_url's origin


def ws_route(upstream: Any, **options: Any) -> RouteSettings:
    url = upstream if isinstance(upstream, str) else upstream[0].url
    return RouteSettings(path=options.pop("path", "/api"), upstream=url, **options)


@pytest.mark.usefixtures("up")
async def test_text_and_binary_messages_are_relayed_both_ways(upstream: Any) -> None:
    settings = make_settings(ws_route(upstream, strip_prefix=True))
    with proxy_server(settings) as (proxy, _, _):
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(proxy.url + "/api/ws?room=1", headers=ORIGIN, protocols=("chat",)) as ws,
        ):
            assert ws.protocol == "chat"
            await ws.send_str("hello")
            assert await ws.receive_str(timeout=5) == "hello"
            await ws.send_bytes(b"\x00\x01\xff")
            assert await ws.receive_bytes(timeout=5) == b"\x00\x01\xff"
            big = "x" * 1_000_000
            await ws.send_str(big)
            assert await ws.receive_str(timeout=5) == big
            await ws.send_str("path")
            assert await ws.receive_str(timeout=5) == "/ws?room=1"


@pytest.mark.usefixtures("up")
async def test_upstream_close_code_and_reason_reach_the_browser(upstream: Any) -> None:
    with proxy_server(make_settings(ws_route(upstream))) as (proxy, _, metrics):
        async with aiohttp.ClientSession() as session, session.ws_connect(proxy.url + "/api/ws", headers=ORIGIN) as ws:
            await ws.send_str("close:4001")
            message = await ws.receive(timeout=5)
            assert message.type is aiohttp.WSMsgType.CLOSE
            assert message.data == 4001
            assert message.extra == "bye"
    assert metrics.value("bff_proxy_requests_total", route="/api", status="101") == 1


async def test_browser_close_code_reaches_the_upstream(upstream: Any, up: UpstreamApp) -> None:
    with proxy_server(make_settings(ws_route(upstream))) as (proxy, _, _):
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(proxy.url + "/api/ws", headers=ORIGIN)
            await ws.send_str("ping")
            assert await ws.receive_str(timeout=5) == "ping"
            await ws.close(code=4002, message=b"done")
            assert ws.close_code == 4002
    assert up.websocket_headers[-1] == {"closed": "4002"}


async def test_upgrade_headers_are_cleaned_and_carry_the_bearer_token(upstream: Any, up: UpstreamApp) -> None:
    bearer = FakeBearer(first="ws-token")
    with proxy_server(make_settings(ws_route(upstream, token="user")), bearer_source=bearer) as (proxy, _, _):
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                proxy.url + "/api/ws",
                headers={**ORIGIN, "cookie": "bff=sid; theme=dark", "authorization": "Bearer browser"},
            ) as ws,
        ):
            await ws.send_str("x")
            assert await ws.receive_str(timeout=5) == "x"
    seen = up.websocket_headers[0]
    assert seen["authorization"] == "Bearer ws-token"
    assert "cookie" not in seen
    assert seen["origin"] == ORIGIN["origin"]
    assert seen["x-forwarded-for"] == "127.0.0.1"


@pytest.mark.parametrize(
    "headers", [{"origin": "https://evil.example"}, {"origin": "null"}, {**ORIGIN, "sec-fetch-site": "cross-site"}]
)
async def test_cross_site_upgrade_gets_403(upstream: Any, up: UpstreamApp, headers: dict[str, str]) -> None:
    with proxy_server(make_settings(ws_route(upstream))) as (proxy, _, _):
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await session.ws_connect(proxy.url + "/api/ws", headers=headers)
    assert caught.value.status == 403
    assert up.websocket_headers == []


@pytest.mark.usefixtures("up")
async def test_allowed_origins_replace_the_default(upstream: Any) -> None:
    settings = make_settings(ws_route(upstream), allowed_origins=("http://localhost:5173",))
    with proxy_server(settings) as (proxy, _, _):
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(proxy.url + "/api/ws", headers={"origin": "http://localhost:5173"}) as ws:
                await ws.send_str("ok")
                assert await ws.receive_str(timeout=5) == "ok"
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(proxy.url + "/api/ws", headers=ORIGIN)


@pytest.mark.usefixtures("up")
async def test_refused_upgrades_answer_with_the_error_status(upstream: Any) -> None:
    bearer = FakeBearer(error=NotAuthenticated("sign in first"))
    settings = make_settings(
        ws_route(upstream, token="user"), ws_route(f"http://127.0.0.1:{free_port()}", path="/down")
    )
    with proxy_server(settings, bearer_source=bearer) as (proxy, _, _):
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as anonymous:
                await session.ws_connect(proxy.url + "/api/ws", headers=ORIGIN)
            with pytest.raises(aiohttp.WSServerHandshakeError) as down:
                await session.ws_connect(proxy.url + "/down/ws", headers=ORIGIN)
    assert anonymous.value.status == 401
    assert down.value.status == 502


async def test_routes_without_websocket_leave_upgrades_to_the_fallback(upstream: Any, up: UpstreamApp) -> None:
    with proxy_server(make_settings(ws_route(upstream, websocket=False))) as (proxy, _, _):
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await session.ws_connect(proxy.url + "/api/ws", headers=ORIGIN)
    assert caught.value.status == 403  # the test fallback closes before accepting
    assert up.websocket_headers == []


@pytest.mark.usefixtures("up")
async def test_an_idle_websocket_outlives_the_read_timeout(upstream: Any) -> None:
    with proxy_server(make_settings(ws_route(upstream, read_timeout=0.3))) as (proxy, _, _):
        async with aiohttp.ClientSession() as session, session.ws_connect(proxy.url + "/api/ws", headers=ORIGIN) as ws:
            await asyncio.sleep(0.8)
            await ws.send_str("still here")
            assert await ws.receive_str(timeout=5) == "still here"
