"""UpstreamPool: one route's keep-alive connections to its upstream, and one exchange on them.

`request(method, target, headers, body)` writes the request head (and a bytes body) in one
write, or streams an async-iterator body (with its `Content-Length`, or chunked without one) in
a task of its own, so an upstream that answers before the upload ends is heard at once, and
returns the `Answer` as soon as its head arrived. At most `limit` connections are open or
opening; a request waits for one within the connect and read timeouts together (then
`TimeoutError`, as for a connect that takes too long). Idle connections
are reused newest first and closed after `KEEPALIVE` seconds, a little shorter than uvicorn's
default keep-alive (5 s), so a connection the upstream is closing is not taken. A request is
never retried: it may not be idempotent.

Header names and values are checked for CR and LF (a token or header that carried one would
split the request); everything else was parsed from the browser's request by the server already.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

from bff.http1 import Answer, Connection, UpstreamError

__all__ = ["KEEPALIVE", "UpstreamConnectError", "UpstreamPool"]

KEEPALIVE = 4.0
"""Seconds an idle connection is kept for reuse."""
_JOINED_BYTES = 64 * 1024
"""A bytes body up to this size is sent in the same write as the head (larger: not copied)."""
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})


class UpstreamConnectError(UpstreamError):
    """No connection to the upstream could be made (refused, unreachable, TLS, DNS, no slot)."""


class UpstreamPool:
    """Connections to one upstream origin (`http://host:port` or `https://...`)."""

    def __init__(self, origin: str, *, limit: int, connect_timeout: float, read_timeout: float) -> None:
        parts = urlsplit(origin)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        name = f"[{self.host}]" if ":" in self.host else self.host.encode("idna").decode("ascii")
        self._host_line = f"host: {name}{f':{parts.port}' if parts.port else ''}\r\n".encode("ascii")
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: list[Connection] = []
        self._in_use: set[Connection] = set()
        self._opening = 0
        self._slots: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def in_use(self) -> int:
        """Connections carrying an exchange now (for tests and diagnostics)."""
        return len(self._in_use)

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> Answer:
        """Send one request (header names lowercased, as the server and the filters give them);
        return the answer once its head arrived. Raises `UpstreamError`, `TimeoutError`, or what
        a streamed `body` raised before the answer came."""
        head, chunked = self._head(method, target, headers, body)
        connection = await self._acquire()
        answer = connection.start(head_only=method == "HEAD", read_timeout=self._read_timeout)
        try:
            if body is None or isinstance(body, bytes):
                if body and len(body) <= _JOINED_BYTES:
                    connection.write(head + body)  # one system call
                else:
                    connection.write(head)
                    if body:
                        connection.write(body)
            else:
                connection.write(head)
                upload = connection.upload = asyncio.ensure_future(_send_body(connection, body, chunked=chunked))
                await asyncio.wait((answer, upload), return_when=asyncio.FIRST_COMPLETED)
                if upload.done() and not answer.done():
                    error = upload.exception()
                    if error is not None:
                        raise error
            return await answer
        except BaseException:
            if not answer.done():
                answer.cancel()
            connection.abort()
            raise

    async def close(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for connection in (*self._idle, *self._in_use):
            connection.abort()
        self._idle.clear()
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_exception(UpstreamConnectError("the proxy is shutting down"))

    def _head(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> tuple[bytes, bool]:
        parts = [method.encode("ascii"), b" ", target.encode("ascii"), b" HTTP/1.1\r\n"]
        has_host = has_length = False
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
            if name == b"host":
                has_host = True
            elif name == b"content-length":
                has_length = True
        lines = len(headers) + 2  # the request line, the headers, the empty line
        if not has_host:
            parts.insert(4, self._host_line)  # first, as clients usually send it
            lines += 1
        framing, chunked = (None, False) if has_length else _framing(method, body)
        if framing is not None:
            parts.append(framing)
            lines += 1
        parts.append(b"\r\n")
        head = b"".join(parts)
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            raise ValueError("a header name or value contains CR or LF")
        return head, chunked

    async def _acquire(self) -> Connection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout + self._read_timeout
        while True:
            if self._closed:
                raise UpstreamConnectError("the proxy is shutting down")
            now = loop.time()
            while self._idle:
                connection = self._idle.pop()
                if _fresh(connection, now):
                    self._in_use.add(connection)
                    return connection
                connection.abort()
            if len(self._in_use) + self._opening < self._limit:
                return await self._open()
            slot = loop.create_future()
            self._slots.append(slot)
            try:
                async with asyncio.timeout(max(deadline - now, 0)):
                    await slot
            except TimeoutError:
                if slot.done() and not slot.cancelled():
                    self._wake_one()  # woken as the time ran out: pass the turn on
                raise TimeoutError("no free connection to the upstream in time") from None
            finally:
                with contextlib.suppress(ValueError):
                    self._slots.remove(slot)

    async def _open(self) -> Connection:
        loop = asyncio.get_running_loop()
        self._opening += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(self._done),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                )
        except BaseException as exc:
            self._opening -= 1
            self._wake_one()  # the slot this connection would have taken is free again
            if isinstance(exc, TimeoutError):
                raise TimeoutError("connecting to the upstream took longer than the connect timeout") from None
            if isinstance(exc, OSError):  # refused, unreachable, DNS, TLS (ssl.SSLError is one)
                raise UpstreamConnectError(f"cannot connect: {type(exc).__name__}") from None
            raise
        self._opening -= 1
        self._in_use.add(connection)
        return connection

    def _done(self, connection: Connection) -> None:
        self._in_use.discard(connection)
        if connection.reusable and not self._closed:
            self._idle.append(connection)
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(KEEPALIVE, self._sweep)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)
                return

    def _sweep(self) -> None:
        """Close the connections idle for `KEEPALIVE`; come back while any are left."""
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        keep = []
        for connection in self._idle:
            if _fresh(connection, now):
                keep.append(connection)
            else:
                connection.abort()
        self._idle = keep
        if keep:
            self._sweeper = asyncio.get_running_loop().call_later(KEEPALIVE / 2, self._sweep)


def _fresh(connection: Connection, now: float) -> bool:
    """Whether an idle connection may carry another request."""
    return connection.usable and now - connection.idle_since < KEEPALIVE


def _framing(method: str, body: bytes | AsyncIterator[bytes] | None) -> tuple[bytes | None, bool]:
    """The framing line for a request without a `Content-Length`, and whether it is chunked."""
    if isinstance(body, bytes):
        return b"content-length: %d\r\n" % len(body), False
    if body is not None:
        return b"transfer-encoding: chunked\r\n", True
    if method not in _NO_BODY_METHODS:
        return b"content-length: 0\r\n", False
    return None, False


async def _send_body(connection: Connection, body: AsyncIterator[bytes], *, chunked: bool) -> None:
    async for chunk in body:
        if not chunk:
            continue
        if chunked:
            connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            connection.write(chunk)
        await connection.drain()
    if chunked:
        connection.write(b"0\r\n\r\n")
