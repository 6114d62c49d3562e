"""One HTTP/1.1 connection to an upstream and the answer being read from it, for `UpstreamPool`.

`Connection` is an asyncio protocol around one transport with llhttp (`httptools`) parsing the
answers; `Answer` is what the proxy reads: status, raw headers, and the body chunk by chunk as it
arrives, with reading paused while more than `HIGH_WATER` bytes wait unread (the browser sets the
pace). Informational answers (100 Continue, 103 Early Hints) are skipped. A body ends with its
length, its last chunk, or (neither given) the upstream closing the connection; an upstream that
closes earlier, sends a malformed answer or stays silent longer than the read timeout fails the
exchange with `UpstreamClosed` or `TimeoutError`. Silence counts only while the proxy waits for
the upstream: neither a paused read nor an upload in progress is silence.

Why not aiohttp: its client is ~85 µs of CPU per proxied request here (`python -m bench`, the
`minimal` set-up), and this one ~10; aiohttp stays for WebSockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import httptools

__all__ = ["HIGH_WATER", "Answer", "Connection", "UpstreamClosed", "UpstreamError"]

HIGH_WATER = 256 * 1024
"""Unread answer bytes above which the connection stops reading from the upstream."""
_NO_BODY_STATUSES = frozenset({204, 304})


class UpstreamError(Exception):
    """The exchange with the upstream failed (the proxy maps it to 502, or aborts mid-answer)."""


class UpstreamClosed(UpstreamError):
    """The upstream closed the connection, or broke HTTP, before the answer was complete."""


class Answer:
    """The upstream's answer: `status`, `raw_headers` as sent, and the body by `readany()`."""

    __slots__ = ("_connection", "_content_type", "raw_headers", "status")

    def __init__(self, connection: Connection, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self._connection = connection
        self._content_type: str | None = None
        self.status = status
        self.raw_headers = raw_headers

    @property
    def content_type(self) -> str:
        """The media type, lowercased and without parameters (`""` when absent)."""
        if self._content_type is None:
            value = next((v for n, v in self.raw_headers if n.lower() == b"content-type"), b"")
            self._content_type = value.split(b";", 1)[0].strip().lower().decode("latin-1")
        return self._content_type

    @property
    def headers(self) -> dict[str, str]:
        """The headers by lowercased name (the first of repeated ones), for the 401 checks."""
        out: dict[str, str] = {}
        for name, value in self.raw_headers:
            out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        return out

    async def readany(self) -> bytes:
        """The body bytes that arrived since the last call, waiting for some; `b""` at the end."""
        return await self._connection.read()

    def at_eof(self) -> bool:
        """Whether the whole body was read."""
        return self._connection.complete and not self._connection.body

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool if it can carry another."""
        self._connection.finish()

    def close(self) -> None:
        """Abandon the answer (and its connection)."""
        self._connection.abort()


class Connection(asyncio.Protocol):
    """One upstream connection, carrying one exchange at a time (`start` to `finish`)."""

    def __init__(self, on_done: Callable[[Connection], None]) -> None:
        self._on_done = on_done  # once an exchange ends; `reusable` says whether it can carry another
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.upload: asyncio.Future[None] | None = None  # a streamed request body still being sent
        self.idle_since = 0.0
        self.reusable = False
        self.body: list[bytes] = []
        self.complete = False
        self._buffered = 0
        self._active = False
        self._paused = False
        self._keep_alive = False  # the upstream's answer allows another request on the connection
        self._head_only = False
        self._until_close = False
        self._failure: Exception | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._answer: asyncio.Future[Answer] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._timeout = 0.0
        self._last_heard = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    # ---- the exchange, as `UpstreamPool` drives it

    def start(self, *, head_only: bool, read_timeout: float) -> asyncio.Future[Answer]:
        """Begin an exchange: the returned future resolves with the answer's head."""
        self._active = True
        self._head_only = head_only
        self._until_close = False
        self.complete = False
        self._keep_alive = False
        self._failure = None
        self.body = []
        self._buffered = 0
        self._timeout = read_timeout
        self._answer = self._loop.create_future()
        self._heard()
        self._timer = self._loop.call_later(read_timeout, self._check_silence)
        return self._answer

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise UpstreamClosed("the connection closed while the request was sent")
        self.transport.write(data)
        self._heard()  # an upload in progress is not the upstream's silence

    async def drain(self) -> None:
        """Wait while the transport's write buffer is full."""
        if self._drained is not None:
            await self._drained

    async def read(self) -> bytes:
        while not self.body:
            if self.complete:
                return b""
            if self._failure is not None:
                raise self._failure
            self._waiter = self._loop.create_future()
            self._heard()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    def finish(self) -> None:
        """The exchange is over: hand the connection back (kept only when the answer was whole)."""
        if not self._active:
            return
        self._active = False
        self._stop_timer()
        upload, self.upload = self.upload, None
        sent = upload is None or (upload.done() and not upload.cancelled() and upload.exception() is None)
        if upload is not None and not upload.done():
            upload.cancel()  # the upstream answered without reading it all: the rest goes nowhere
        self.reusable = sent and self.complete and self._keep_alive and not self.body and self.usable
        if not self.reusable:
            self.abort()
        self.idle_since = self._loop.time()
        self._on_done(self)

    def abort(self) -> None:
        self._drop(UpstreamClosed("the exchange was abandoned"))
        if self._active:
            self.finish()

    # ---- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's are not its subclasses

    def data_received(self, data: bytes) -> None:
        if not self._active or self.complete:
            # Bytes nobody asked for: the connection's framing can no longer be trusted.
            if self.transport is not None:
                self.transport.abort()
            return
        self._last_heard = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._drop(UpstreamClosed("the upstream sent a malformed answer"))

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, _exc: Exception | None) -> None:
        if self._until_close and not self.complete and self._answer is not None and self._answer.done():
            self.complete = True  # a body without a length ends when the connection does
            self._wake()
        self._fail(UpstreamClosed("the upstream closed the connection"))
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    # ---- httptools callbacks

    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # informational: the answer follows (101 is refused at its completion)
        headers = self._headers
        framed = any(n.lower() in (b"content-length", b"transfer-encoding") for n, _ in headers)
        self._until_close = not framed and status not in _NO_BODY_STATUSES and not self._head_only
        answer = self._answer
        if answer is not None and not answer.done():
            answer.set_result(Answer(self, status, headers))
        if self._head_only:
            # llhttp cannot be told that a HEAD answer has no body: end it here and never reuse
            # the connection (its parser would read the next answer's head as this one's body).
            self.complete = True
            self._stop_timer()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                self._fail(UpstreamClosed("the upstream switched protocols on a plain request"))
            return
        if self._head_only:
            return
        self.complete = True
        self._keep_alive = self._parser.should_keep_alive()
        self._stop_timer()
        self._wake()

    # ---- silence and failure

    def _heard(self) -> None:
        self._last_heard = self._loop.time()

    def _check_silence(self) -> None:
        self._timer = None
        if not self._active or self.complete:
            return
        waiting = self._waiter is not None or (self._answer is not None and not self._answer.done())
        silent_for = self._loop.time() - self._last_heard
        if waiting and silent_for >= self._timeout:
            self._drop(TimeoutError("the upstream was silent longer than the read timeout"))
            return
        left = self._timeout - silent_for if waiting else self._timeout
        self._timer = self._loop.call_later(max(left, 0.001), self._check_silence)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drop(self, error: Exception) -> None:
        """Fail the exchange with `error` and close the connection at once."""
        if self.transport is not None:
            self.transport.abort()
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        if self.complete or self._failure is not None:
            return
        self._failure = error
        self._stop_timer()
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
