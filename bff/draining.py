"""Drain: what `bff serve` does between SIGTERM (or Ctrl-C) and uvicorn's own shutdown.

uvicorn, told to exit, stops listening, closes idle connections, waits up to
`timeout_graceful_shutdown` (`shutdown_timeout`) for the requests in flight, and only then runs
the app's lifespan shutdown. Streams never finish on their own, and uvicorn would close a
WebSocket with 1012 itself; so the app hooks the signal first (its handler wraps uvicorn's, which
is installed before the app starts): at once `draining` turns true (`/readyz` answers 503
`{"status": "shutting_down"}`), every open stream is ended (WebSockets with 1001 "going away",
SSE responses finished cleanly, `bff.streams`), and once they closed (at most `STREAMS_CLOSE_WAIT`)
uvicorn's handler runs and its shutdown goes on as above. A second signal goes straight to uvicorn.

Only in the main thread (signals cannot be handled elsewhere), and only when asked (`bff serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from bff.streams import GOING_AWAY, OpenStreams

__all__ = ["SIGNALS", "STREAMS_CLOSE_WAIT", "Drain", "Handler"]

log = logging.getLogger("bff.drain")

STREAMS_CLOSE_WAIT = 2.0
"""Longest wait for the ended streams to close before uvicorn's shutdown goes on."""
SIGNALS = (signal.SIGTERM, signal.SIGINT)

Handler = Callable[[int, FrameType | None], Any]


class Drain:
    def __init__(self, streams: OpenStreams) -> None:
        self._streams = streams
        self.draining = False
        self._previous: dict[int, Handler] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Wrap the current SIGTERM and SIGINT handlers (uvicorn's), from the running loop."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            if callable(previous):
                self._previous[sig] = previous
                signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        self._previous.clear()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        previous = self._previous[sig]
        if self.draining or self._loop is None:
            previous(sig, frame)
            return
        self.draining = True
        self._loop.call_soon_threadsafe(self._start, sig, frame, previous)

    def _start(self, sig: int, frame: FrameType | None, previous: Handler) -> None:
        self._task = asyncio.ensure_future(self.drain(lambda: previous(sig, frame)))

    async def drain(self, then: Callable[[], object]) -> None:
        """Turn not ready, end every stream, wait for them to close, then call `then`."""
        self.draining = True
        ended = self._streams.end_all(GOING_AWAY)
        log.info("Shutting down: not ready, %d open streams ended", ended)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STREAMS_CLOSE_WAIT):
                await self._streams.closed()
        then()
