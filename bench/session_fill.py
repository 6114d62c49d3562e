"""Filling a session store with many sessions, for bench/million.py: records made as the BFF makes
them (`new_session`, `encode_record`, the store key `session_key(id)`), cloned from the one real
logged-in session (`real_session`: its claims and tokens, so every record has the real size), each
with a user and provider session of its own, written straight into the store the BFF runs on.

SQLite: `executemany` into the BFF's `entries` table, one transaction per `CHUNK` rows (one
transaction for all would hold the write lock longer than the BFF's 5 s busy timeout, and a
slide of the real session would fail meanwhile). Redis: bff.stores.redis's own Lua scripts
(`WRITE`, `INDEX`) through its key layout, pipelined `CHUNK` at a time.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bff.config import Settings, load_settings
from bff.cookies import CookieCodec
from bff.login import LoginResult
from bff.session import Session, new_session, session_key
from bff.session_record import decode_record, encode_record
from bff.stores.redis_scripts import INDEX, WRITE
from bff.tokenset import TokenSet

__all__ = [
    "CHUNK",
    "Record",
    "expire_redis",
    "expire_sqlite",
    "fill_redis",
    "fill_sqlite",
    "real_session",
    "records",
    "redis_count",
    "sqlite_count",
]

CHUNK = 20_000
REDIS_PREFIX = "bff:"  # RedisStore's default prefix: r:<key> records, sub:/sid: index sets
USER_AGENT = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@dataclass(frozen=True)
class Record:
    key: str
    value: bytes
    ttl: float
    sub: str
    sid: str | None


def real_session(config: Path, cookie: str, raw: bytes) -> tuple[Settings, Session]:
    """The BFF's settings (its config file) and the session its cookie names, decoded from its record `raw`."""
    settings = load_settings({}, config)
    session_id = CookieCodec(settings).read_session_id([(b"cookie", cookie.encode("latin-1"))])
    if session_id is None:
        raise ValueError("the session cookie does not verify under the bench's secret key")
    session = decode_record(raw, session_id, session_key(session_id))
    if session is None:
        raise ValueError("the logged-in session's record does not decode")
    return settings, session


def _make(
    claims: dict[str, Any], tokens: TokenSet, lifetime: float, ttl: float, start: int, count: int
) -> list[Record]:
    """Sessions `bench-<start>` to `bench-<start + count - 1>` (in a worker process)."""
    made = []
    for number in range(start, start + count):
        sub, sid = f"bench-{number}", f"bench-sid-{number}"
        login = LoginResult(sub, sid, {**claims, "sub": sub, "sid": sid}, tokens)
        session = new_session(login, [(b"user-agent", USER_AGENT)], now=time.time(), lifetime=lifetime)
        made.append(Record(session.key, encode_record(session), ttl, sub, sid))
    return made


def _all_cpus() -> None:
    os.sched_setaffinity(0, range(os.cpu_count() or 1))  # the BFF idles during a fill: use its CPU too


def records(template: Session, settings: Settings, count: int, start: int = 0) -> Iterator[list[Record]]:
    """`count` new sessions like `template`, users `bench-<n>` from `start` on, in chunks of at
    most `CHUNK`, with the store ttl the BFF gives a new session (its idle timeout). Encoding one
    costs ~120 us (HKDF, AES-GCM): made by a process per CPU, a few chunks ahead of the writer."""
    lifetime = settings.session.absolute_timeout
    ttl = min(settings.session.idle_timeout, lifetime)
    claims = dict(template.claims)
    workers = os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers, initializer=_all_cpus) as pool:
        pending: deque[Future[list[Record]]] = deque()
        for first in range(start, start + count, CHUNK):
            size = min(CHUNK, start + count - first)
            pending.append(pool.submit(_make, claims, template.tokens, lifetime, ttl, first, size))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def fill_sqlite(path: Path, rows: Iterator[list[Record]]) -> list[str]:
    """Insert `rows` into the BFF's SQLite file; their keys."""
    keys: list[str] = []
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB of pages: the indexes' random inserts
        for chunk in rows:
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO entries (key, value, expires_at, sub, sid) VALUES (?, ?, ?, ?, ?)",
                [(r.key, r.value, now + r.ttl, r.sub, r.sid) for r in chunk],
            )
            conn.execute("COMMIT")
            keys += [r.key for r in chunk]
    finally:
        conn.close()
    return keys


def sqlite_count(path: Path) -> int:
    """The rows of the entries table, expired or not (what a sweep deletes is gone from here)."""
    with sqlite3.connect(path, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])


def expire_sqlite(path: Path, keys: Sequence[str]) -> None:
    """End `keys` now, as if they had been written with a ttl that just ran out."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            past = time.time() - 1
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE entries SET expires_at = ? WHERE key = ?", [(past, k) for k in chunk])
            conn.execute("COMMIT")
    finally:
        conn.close()


def fill_redis(url: str, rows: Iterator[list[Record]]) -> list[str]:
    """Write `rows` as RedisStore.set does (index sets first, then the record), pipelined."""
    client = redis.Redis.from_url(url)
    write, index = client.script_load(WRITE), client.script_load(INDEX)
    keys: list[str] = []
    try:
        for chunk in rows:
            pipe = client.pipeline(transaction=False)
            for r in chunk:
                ms = max(1, math.ceil(r.ttl * 1000))  # RedisStore's rounding
                for name, field in (("sub", r.sub), ("sid", r.sid)):
                    if field is not None:
                        pipe.evalsha(index, 1, f"{REDIS_PREFIX}{name}:{field}", r.key, ms)
                sid = "" if r.sid is None else "=" + r.sid
                pipe.evalsha(write, 1, f"{REDIS_PREFIX}r:{r.key}", r.value, ms, "set", b"", "=" + r.sub, sid)
            pipe.execute()
            keys += [r.key for r in chunk]
    finally:
        client.close()
    return keys


def redis_count(url: str) -> int:
    """The session records in Redis (DBSIZE less the index sets is not exact; SCAN is too slow at 1M)."""
    client = redis.Redis.from_url(url)
    try:
        return int(client.eval(f"return #redis.call('KEYS', '{REDIS_PREFIX}r:*')", 0))
    finally:
        client.close()


def expire_redis(url: str, keys: Sequence[str]) -> None:
    """End `keys` in 1 ms (PEXPIRE): Redis's own active expiry then deletes them, its sweep."""
    client = redis.Redis.from_url(url)
    try:
        for start in range(0, len(keys), CHUNK):
            pipe = client.pipeline(transaction=False)
            for key in keys[start : start + CHUNK]:
                pipe.pexpire(f"{REDIS_PREFIX}r:{key}", 1)
            pipe.execute()
    finally:
        client.close()
