"""SQLiteStore: the `Store` in one SQLite file, shared safely by several worker processes.

Owns the file's schema and its concurrency rules: WAL journal (readers never block the writer),
a busy timeout (a writer waits for another process's write instead of failing at once), and one
statement per operation wherever it must be atomic (`INSERT ... ON CONFLICT DO UPDATE ... WHERE`
is the compare-and-set of `add_if_absent`, `replace` and the lease). Blocking calls run on one
dedicated thread per store, so the event loop never waits on the disk and the connection is
only ever touched by that thread.

`version()` reads the wal-index header every commit rewrites (`bff.stores.sqlite_version`).

Expired rows are invisible at once (every query checks `expires_at`) and deleted by a sweep
that runs at most once a minute per process, on a write, `SWEEP_BATCH` rows per statement (the
rest in the background, one batch per call of the store's thread, `SWEEP_PAUSE` apart). Times are
wall-clock seconds, since they are compared across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from bff.errors import StoreUnavailable
from bff.stores.common import SWEEP_INTERVAL, poll_lease, require_criterion
from bff.stores.sqlite_version import FileVersion

__all__ = ["SWEEP_BATCH", "SWEEP_PAUSE", "SQLiteStore"]

T = TypeVar("T")

SWEEP_BATCH = 100
"""Expired rows one sweep statement deletes: ~7 ms of the store's thread (session rows with their
index entries), about the longest a read that misses the read cache waits behind the sweep."""
SWEEP_PAUSE = 0.02
"""Seconds between two background batches, in which the store's thread serves other calls."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL NOT NULL,
    sub TEXT,
    sid TEXT
);
CREATE INDEX IF NOT EXISTS entries_sub ON entries (sub);
CREATE INDEX IF NOT EXISTS entries_sid ON entries (sid);
CREATE INDEX IF NOT EXISTS entries_expires_at ON entries (expires_at);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


