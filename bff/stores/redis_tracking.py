"""Invalidations: `RedisStore.version()` from Redis's client-side-caching push messages.

One extra connection per process speaks RESP3 and asks `CLIENT TRACKING ON BCAST PREFIX
<prefix>r:`: from then on Redis pushes an `invalidate` message on it whenever any client changes
(or expires, or flushes) a record under the prefix. Nothing is parsed: every byte that arrives
means "something may have changed", so the version is the count of bytes received, read
without blocking from the socket at each `version()` call, so a push already in this host's
socket buffer counts before the request that asks. Redis writes the push in the same event-loop
turn as the writer's reply, so it is here before that writer's answer can reach a browser and
come back as a request to this process.

A `PING` every `HEARTBEAT` seconds keeps the connection proven: its `PONG` moves the version too
(each cached record is read again at most once per heartbeat, a bound on any staleness), and a
heartbeat without any byte since the previous one, a closed socket or a read error drop the
connection: `version()` is None (every read goes to Redis) until a new connection tracks again,
and the version after it is larger than any before. Only for one Redis (`redis://`, `rediss://`,
`unix://`): behind Sentinel or in a Cluster, `RedisStore.version()` is None and every load reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from typing import Any

import redis
from redis.exceptions import RedisError

__all__ = ["HEARTBEAT", "TRACKING_NAME", "Invalidations"]

log = logging.getLogger("bff.store")

HEARTBEAT = 1.0
"""Seconds between the PINGs that prove the tracking connection alive."""

TRACKING_NAME = "bff-invalidations"
"""The tracking connection's name in `CLIENT LIST`."""

_PING = b"*1\r\n$4\r\nPING\r\n"
_READ_SIZE = 65536


class Invalidations:
    def __init__(self, url: str, prefix: str, *, timeout: float) -> None:
        self._url = url
        self._prefix = prefix
        self._timeout = timeout
        self._socket: socket.socket | None = None
        self._connection: Any = None  # redis-py's, kept so that its socket is closed with it
        self._received = 0
        self._since_ping = True
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Track from now on (if Redis lets us); keep trying in the background if not."""
        await self._reconnect()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat(), name="bff-redis-tracking")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._drop()

    def version(self) -> int | None:
        """The bytes received on the tracking connection, None while there is none."""
        sock = self._socket
        if sock is None:
            return None
        while True:
            try:
                data = sock.recv(_READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):
                return self._received
            except OSError:
                data = b""
            if not data:
                log.warning("Redis invalidations lost: the tracking connection closed; reading every session.")
                self._drop()
                return None
            self._received += len(data)
            self._since_ping = True

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            if self._socket is None:
                await self._reconnect()
                continue
            if self.version() is None:
                continue
            if not self._since_ping:
                log.warning("Redis invalidations lost: no answer to the tracking PING; reading every session.")
                self._drop()
                continue
            self._since_ping = False
            try:
                self._socket.send(_PING)
            except OSError:
                self._drop()

    async def _reconnect(self) -> None:
        try:
            connection = await asyncio.to_thread(self._tracking_connection)
        except (RedisError, OSError) as exc:
            log.warning("Redis invalidations unavailable (%s): reading every session.", type(exc).__name__)
            return
        sock = connection._sock  # redis-py's socket: from here on only the pushes are read, by us
        sock.settimeout(0)  # non-blocking
        self._connection, self._socket = connection, sock
        self._received += 1  # larger than every version before the gap
        self._since_ping = True

    def _tracking_connection(self) -> Any:
        """A RESP3 connection (authenticated, on its database) that tracks the prefix."""
        pool = redis.ConnectionPool.from_url(
            self._url,
            protocol=3,
            client_name=TRACKING_NAME,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
        )
        connection = pool.make_connection()
        try:
            connection.connect()  # type: ignore[no-untyped-call]
            connection.send_command("CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self._prefix)  # type: ignore[no-untyped-call]
            reply = connection.read_response()
            if reply not in (b"OK", "OK"):
                raise RedisError(f"CLIENT TRACKING answered {reply!r}")
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]
            raise
        return connection

    def _drop(self) -> None:
        connection, self._connection, self._socket = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(OSError, RedisError):
                connection.disconnect()
