"""What the store backends share: the lease's poll loop, the sweep interval and the index check.

Owns `poll_lease`, the wait-poll-release loop of a lease whose backend can only try once
(SQLite, Redis; the memory store waits on a condition instead), `LEASE_POLL` and
`SWEEP_INTERVAL`, and `require_criterion`, the "at least one of sub and sid" rule of
`keys_where` and of the session managers' `destroy_where`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from bff.errors import StoreUnavailable

__all__ = ["LEASE_POLL", "SWEEP_INTERVAL", "poll_lease", "require_criterion"]

LEASE_POLL = 0.015
"""Seconds between two tries at a held lease."""

SWEEP_INTERVAL = 60.0
"""Seconds between two sweeps of expired entries, per process."""


def require_criterion(what: str, sub: str | None, sid: str | None) -> None:
    """Raise `ValueError` naming `what` unless `sub` or `sid` is given."""
    if sub is None and sid is None:
        raise ValueError(f"{what} needs sub or sid")


@contextlib.asynccontextmanager
async def poll_lease(
    try_acquire: Callable[[], Awaitable[bool]],
    release: Callable[[], Awaitable[None]],
    *,
    name: str,
    wait: float,
) -> AsyncIterator[None]:
    """Hold a lease: call `try_acquire` every `LEASE_POLL` seconds until it returns True, for up
    to `wait` seconds (then raise `StoreUnavailable`), and `release` it on the way out, even when
    the holder was cancelled."""
    deadline = time.monotonic() + wait
    while not await try_acquire():
        if time.monotonic() >= deadline:
            raise StoreUnavailable(f"lock {name!r}: not acquired within {wait:g}s")
        await asyncio.sleep(min(LEASE_POLL, max(0.0, deadline - time.monotonic())))
    try:
        yield
    finally:
        # A failing release only lets the lease run out by itself, which is what it is for.
        with contextlib.suppress(StoreUnavailable):
            await asyncio.shield(release())