class SQLiteStore:
    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        # Wall-clock time of the expiry columns (shared by every process on the file); tests inject one.
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._watch: FileVersion | None = None
        # The `Store.version` method, bound to the watch's own while one is open: this runs
        # on every proxied request, and the call through a method of ours cost a frame.
        self.version: Callable[[], int | None] = _unknown_version
        self._next_sweep = 0.0
        self._backlog = False  # a sweep left expired rows behind: `_drain_backlog` deletes them
        self._draining: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- plumbing -----------------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the store's thread; any SQLite or file error → StoreUnavailable."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bff-sqlite")
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"session store {str(self.path)!r}: {exc}") from exc
        if self._backlog and self._draining is None:
            self._backlog = False
            self._draining = asyncio.ensure_future(self._drain_backlog())
        return result

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect()
        return fn(self._conn)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Owner-only from the start; SQLite gives the -wal and -shm files the same mode. Only a
        # file that is not there yet: closing a descriptor of one that is would drop the locks
        # this process's other connections hold on it (POSIX locks belong to the process).
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        # isolation_level=None: autocommit; each statement below is its own transaction.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            _use_wal(conn, self._busy_timeout)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _sweep(self, conn: sqlite3.Connection, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        conn.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))
        self._backlog = self._sweep_batch(conn, now)

    @staticmethod
    def _sweep_batch(conn: sqlite3.Connection, now: float) -> bool:
        """Delete up to `SWEEP_BATCH` expired rows; return whether there may be more. One DELETE
        of a large backlog (900,000 rows took 164 s) would hold the write lock and this store's
        thread all along: every login, refresh and logout would wait behind it."""
        cursor = conn.execute(
            "DELETE FROM entries WHERE rowid IN (SELECT rowid FROM entries WHERE expires_at <= ? LIMIT ?)",
            (now, SWEEP_BATCH),
        )
        return cursor.rowcount >= SWEEP_BATCH

    async def _drain_backlog(self) -> None:
        """The rest of a sweep, a batch per call on the store's thread, `SWEEP_PAUSE` apart: other
        calls go between the batches instead of behind the whole sweep. With 900,000 expired rows
        (`python -m bench.million`): 2,000 rows a batch back to back made p99 137 ms during the
        sweep; these 100 rows 20 ms apart 22 ms (3 ms without a sweep), in 243 s all told."""
        try:
            while True:  # until a batch finds fewer rows than it may delete
                if not await self._run(lambda conn: self._sweep_batch(conn, self._clock())):
                    return
                await asyncio.sleep(SWEEP_PAUSE)
        except StoreUnavailable:
            pass  # the next sweep, a minute on, tries again
        finally:
            self._draining = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(lambda conn: self._sweep(conn, self._clock()))
        self._watch = await self._run(lambda _: FileVersion(self.path))
        # Changes whenever any connection (this store's writer, another worker's, a `bff
        # sessions` command) commits a change to the file (`bff.stores.sqlite_version`).
        self.version = self._watch.version

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._draining is not None:
            self._draining.cancel()
            await asyncio.gather(self._draining, return_exceptions=True)
        executor, self._executor = self._executor, None

        watch, self._watch = self._watch, None
        self.version = _unknown_version  # from here on

        def close_connection() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if watch is not None:
                watch.close()  # last: closing its descriptor drops the process's locks on the file

        await asyncio.get_running_loop().run_in_executor(executor, close_connection)
        executor.shutdown(wait=False)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT count(*) FROM leases WHERE 0").fetchone())

    # -- entries ------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        def get(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value FROM entries WHERE key = ? AND expires_at > ?", (key, self._clock())
            ).fetchone()
            return None if row is None else bytes(row[0])

        return await self._run(get)

    async def set(self, key: str, value: bytes, ttl: float, *, sub: str | None = None, sid: str | None = None) -> None:
        def set_(conn: sqlite3.Connection) -> None:
            now = self._clock()
            self._sweep(conn, now)
            conn.execute(
                "INSERT INTO entries (key, value, expires_at, sub, sid) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET"
                " value = excluded.value, expires_at = excluded.expires_at, sub = excluded.sub, sid = excluded.sid",
                (key, value, now + ttl, sub, sid),
            )

        await self._run(set_)

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
        def replace(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            sql = "UPDATE entries SET value = ?, expires_at = ?, sub = ?, sid = ? WHERE key = ? AND expires_at > ?"
            params: tuple[Any, ...] = (value, now + ttl, sub, sid, key, now)
            if expected is not None:
                sql += " AND value = ?"
                params += (expected,)
            return conn.execute(sql, params).rowcount == 1

        return await self._run(replace)

    async def delete(self, key: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            rows = conn.execute("DELETE FROM entries WHERE key = ? RETURNING expires_at", (key,)).fetchall()
            return bool(rows) and rows[0][0] > self._clock()

        return await self._run(delete)

    async def keys_where(self, *, sub: str | None = None, sid: str | None = None) -> list[str]:
        require_criterion("keys_where", sub, sid)

        def keys_where(conn: sqlite3.Connection) -> list[str]:
            sql = "SELECT key FROM entries WHERE expires_at > ?"
            params: tuple[Any, ...] = (self._clock(),)
            if sub is not None:
                sql += " AND sub = ?"
                params += (sub,)
            if sid is not None:
                sql += " AND sid = ?"
                params += (sid,)
            return [row[0] for row in conn.execute(sql, params)]

        return await self._run(keys_where)

    async def indexed_keys(self) -> list[str]:
        def indexed_keys(conn: sqlite3.Connection) -> list[str]:
            sql = "SELECT key FROM entries WHERE expires_at > ? AND sub IS NOT NULL"
            return [row[0] for row in conn.execute(sql, (self._clock(),))]

        return await self._run(indexed_keys)

    async def add_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        def add_if_absent(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            self._sweep(conn, now)
            # One statement, so atomic across processes: insert, or take over an expired row.
            cursor = conn.execute(
                "INSERT INTO entries (key, value, expires_at, sub, sid) VALUES (?, ?, ?, NULL, NULL)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at,"
                " sub = NULL, sid = NULL WHERE entries.expires_at <= ?",
                (key, value, now + ttl, now),
            )
            return cursor.rowcount == 1

        return await self._run(add_if_absent)

    # -- the lease ----------------------------------------------------------------------------

    def lock(self, name: str, *, ttl: float, wait: float) -> AbstractAsyncContextManager[None]:
        return self._lease(name, ttl, wait)

    def _lease(self, name: str, ttl: float, wait: float) -> AbstractAsyncContextManager[None]:
        token = secrets.token_hex(16)

        def acquire(conn: sqlite3.Connection) -> bool:
            now = self._clock()
            cursor = conn.execute(
                "INSERT INTO leases (name, token, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at"
                " WHERE leases.expires_at <= ?",
                (name, token, now + ttl, now),
            )
            return cursor.rowcount == 1

        def release(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM leases WHERE name = ? AND token = ?", (name, token))

        return poll_lease(lambda: self._run(acquire), lambda: self._run(release), name=name, wait=wait)


def _use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL. Several processes opening a new file at once race for that switch,
    and SQLite answers the losers `SQLITE_BUSY` at once, without its busy handler (seen in about
    1 of 100 first opens by four processes): they try again until `busy_timeout`."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _unknown_version() -> None:
    """`SQLiteStore.version` while no watch is open: nothing is kept on its word."""
    return None
