"""`bff.server_protocol`: a response's head goes out with its first body chunk, and is never held
back from a streamed answer, a `100 Continue` or a closing connection. A real uvicorn serves with
`bff serve`'s options; a raw socket reads what it wrote."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from bff.server import SERVER_OPTIONS
from bff.server_protocol import HeadWithBody, HttpProtocol
from tests.support.processes import free_port
from tests.support.server_thread import UvicornThread
from tests.support.upstreams import read_body


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    body = await read_body(receive)
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await asyncio.sleep(0.5)
        await send({"type": "http.response.body", "body": b"late", "more_body": False})
        return
    answer = body or b"small"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]})
    await send({"type": "http.response.body", "body": answer, "more_body": False})


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    thread = UvicornThread(app, port=free_port(), name="protocol test", log_level="warning", **SERVER_OPTIONS)
    thread.start()
    yield thread
    thread.stop()


def test_bff_serve_runs_this_protocol() -> None:
    assert SERVER_OPTIONS["http"] is HttpProtocol


async def test_small_answers_arrive_whole_on_a_kept_alive_connection(server: UvicornThread) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for _ in range(3):
        writer.write(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
        assert await reader.readexactly(5) == b"small"
    writer.close()


async def test_a_streamed_answers_head_is_not_held_until_its_body(server: UvicornThread) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert time.monotonic() - started < 0.4  # the body comes 0.5 s after the head
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in head
    assert await reader.readuntil(b"0\r\n\r\n") == b"4\r\nlate\r\n0\r\n\r\n"
    writer.close()


async def test_a_100_continue_is_sent_before_the_body_is_read(server: UvicornThread) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"ping")
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"
    assert await reader.readexactly(4) == b"ping"
    writer.close()


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, data: tuple[bytes, ...]) -> None:
        self.calls.append(("writelines", data))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


async def test_only_the_first_write_is_held_and_close_sends_it_first() -> None:
    transport = RecordingTransport()
    joined = HeadWithBody(transport)  # type: ignore[arg-type]
    joined.write(b"head")
    joined.write(b"body")
    joined.write(b"more")
    await asyncio.sleep(0)
    assert transport.calls == [("writelines", (b"head", b"body")), ("write", b"more")]

    transport = RecordingTransport()
    closed = HeadWithBody(transport)  # type: ignore[arg-type]
    closed.write(b"head")
    closed.close()
    await asyncio.sleep(0)
    assert transport.calls == [("write", b"head"), ("close", None)]
