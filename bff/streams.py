"""OpenStreams: the SSE responses and WebSocket relays of signed-in sessions open in this process.

A plain request reads the session from the store each time, so a session that ended (logout,
"log out this device", back-channel logout, `bff sessions revoke`, idle or absolute expiry) is
refused at its next request. A stream asks only once, at its start: the proxy registers each
stream of a `token = "user"`/`"user_optional"` route that has a session here, by the session's
handle (`Session.key`), and `watch()` asks the `Sessions` every `STREAM_CHECK_INTERVAL` which of
those handles are still alive (one batched check per interval per process, whatever the store),
then ends the streams of the others: a WebSocket with close code `SESSION_ENDED` (4401), an SSE
response by finishing it cleanly. On shutdown `end_all(GOING_AWAY)` ends every stream
(WebSockets with 1001).

`bff_open_streams{kind}` counts them (`Metrics.stream_opened/closed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Literal, Protocol

from bff.errors import BffError
from bff.metrics import Metrics

__all__ = [
    "GOING_AWAY",
    "REASONS",
    "SESSION_ENDED",
    "STREAM_CHECK_INTERVAL",
    "LiveSessions",
    "OpenStreams",
    "Stream",
    "StreamKind",
]

log = logging.getLogger("bff.streams")

STREAM_CHECK_INTERVAL = 2.0
"""Seconds between two checks of the sessions with open streams in this process: a stream ends
at most this long (plus one store read) after its session."""
SESSION_ENDED = 4401
"""WebSocket close code when the session ended (reason `session ended`): sign in again."""
GOING_AWAY = 1001
"""WebSocket close code when the BFF shuts down: reconnect (another replica answers)."""
REASONS = {SESSION_ENDED: "session ended", GOING_AWAY: "shutting down"}
"""The close reason sent with each code."""
StreamKind = Literal["sse", "websocket"]


class LiveSessions(Protocol):
    async def alive(self, handles: dict[str, float]) -> set[str]:
        """Which of `handles` (each with its session's absolute end) are still live sessions."""


class Stream:
    """One open stream. `end(code)` asks its owner to close it: `ending` resolves with the close
    code, and `on_end` (an SSE response's: end the upstream body it copies) runs once."""

    __slots__ = ("ending", "expires_at", "handle", "kind", "on_end")

    def __init__(self, kind: StreamKind, handle: str, expires_at: float, on_end: Callable[[], None] | None) -> None:
        self.kind = kind
        self.handle = handle
        self.expires_at = expires_at
        self.on_end = on_end
        self.ending: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @property
    def ended(self) -> bool:
        return self.ending.done()

    def end(self, code: int) -> None:
        if self.ending.done():
            return
        self.ending.set_result(code)
        if self.on_end is not None:
            self.on_end()


class OpenStreams:
    """The registry of one process, by session handle."""

    def __init__(self, metrics: Metrics, *, interval: float = STREAM_CHECK_INTERVAL) -> None:
        self._metrics = metrics
        self._interval = interval
        self._by_handle: dict[str, set[Stream]] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return sum(len(streams) for streams in self._by_handle.values())

    @contextlib.contextmanager
    def open(
        self, kind: StreamKind, handle: str, expires_at: float, *, on_end: Callable[[], None] | None = None
    ) -> Iterator[Stream]:
        """Track a stream of session `handle` for as long as the block runs."""
        stream = Stream(kind, handle, expires_at, on_end)
        self._by_handle.setdefault(handle, set()).add(stream)
        self._empty.clear()
        self._metrics.stream_opened(kind)
        try:
            yield stream
        finally:
            self._metrics.stream_closed(kind)
            streams = self._by_handle.get(handle)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del self._by_handle[handle]
                    if not self._by_handle:
                        self._empty.set()

    def end(self, handles: set[str], code: int) -> int:
        """End the streams of `handles`; return how many."""
        count = 0
        for handle in handles:
            for stream in tuple(self._by_handle.get(handle, ())):
                if not stream.ended:
                    stream.end(code)
                    count += 1
        return count

    def end_all(self, code: int) -> int:
        return self.end(set(self._by_handle), code)

    async def closed(self) -> None:
        """Return once no stream is open."""
        await self._empty.wait()

    async def check(self, sessions: LiveSessions) -> int:
        """One check: end the streams whose session is no longer alive; return how many ended."""
        if not self._by_handle:
            return 0
        handles = {handle: max(stream.expires_at for stream in streams) for handle, streams in self._by_handle.items()}
        try:
            alive = await sessions.alive(handles)
        except BffError as exc:  # a store outage never logs anyone out: check again next time
            log.warning("Open streams not checked: %s", exc.detail or exc.code)
            return 0
        dead = set(handles) - alive
        count = self.end(dead, SESSION_ENDED) if dead else 0
        if count:
            log.info("Streams ended with their session. sessions: %d, streams: %d", len(dead), count)
        return count

    async def watch(self, sessions: LiveSessions) -> None:
        """`check` every interval, until cancelled (the app's lifespan runs it)."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check(sessions)
            except Exception:  # never let one failed check stop the watcher
                log.exception("Open streams check failed")
