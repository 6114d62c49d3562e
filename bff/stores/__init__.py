"""The session store: a narrow key-value protocol with expiry, two index fields and a lease.

Owns the `Store` protocol and `open_store(url)`, which picks a backend by URL scheme:

    memory://                      one process only (tests, `bff demo` without persistence)
    sqlite:///relative/path.db     a file next to the working directory (the default)
    sqlite:////absolute/path.db    safe with several uvicorn workers on one file
    redis://host:port/db           several replicas; the refresh lock lives there too
    redis+sentinel://h1:26379,h2:26379/<master-name>/<db>   the primary named by Redis Sentinel
    redis+cluster://h1:7000,h2:7001/                        Redis Cluster

`check_store_url(url)` reads a URL the way `open_store` does, without I/O or imports, for
`load_settings`; the Redis forms are parsed in `bff.stores.urls`.

Values are opaque bytes: what goes into a record (and its encryption) is `bff.session`'s
business, never the store's. Every backend failure surfaces as `StoreUnavailable` (503), never
as a raw `sqlite3` or `redis` exception, so that a store outage never logs anyone out.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from bff.errors import ConfigError, StoreUnavailable
from bff.stores.urls import REDIS_SCHEMES, parse_redis_url, shown_url

__all__ = ["Store", "StoreUnavailable", "check_store_url", "open_store"]


@runtime_checkable
class Store(Protocol):
    """What the session manager and the token manager need from a store.

    `ttl`s are seconds from now; an entry past its ttl is invisible to every method and is purged
    by the backend in its own time. `sub`/`sid` are index fields for `keys_where`.
    """

    async def open(self) -> None:
        """Connect or create tables; called once in the app's lifespan."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return when the store answers; raise `StoreUnavailable` otherwise (for `/readyz`)."""

    def version(self) -> int | None:
        """A number that changes whenever an entry may have changed, in any process (a commit to
        the SQLite file, a Redis invalidation, a write here), or None when the store cannot tell
        right now. Synchronous and cheap, for `ReadCache` (`bff.stores.read_cache`): a record read
        at version V is still the stored one while `version()` is V."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float, *, sub: str | None = None, sid: str | None = None) -> None:
        """Write `key` unconditionally, replacing its value, ttl and index fields."""

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
        """Write `key` only if it exists (and, when `expected` is given, still holds exactly
        `expected`); return whether it wrote. Keeps a deleted session deleted, and keeps a
        sliding `last_used_at` write from undoing a refresh that saved new tokens meanwhile."""

    async def delete(self, key: str) -> bool:
        """Remove `key`; return whether a live entry was there."""

    async def keys_where(self, *, sub: str | None = None, sid: str | None = None) -> list[str]:
        """Keys of the live entries whose index fields match every given criterion (at least one)."""

    async def indexed_keys(self) -> list[str]:
        """Keys of every live entry that has a `sub` index field: every session, for the admin
        CLI (`bff sessions list`). Never on a request's path: it reads the whole store (on Redis
        an incremental `SCAN`)."""

    async def add_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        """Write `key` only if no live entry has it; return whether it wrote. One-time markers:
        a logout token's `jti`, a used login state."""

    def lock(self, name: str, *, ttl: float, wait: float) -> AbstractAsyncContextManager[None]:
        """A lease held by exactly one holder across tasks, workers and replicas.

        Waits up to `wait` seconds for it, then raises `StoreUnavailable`. The lease expires after
        `ttl` seconds if its holder dies; a holder whose lease expired does not release its
        successor's lease.
        """


def check_store_url(url: str) -> None:
    """Raise `ConfigError` (one line naming `session_store`, no password) for a URL no backend takes."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
            raise ConfigError([f"session_store: {url!r} needs a path: sqlite:///relative.db or sqlite:////absolute.db"])
    elif scheme in REDIS_SCHEMES:
        parse_redis_url(url)
    elif scheme != "memory":
        raise ConfigError(
            [
                f"session_store: {shown_url(url)!r} must start with memory://, sqlite:///, redis://, "
                "rediss://, redis+sentinel:// or redis+cluster://"
            ]
        )


def open_store(url: str) -> Store:
    """The backend for `url`; no I/O happens before `await store.open()`.

    `sqlite:///data/s.db` is relative to the working directory, `sqlite:////var/lib/bff/s.db`
    is absolute (as in SQLAlchemy). A URL no backend takes raises `ConfigError`.
    """
    check_store_url(url)
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from bff.stores.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        from bff.stores.sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite:///") :])
    try:
        from bff.stores.redis import RedisStore
    except ImportError:
        raise ConfigError(
            [f"session_store: {scheme}:// needs the redis package (pip install 'bff-proxy[redis]')"]
        ) from None
    return RedisStore(url)
