"""MemoryStore: the `Store` in a dict, for tests and single-process demos.

Owns nothing beyond one process's memory: entries vanish on restart and are invisible to other
workers, so the lease here is only an in-process lock. Expired entries are dropped lazily, when
they are read or when a write finds it is time for a sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from bff.errors import StoreUnavailable
from bff.stores.common import SWEEP_INTERVAL, require_criterion

__all__ = ["MemoryStore"]


@dataclass
class _Entry:
    value: bytes
    expires_at: float
    sub: str | None
    sid: str | None


class MemoryStore:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._condition: tuple[asyncio.AbstractEventLoop, asyncio.Condition] | None = None
        self._next_sweep = 0.0
        self._version = 0

    def __repr__(self) -> str:
        return f"MemoryStore(entries={len(self._entries)})"

    async def open(self) -> None:
        return None

    @property
    def _released(self) -> asyncio.Condition:
        # One condition per event loop: asyncio primitives bind to the loop that first waits on
        # them, and a test may run the same app under several loops one after another.
        loop = asyncio.get_running_loop()
        if self._condition is None or self._condition[0] is not loop:
            self._condition = (loop, asyncio.Condition())
        return self._condition[1]

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    def version(self) -> int | None:
        """Counts the writes: every process that could write is this one."""
        return self._version

    def _live(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at <= self._clock():
            del self._entries[key]
            return None
        return entry

    def _sweep(self) -> None:
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        for key in [key for key, entry in self._entries.items() if entry.expires_at <= now]:
            del self._entries[key]

    async def get(self, key: str) -> bytes | None:
        entry = self._live(key)
        return None if entry is None else entry.value

    async def set(self, key: str, value: bytes, ttl: float, *, sub: str | None = None, sid: str | None = None) -> None:
        self._sweep()
        self._entries[key] = _Entry(value, self._clock() + ttl, sub, sid)
        self._version += 1

    async def replace(
        self,
        key: str,
        value: bytes,
        ttl: float,
        *,
        sub: str | None = None,
        sid: str | None = None,
        expected: bytes | None = None,
    ) -> bool:
        entry = self._live(key)
        if entry is None or (expected is not None and entry.value != expected):
            return False
        self._entries[key] = _Entry(value, self._clock() + ttl, sub, sid)
        self._version += 1
        return True

    async def delete(self, key: str) -> bool:
        live = self._live(key) is not None
        if self._entries.pop(key, None) is not None:
            self._version += 1
        return live

    async def keys_where(self, *, sub: str | None = None, sid: str | None = None) -> list[str]:
        require_criterion("keys_where", sub, sid)
        now = self._clock()
        return [
            key
            for key, entry in self._entries.items()
            if entry.expires_at > now and (sub is None or entry.sub == sub) and (sid is None or entry.sid == sid)
        ]

    async def indexed_keys(self) -> list[str]:
        now = self._clock()
        return [key for key, entry in self._entries.items() if entry.expires_at > now and entry.sub is not None]

    async def add_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        if self._live(key) is not None:
            return False
        await self.set(key, value, ttl)
        return True

    def lock(self, name: str, *, ttl: float, wait: float) -> AbstractAsyncContextManager[None]:
        return self._lease(name, ttl, wait)

    @contextlib.asynccontextmanager
    async def _lease(self, name: str, ttl: float, wait: float) -> AsyncIterator[None]:
        token = secrets.token_hex(8)
        deadline = self._clock() + wait
        released = self._released
        async with released:
            while True:
                now = self._clock()
                held = self._leases.get(name)
                if held is None or held[1] <= now:
                    self._leases[name] = (token, now + ttl)
                    break
                # Wake on a release, or when the holder's lease runs out, or at our deadline.
                timeout = min(held[1], deadline) - now
                if timeout <= 0:
                    raise StoreUnavailable(f"lock {name!r}: not acquired within {wait:g}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(released.wait(), timeout)
        try:
            yield
        finally:
            if self._leases.get(name, ("", 0.0))[0] == token:
                del self._leases[name]
            async with released:
                released.notify_all()
