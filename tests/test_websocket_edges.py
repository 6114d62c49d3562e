"""The WebSocket relay in-process, against a scripted upstream: an upstream that refuses, times out
or cannot be reached; a browser that leaves before the accept; text, binary and empty messages;
close codes that cannot travel in a close frame; an upstream that drops; a stream ended by its
session, and the `bff_open_streams` gauge while a relay runs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, cast

import aiohttp
import pytest
from starlette.types import Message
from yarl import URL

from bff.errors import UpstreamUnavailable
from bff.metrics import Metrics
from bff.session import Session
from bff.streams import SESSION_ENDED, OpenStreams
from bff.websocket import CLIENT_CLOSED, deny, relay

CONNECT: Message = {"type": "websocket.connect"}
DENIAL: dict[str, Any] = {"websocket.http.response": {}}


class Upstream:
    """A scripted `aiohttp.ClientWebSocketResponse`: answers `messages`, then waits forever."""

    def __init__(
        self,
        messages: tuple[aiohttp.WSMessage, ...] = (),
        *,
        protocol: str | None = None,
        close_code: int | None = None,
    ) -> None:
        self.messages: asyncio.Queue[aiohttp.WSMessage] = asyncio.Queue()
        for message in messages:
            self.messages.put_nowait(message)
        self.protocol = protocol
        self.close_code = close_code
        self.sent: list[str | bytes] = []
        self.closes: list[tuple[int, bytes]] = []

    async def receive(self) -> aiohttp.WSMessage:
        return await self.messages.get()

    async def send_str(self, data: str) -> None:
        self.sent.append(data)

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closes.append((code, message))
        return True


class Connector:
    """A scripted `aiohttp.ClientSession`: `ws_connect` raises `error` or answers `upstream`."""

    def __init__(self, upstream: Upstream | None = None, error: BaseException | None = None) -> None:
        self.upstream = upstream
        self.error = error
        self.calls: list[dict[str, Any]] = []

    async def ws_connect(self, url: URL, **options: Any) -> Upstream:
        self.calls.append({"url": url, **options})
        if self.error is not None:
            raise self.error
        assert self.upstream is not None
        return self.upstream


class Browser:
    """The ASGI side: `receive` answers `incoming`, then waits forever; `send` records."""

    def __init__(self, incoming: list[Message]) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        for message in incoming:
            self.incoming.put_nowait(message)
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)


@dataclasses.dataclass
class Owner:
    key: str
    expires_at: float


def msg(kind: aiohttp.WSMsgType, data: Any = None, extra: Any = None) -> aiohttp.WSMessage:
    return aiohttp.WSMessage(kind, data, extra)


async def run(
    connector: Connector,
    browser: Browser,
    *,
    extensions: dict[str, Any] | None = None,
    **options: Any,
) -> int:
    scope: dict[str, Any] = {"type": "websocket", "subprotocols": ["chat", "v2"], "extensions": extensions or {}}
    return await asyncio.wait_for(
        relay(
            scope,
            browser.receive,
            browser.send,
            session=cast(aiohttp.ClientSession, connector),
            url=URL("ws://upstream.test/ws"),
            headers=[("authorization", "Bearer t")],
            route_path="/api",
            **options,
        ),
        timeout=5,
    )


async def test_an_upstream_refusing_the_upgrade_is_a_502_denial_response() -> None:
    error = aiohttp.WSServerHandshakeError(None, (), status=403, message="forbidden")  # type: ignore[arg-type]
    browser = Browser([CONNECT])
    assert await run(Connector(error=error), browser, extensions=DENIAL) == 502
    assert browser.sent == [
        {
            "type": "websocket.http.response.start",
            "status": 502,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"95"),
                (b"cache-control", b"no-store"),
            ],
        },
        {
            "type": "websocket.http.response.body",
            "body": b'{"error": "upstream_unavailable", '
            b'"detail": "route \'/api\': upstream refused the upgrade (403)"}',
        },
    ]


async def test_an_upstream_timing_out_is_a_504_or_a_policy_close_without_the_extension() -> None:
    browser = Browser([CONNECT])
    assert await run(Connector(error=TimeoutError()), browser, extensions=DENIAL) == 504
    assert browser.sent[0]["status"] == 504
    assert b"did not answer the upgrade in time" in browser.sent[1]["body"]

    browser = Browser([CONNECT])
    assert await run(Connector(error=aiohttp.ServerTimeoutError()), browser) == 504
    assert browser.sent == [{"type": "websocket.close", "code": 1008}]


async def test_an_unreachable_upstream_is_502_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    browser = Browser([CONNECT])
    with caplog.at_level(logging.WARNING, logger="bff.websocket"):
        status = await run(Connector(error=aiohttp.ClientConnectionError()), browser, extensions=DENIAL)
    assert status == 502
    assert b"cannot connect to the upstream" in browser.sent[1]["body"]
    assert "WebSocket upstream unavailable. route: '/api', error: ClientConnectionError" in caplog.text


async def test_deny_sends_nothing_to_a_browser_already_gone() -> None:
    browser = Browser([{"type": "websocket.disconnect", "code": 1006}])
    await deny({"type": "websocket", "extensions": DENIAL}, browser.receive, browser.send, UpstreamUnavailable("x"))
    assert browser.sent == []


async def test_the_upgrade_carries_headers_and_subprotocols_and_the_accept_carries_cookies() -> None:
    upstream = Upstream((msg(aiohttp.WSMsgType.CLOSE, 1000, "bye"),), protocol="v2", close_code=1000)
    connector = Connector(upstream)
    browser = Browser([CONNECT])
    assert await run(connector, browser, set_cookies=["s=1; Path=/"]) == 101
    call = connector.calls[0]
    assert call["url"] == URL("ws://upstream.test/ws")
    assert call["headers"] == [("authorization", "Bearer t")]
    assert call["protocols"] == ("chat", "v2")
    assert call["max_msg_size"] == 16 * 1024 * 1024
    assert browser.sent == [
        {"type": "websocket.accept", "subprotocol": "v2", "headers": [(b"set-cookie", b"s=1; Path=/")]},
        {"type": "websocket.close", "code": 1000, "reason": "bye"},
    ]
    assert upstream.closes[-1] == (1000, b"")  # always closed on the way out


async def test_a_browser_gone_before_the_accept_is_499_and_the_upstream_closed() -> None:
    upstream = Upstream()
    browser = Browser([{"type": "websocket.disconnect", "code": 1001}])
    assert await run(Connector(upstream), browser) == CLIENT_CLOSED
    assert browser.sent == []
    assert upstream.closes == [(1000, b"")]


async def test_upstream_text_and_binary_reach_the_browser_and_an_unsendable_close_becomes_1000() -> None:
    upstream = Upstream(
        (
            msg(aiohttp.WSMsgType.TEXT, "hello"),
            msg(aiohttp.WSMsgType.BINARY, b"\x00\xff"),
            msg(aiohttp.WSMsgType.CLOSE, 1006, None),
        ),
        close_code=1006,
    )
    browser = Browser([CONNECT])
    assert await run(Connector(upstream), browser) == 101
    assert browser.sent[1:] == [
        {"type": "websocket.send", "text": "hello"},
        {"type": "websocket.send", "bytes": b"\x00\xff"},
        {"type": "websocket.close", "code": 1000, "reason": ""},
    ]
    assert "headers" not in browser.sent[0]


@pytest.mark.parametrize("kind", [aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED])
async def test_an_upstream_that_drops_closes_the_browser_with_1011(kind: aiohttp.WSMsgType) -> None:
    browser = Browser([CONNECT])
    assert await run(Connector(Upstream((msg(kind),))), browser) == 101
    assert browser.sent[-1] == {"type": "websocket.close", "code": 1011, "reason": ""}


async def test_an_upstream_closing_on_our_side_sends_the_browser_nothing_more() -> None:
    browser = Browser([CONNECT])
    assert await run(Connector(Upstream((msg(aiohttp.WSMsgType.CLOSING),))), browser) == 101
    assert [message["type"] for message in browser.sent] == ["websocket.accept"]


async def test_browser_messages_reach_the_upstream_and_its_leaving_is_1001() -> None:
    upstream = Upstream()
    browser = Browser(
        [
            CONNECT,
            {"type": "websocket.receive", "text": "hi"},
            {"type": "websocket.receive", "bytes": b"\x01"},
            {"type": "websocket.receive"},  # neither: an empty binary message
            {"type": "websocket.disconnect", "code": 1005},
        ]
    )
    assert await run(Connector(upstream), browser) == 101
    assert upstream.sent == ["hi", b"\x01", b""]
    assert upstream.closes == [(1001, b""), (1000, b"")]


async def test_the_browsers_close_code_and_reason_reach_the_upstream() -> None:
    upstream = Upstream()
    browser = Browser([CONNECT, {"type": "websocket.disconnect", "code": 4000, "reason": "done"}])
    assert await run(Connector(upstream), browser) == 101
    assert upstream.closes[0] == (4000, b"done")


async def test_a_tracked_relay_counts_in_the_gauge_and_ends_with_its_session() -> None:
    metrics = Metrics()
    streams = OpenStreams(metrics)
    upstream = Upstream()
    browser = Browser([CONNECT])
    owner = cast(Session, Owner("handle-1", 2e9))
    task = asyncio.ensure_future(run(Connector(upstream), browser, streams=streams, owner=owner))
    for _ in range(100):
        await asyncio.sleep(0)
        if len(streams):
            break
    assert len(streams) == 1
    assert metrics.value("bff_open_streams", kind="websocket") == 1
    assert streams.end({"handle-1"}, SESSION_ENDED) == 1
    assert await task == 101
    assert browser.sent[-1] == {"type": "websocket.close", "code": 4401, "reason": "session ended"}
    assert upstream.closes == [(1001, b""), (1000, b"")]
    assert metrics.value("bff_open_streams", kind="websocket") == 0
    assert len(streams) == 0
    await asyncio.wait_for(streams.closed(), 1)
