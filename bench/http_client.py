"""The client of the scenario benchmarks (bench/storm.py, bench/bodies.py): one HTTP/1.1
keep-alive connection per `Connection`, an asyncio protocol (uvloop) with httptools' parser.

Far cheaper per request and per byte than httpx or aiohttp, so that the client, which shares its
CPU with the upstream, is not what the figures measure: a request without a body is written in
one call (`send`, so that many connections can fire in the same loop iteration), a request body
is streamed from an iterable under the transport's flow control, and a response body goes to a
sink as it arrives (never held) or, without one, into `Response.body`. `finished` is taken in
the parser's callback, so a response's latency does not include the wait for its task to run.
"""

from __future__ import annotations

import asyncio
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httptools

__all__ = ["Connection", "Response", "connect"]

Sink = Callable[[bytes], object]


@dataclass
class Response:
    """One response: status, headers (lower-case names), the body's length and, without a sink, the body."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    length: int = 0
    body: bytearray = field(default_factory=bytearray)
    started: float = 0.0  # perf_counter() when the request's head was written
    finished: float = 0.0  # perf_counter() when the last byte of the response was parsed

    @property
    def seconds(self) -> float:
        return self.finished - self.started


class Connection(asyncio.Protocol):
    """One connection; one request at a time."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._writable = asyncio.Event()
        self._writable.set()
        self._response = Response()
        self._sink: Sink | None = None
        self._done: asyncio.Future[Response] | None = None

    # -- asyncio's callbacks --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- httptools' callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._response.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._response.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._response.length += len(body)
        if self._sink is None:
            self._response.body += body
        else:
            self._sink(body)

    def on_message_complete(self) -> None:
        self._response.finished = time.perf_counter()
        if self._done is not None and not self._done.done():
            self._done.set_result(self._response)

    # -- requests -------------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        self._writable.set()  # a writer waiting for the buffer to drain must see the failure
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    def send(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str]] = (),
        *,
        length: int | None = None,
        sink: Sink | None = None,
    ) -> asyncio.Future[Response]:
        """Write the request's head now (with `Content-Length: length` when it has a body, which
        `stream` then writes); the future is the response."""
        if self._transport is None:
            raise ConnectionResetError("the connection is closed")
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{name}: {value}" for name, value in headers)]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        self._response, self._sink = Response(), sink
        self._done = self._loop.create_future()
        self._response.started = time.perf_counter()
        self._transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return self._done

    async def stream(self, chunks: Iterable[bytes | memoryview]) -> None:
        """Write a request body after `send`, waiting whenever the socket's buffer is full; it
        stops early when the response is already complete or the connection failed."""
        for chunk in chunks:
            if self._transport is None or (self._done is not None and self._done.done()):
                return
            self._transport.write(chunk)
            await self._writable.wait()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def connect(host: str, port: int) -> Connection:
    _, connection = await asyncio.get_running_loop().create_connection(Connection, host, port)
    return connection
