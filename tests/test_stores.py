"""The store contract, once for every backend: memory, SQLite (a tmp file), a real redis-server,
a real three-primary Redis Cluster and a real primary behind three sentinels.

Then what only one backend can show: SQLite shared by several processes (the lease, the
busy timeout, the purge), Redis stopped and restarted under a live store.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bff.errors import ConfigError, StoreUnavailable
from bff.stores import Store, open_store, redis_tracking, sqlite_version
from bff.stores.common import SWEEP_INTERVAL
from bff.stores.memory import MemoryStore
from bff.stores.redis import RedisStore
from bff.stores.redis_tracking import HEARTBEAT, TRACKING_NAME
from bff.stores.sqlite import SWEEP_BATCH, SQLiteStore
from tests.fakes import Clock
from tests.support.redis_server import RedisServer, redis_server_or_skip
from tests.support.redis_topologies import RedisClusterNodes
from tests.support.stores import redis_url

REPO = Path(__file__).resolve().parent.parent


# -- entries ----------------------------------------------------------------------------------


async def test_get_of_a_missing_key_is_none(store: Store) -> None:
    assert await store.get("nope") is None


async def test_set_then_get_returns_the_bytes(store: Store) -> None:
    value = bytes(range(256)) * 4
    await store.set("k", value, 60)
    assert await store.get("k") == value
    await store.set("k", b"second", 60)
    assert await store.get("k") == b"second"


async def test_an_entry_past_its_ttl_is_invisible(store: Store) -> None:
    await store.set("short", b"v", 0.05, sub="alice", sid="s1")
    await store.set("long", b"v", 60, sub="alice", sid="s1")
    assert await store.get("short") == b"v"
    await asyncio.sleep(0.12)
    assert await store.get("short") is None
    assert await store.keys_where(sub="alice") == ["long"]
    assert await store.keys_where(sid="s1") == ["long"]
    assert await store.delete("short") is False
    assert await store.replace("short", b"w", 60) is False
    assert await store.get("long") == b"v"


async def test_delete_says_whether_something_was_deleted(store: Store) -> None:
    await store.set("k", b"v", 60, sub="alice")
    assert await store.delete("k") is True
    assert await store.get("k") is None
    assert await store.keys_where(sub="alice") == []
    assert await store.delete("k") is False


async def test_keys_where_matches_every_given_field(store: Store) -> None:
    await store.set("a1", b"v", 60, sub="alice", sid="s1")
    await store.set("a2", b"v", 60, sub="alice", sid="s2")
    await store.set("b1", b"v", 60, sub="bob", sid="s1")
    await store.set("plain", b"v", 60)
    assert sorted(await store.keys_where(sub="alice")) == ["a1", "a2"]
    assert sorted(await store.keys_where(sid="s1")) == ["a1", "b1"]
    assert await store.keys_where(sub="alice", sid="s1") == ["a1"]
    assert await store.keys_where(sub="carol") == []
    with pytest.raises(ValueError, match="sub or sid"):
        await store.keys_where()


async def test_indexed_keys_lists_every_live_entry_with_a_sub(store: Store) -> None:
    assert await store.indexed_keys() == []
    await store.set("a1", b"v", 60, sub="alice", sid="s1")
    await store.set("b1", b"v", 60, sub="bob")
    await store.set("sid-only", b"v", 60, sid="s2")
    await store.set("plain", b"v", 60)
    await store.add_if_absent("marker", b"used", 60)
    await store.set("short", b"v", 0.05, sub="carol")
    await store.set("gone", b"v", 60, sub="dave")
    await store.delete("gone")
    await store.set("unindexed-later", b"v", 60, sub="erin")
    await store.set("unindexed-later", b"v", 60)
    await asyncio.sleep(0.12)
    assert sorted(await store.indexed_keys()) == ["a1", "b1"]


async def test_set_replaces_the_index_fields(store: Store) -> None:
    await store.set("k", b"v", 60, sub="alice", sid="s1")
    await store.set("k", b"v", 60, sub="bob")
    assert await store.keys_where(sub="alice") == []
    assert await store.keys_where(sid="s1") == []
    assert await store.keys_where(sub="bob") == ["k"]


async def test_replace_writes_only_over_a_live_and_expected_value(store: Store) -> None:
    assert await store.replace("k", b"v", 60, sub="alice") is False
    assert await store.get("k") is None
    await store.set("k", b"one", 60, sub="alice")
    assert await store.replace("k", b"two", 60, sub="alice") is True
    assert await store.replace("k", b"three", 60, sub="alice", expected=b"one") is False
    assert await store.get("k") == b"two"
    assert await store.replace("k", b"three", 60, sub="alice", expected=b"two") is True
    assert await store.get("k") == b"three"
    assert await store.keys_where(sub="alice") == ["k"]


async def test_replace_renews_the_ttl(store: Store) -> None:
    await store.set("k", b"v", 0.15)
    assert await store.replace("k", b"w", 60) is True
    await asyncio.sleep(0.25)
    assert await store.get("k") == b"w"


async def test_add_if_absent_writes_once(store: Store) -> None:
    assert await store.add_if_absent("jti:1", b"used", 60) is True
    assert await store.add_if_absent("jti:1", b"again", 60) is False
    assert await store.get("jti:1") == b"used"


async def test_add_if_absent_takes_over_an_expired_marker(store: Store) -> None:
    assert await store.add_if_absent("m", b"1", 0.05) is True
    await asyncio.sleep(0.12)
    assert await store.add_if_absent("m", b"2", 60) is True
    assert await store.get("m") == b"2"


async def test_add_if_absent_is_atomic_under_concurrency(store: Store) -> None:
    results = await asyncio.gather(*(store.add_if_absent("once", str(i).encode(), 60) for i in range(20)))
    assert results.count(True) == 1


async def test_ping_answers(store: Store) -> None:
    await store.ping()


# -- the lease --------------------------------------------------------------------------------


async def test_lock_admits_one_holder_at_a_time(store: Store) -> None:
    holders = 0
    most = 0
    entered = 0

    async def worker() -> None:
        nonlocal holders, most, entered
        async with store.lock("refresh:s", ttl=5, wait=5):
            holders += 1
            entered += 1
            most = max(most, holders)
            await asyncio.sleep(0.005)
            holders -= 1

    await asyncio.gather(*(worker() for _ in range(10)))
    assert (entered, most) == (10, 1)


async def test_lock_gives_up_after_wait(store: Store) -> None:
    async with store.lock("busy", ttl=5, wait=1):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="busy"):
            async with store.lock("busy", ttl=5, wait=0.1):
                pass  # pragma: no cover
        assert 0.08 <= time.monotonic() - started < 1
    async with store.lock("busy", ttl=5, wait=0):
        pass


async def test_different_lock_names_do_not_block_each_other(store: Store) -> None:
    async with store.lock("a", ttl=5, wait=0), store.lock("b", ttl=5, wait=0):
        pass


async def test_lock_is_released_when_the_body_raises(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.lock("l", ttl=5, wait=0):
            raise RuntimeError("boom")
    async with store.lock("l", ttl=5, wait=0):
        pass


async def test_lease_of_a_dead_holder_expires_and_its_late_release_spares_the_successor(store: Store) -> None:
    dead = store.lock("l", ttl=0.2, wait=0)
    await dead.__aenter__()  # the holder "dies": it never leaves the block in time
    started = time.monotonic()
    async with store.lock("l", ttl=5, wait=2):
        assert time.monotonic() - started >= 0.1
        await dead.__aexit__(None, None, None)  # the dead holder wakes up and releases
        with pytest.raises(StoreUnavailable):
            async with store.lock("l", ttl=5, wait=0.05):
                pass  # pragma: no cover


# -- several processes ------------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from bff.stores import open_store

    async def main(url, rounds):
        store = open_store(url)
        await store.open()
        for _ in range(rounds):
            async with store.lock("counter", ttl=10, wait=20):
                # read, pause, write: without the lease, two processes lose each other's increments
                value = int(await store.get("counter") or b"0")
                await asyncio.sleep(0.003)
                await store.set("counter", str(value + 1).encode(), 60)
        await store.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)

_DIE_HOLDING = textwrap.dedent(
    """
    import asyncio, os, sys
    from bff.stores import open_store

    async def main(url):
        store = open_store(url)
        await store.open()
        await store.lock("lease", ttl=0.5, wait=1).__aenter__()
        print("held", flush=True)
        os._exit(0)  # die holding the lease

    asyncio.run(main(sys.argv[1]))
    """
)


_MARKERS = textwrap.dedent(
    """
    import asyncio, sys
    from bff.stores import open_store

    async def main(url, prefix):
        store = open_store(url)
        await store.open()
        won = 0
        for i in range(40):
            won += await store.add_if_absent(f"{prefix}:{i}", b"used", 60)
        await store.close()
        print(won, flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def _python(code: str, *args: str, stdout: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=stdout, text=True)


@pytest.fixture(params=["sqlite", "redis", "redis-cluster", "redis-sentinel"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    url = redis_url(request, request.param)
    # Database 1: the contract tests use database 0 under random prefixes. A cluster has only
    # database 0; there the processes' default prefix `bff:` keeps them apart.
    return url if request.param == "redis-cluster" else url[: -len("/0")] + "/1"


async def test_lock_is_exclusive_across_processes(shared_url: str) -> None:
    store = open_store(shared_url)
    await store.open()
    await store.delete("counter")
    rounds = 25
    workers = [_python(_WORKER, shared_url, str(rounds)) for _ in range(2)]
    for worker in workers:
        assert await asyncio.to_thread(worker.wait, 60) == 0
    assert await store.get("counter") == str(2 * rounds).encode()
    await store.close()


async def test_a_one_time_marker_is_won_by_exactly_one_process(shared_url: str) -> None:
    prefix = f"jti-{uuid.uuid4().hex}"
    workers = [_python(_MARKERS, shared_url, prefix, stdout=subprocess.PIPE) for _ in range(3)]
    won = 0
    for worker in workers:
        out, _ = await asyncio.to_thread(worker.communicate, timeout=60)
        assert worker.returncode == 0
        won += int(out)
    assert won == 40


async def test_lease_of_a_dead_process_expires(shared_url: str) -> None:
    store = open_store(shared_url)
    await store.open()
    with _python(_DIE_HOLDING, shared_url, stdout=subprocess.PIPE) as dying:
        assert dying.stdout is not None
        assert await asyncio.to_thread(dying.stdout.readline) == "held\n"
        await asyncio.to_thread(dying.wait, 10)
    with pytest.raises(StoreUnavailable):
        async with store.lock("lease", ttl=5, wait=0.05):
            pass  # pragma: no cover
    async with store.lock("lease", ttl=5, wait=3):
        pass
    await store.close()


async def test_sqlite_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    first, second = SQLiteStore(tmp_path / "s.db"), SQLiteStore(tmp_path / "s.db")
    await first.open()
    await second.open()
    await first.set("k", b"v", 60, sub="alice")
    assert await second.get("k") == b"v"
    assert await second.keys_where(sub="alice") == ["k"]
    assert await second.add_if_absent("k", b"w", 60) is False
    assert await second.delete("k") is True
    assert await first.get("k") is None
    await first.close()
    await second.close()


# -- version ----------------------------------------------------------------------------------

UNVERSIONED = ("redis-cluster", "redis-sentinel")
"""Backends whose `version()` is always None: every load reads the store."""


@pytest.fixture
def slow_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PONG in the test's time: Redis's version then moves only with the writes."""
    monkeypatch.setattr(redis_tracking, "HEARTBEAT", 60.0)


async def _moved(store: Store, before: int | None, wait: float = 2.0) -> bool:
    """Whether `store.version()` differs from `before` within `wait` seconds (Redis's push comes
    on a connection of its own; SQLite's and memory's version moves with the write itself)."""
    deadline = time.monotonic() + wait
    while store.version() == before:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def test_the_memory_version_moves_with_each_write_and_not_with_reads() -> None:
    store = MemoryStore()
    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: store.set("k", b"v", 60, sub="alice"),
        lambda: store.replace("k", b"w", 60),
        lambda: store.add_if_absent("m", b"1", 60),
        lambda: store.delete("k"),
    ]
    for write in writes:
        before = store.version()
        await store.get("k")
        await store.keys_where(sub="alice")
        await store.replace("absent", b"x", 60)  # wrote nothing
        assert store.version() == before
        await write()
        assert store.version() != before


@pytest.mark.usefixtures("slow_heartbeat")
async def test_the_version_stays_over_reads_and_moves_with_each_write_of_another_process(
    shared_url: str, request: pytest.FixtureRequest
) -> None:
    """`reader` and `writer` on one file or one Redis are two workers: every kind of write by
    the writer moves the reader's version; reads and a write that did not happen do not."""
    reader, writer = open_store(shared_url), open_store(shared_url)
    await reader.open()
    await writer.open()
    try:
        if request.node.callspec.params["shared_url"] in UNVERSIONED:
            assert (reader.version(), writer.version()) == (None, None)
            return
        key = f"v-{uuid.uuid4().hex}"
        writes: list[Callable[[], Awaitable[object]]] = [
            lambda: writer.set(key, b"v", 60, sub="alice"),
            lambda: writer.replace(key, b"w", 60, expected=b"v"),
            lambda: writer.add_if_absent(f"{key}-marker", b"1", 60),
            lambda: writer.delete(key),
        ]
        for write in writes:
            before = reader.version()
            assert before is not None
            await reader.get(key)
            await writer.get(key)
            await writer.replace(key, b"x", 60, expected=b"not-the-value")  # wrote nothing
            assert not await _moved(reader, before, wait=0.2)
            await write()
            assert await _moved(reader, before)
    finally:
        await reader.close()
        await writer.close()


_LOCK_HELD = textwrap.dedent(
    """
    import fcntl, os, struct, sys
    # F_GETLK for a write lock on a byte range: another process's lock there says it is held.
    fd = os.open(sys.argv[1], os.O_RDWR)
    query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, int(sys.argv[2]), int(sys.argv[3]), 0)
    kind = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, query))[0]
    print("held" if kind != fcntl.F_UNLCK else "free")
    """
)
# SQLite's unix VFS: the shared-lock bytes of the database file, and the `-shm` file's DMS byte
# (held shared by every process with a connection open in WAL mode).
_DB_SHARED, _SHM_DMS = (0x40000000, 512), (128, 1)


async def _lock_held(path: Path, where: tuple[int, int]) -> str:
    probe = _python(_LOCK_HELD, str(path), *map(str, where), stdout=subprocess.PIPE)
    out, _ = await asyncio.to_thread(probe.communicate, timeout=30)
    return out.strip()


@pytest.mark.parametrize("header", [True, False], ids=["wal-index header", "PRAGMA data_version"])
async def test_opening_a_store_keeps_the_processs_locks_on_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, header: bool
) -> None:
    """POSIX locks belong to the process: closing any descriptor of a file drops every lock this
    process's connections hold on it. Another process, seeing none on the `-shm` file, takes it as
    its own and truncates it (a read of the mapped header then dies of SIGBUS), or writes under a
    reader. Opening a store, its version's watch included, and a second store on the same file
    in the same process, must leave the locks where SQLite put them."""
    if not header:
        monkeypatch.setattr(sqlite_version, "_WAL_INDEX_VERSION", 1)
    first, second = SQLiteStore(tmp_path / "s.db"), SQLiteStore(tmp_path / "s.db")
    await first.open()
    try:
        assert first._watch is not None
        assert first._watch.reads_header is header
        assert await _lock_held(tmp_path / "s.db-shm", _SHM_DMS) == "held"
        await first.set("k", b"v", 60)
        await second.open()
        assert await _lock_held(tmp_path / "s.db", _DB_SHARED) == "held"
        assert await _lock_held(tmp_path / "s.db-shm", _SHM_DMS) == "held"
        assert first.version() is not None
    finally:
        await second.close()
        await first.close()


@pytest.mark.parametrize("header", [True, False], ids=["wal-index header", "PRAGMA data_version"])
async def test_sqlite_version_of_another_store_on_the_file_moves_with_its_commits_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, header: bool
) -> None:
    """The wal-index header, or (a `-shm` file of another format) the PRAGMA: the same answers."""
    if not header:
        monkeypatch.setattr(sqlite_version, "_WAL_INDEX_VERSION", 1)
    reader, writer = SQLiteStore(tmp_path / "s.db"), SQLiteStore(tmp_path / "s.db")
    await reader.open()
    await writer.open()
    try:
        assert reader._watch is not None
        assert reader._watch.reads_header is header
        before = reader.version()
        assert before is not None
        await reader.get("k")
        await writer.replace("k", b"v", 60)  # nothing to replace: no commit
        assert reader.version() == before
        await writer.set("k", b"v", 60)
        assert reader.version() != before
    finally:
        await reader.close()
        await writer.close()
    assert reader.version() is None


async def test_redis_tracking_lost_is_version_none_until_a_new_connection_tracks_again(
    redis_server: RedisServer,
) -> None:
    import redis.asyncio as aioredis

    store = RedisStore(redis_server.url, prefix=f"t-{uuid.uuid4().hex}:")
    await store.open()
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        before = store.version()
        assert before is not None
        (tracking,) = [c for c in await admin.client_list() if c["name"] == TRACKING_NAME]
        await admin.client_kill_filter(_id=tracking["id"])
        assert await _moved(store, before)
        assert store.version() is None
        deadline = time.monotonic() + 3 * HEARTBEAT + 2
        while store.version() is None:
            assert time.monotonic() < deadline, "the tracking connection did not come back"
            await asyncio.sleep(0.05)
        after = store.version()
        assert after is not None
        assert after > before
        await store.set("k", b"v", 60)
        assert await _moved(store, after)
    finally:
        await admin.aclose()
        await store.close()


# -- failures ---------------------------------------------------------------------------------


async def test_sqlite_path_that_cannot_be_created_is_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    store = SQLiteStore(tmp_path / "a-file" / "sessions.db")
    with pytest.raises(StoreUnavailable, match="session store"):
        await store.open()
    with pytest.raises(StoreUnavailable):
        await store.get("k")
    with pytest.raises(StoreUnavailable):
        await store.ping()
    await store.close()


async def test_sqlite_locked_beyond_the_busy_timeout_is_store_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", busy_timeout=0.1)
    await store.open()
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="locked"):
            await store.set("k", b"v", 60)
        assert time.monotonic() - started < 2
    finally:
        other.execute("ROLLBACK")
        other.close()
    await store.set("k", b"v", 60)
    assert await store.get("k") == b"v"
    await store.close()


async def test_sqlite_purges_expired_rows_at_most_once_a_minute(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(tmp_path / "s.db", clock=clock)
    await store.open()
    await store.set("first", b"v", 600)  # a write sweeps (nothing to purge yet)
    await store.set("gone", b"v", 1)
    async with store.lock("old", ttl=1, wait=0):
        pass
    dead = store.lock("dead", ttl=1, wait=0)
    await dead.__aenter__()
    clock.advance(30)
    await store.set("kept", b"v", 600)  # within the minute: no sweep
    with sqlite3.connect(tmp_path / "s.db") as raw:
        assert sorted(row[0] for row in raw.execute("SELECT key FROM entries")) == ["first", "gone", "kept"]
    raw.close()
    clock.advance(31)  # the sweep is due
    await store.set("last", b"v", 600)
    with sqlite3.connect(tmp_path / "s.db") as raw:
        assert sorted(row[0] for row in raw.execute("SELECT key FROM entries")) == ["first", "kept", "last"]
        assert raw.execute("SELECT count(*) FROM leases").fetchone() == (0,)
    raw.close()
    await store.close()


async def test_redis_stopped_is_store_unavailable_and_restarted_works_again(tmp_path: Path) -> None:
    server = RedisServer(redis_server_or_skip(), tmp_path)
    server.start()
    store = RedisStore(server.url, timeout=0.5)
    try:
        await store.open()
        await store.set("k", b"v", 60, sub="alice")
        server.stop()
        calls: list[Callable[[], Awaitable[object]]] = [
            store.ping,
            lambda: store.get("k"),
            lambda: store.set("k", b"v", 60, sub="alice"),
            lambda: store.delete("k"),
            lambda: store.keys_where(sub="alice"),
            store.indexed_keys,
            lambda: store.add_if_absent("m", b"1", 60),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable, match="redis"):
                await call()
        with pytest.raises(StoreUnavailable):
            async with store.lock("l", ttl=1, wait=0.1):
                pass  # pragma: no cover
        server.start()  # same port, empty (no persistence)
        await store.ping()
        assert await store.get("k") is None
    finally:
        await store.close()
        server.stop()


async def test_redis_not_running_at_open_is_store_unavailable(tmp_path: Path) -> None:
    server = RedisServer(redis_server_or_skip(), tmp_path)  # never started
    store = RedisStore(server.url, timeout=0.5)
    with pytest.raises(StoreUnavailable):
        await store.open()
    await store.close()


async def test_redis_entries_and_index_sets_carry_ttls(redis_server: RedisServer) -> None:
    import redis.asyncio as aioredis

    store = RedisStore(redis_server.url, prefix="ttl-test:")
    await store.open()
    await store.set("k", b"v", 30, sub="alice", sid="s1")
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.hgetall("ttl-test:r:k") == {b"v": b"v", b"sub": b"alice", b"sid": b"s1"}
        for key in ("ttl-test:r:k", "ttl-test:sub:alice", "ttl-test:sid:s1"):
            assert 25_000 < await client.pttl(key) <= 30_000, key
        assert sorted(await client.keys("ttl-test:*")) == [b"ttl-test:r:k", b"ttl-test:sid:s1", b"ttl-test:sub:alice"]
    finally:
        await client.aclose()
        await store.close()


async def test_redis_indexed_keys_reads_only_its_own_prefix_taken_literally(redis_server: RedisServer) -> None:
    starred, plain = RedisStore(redis_server.url, prefix="g*:"), RedisStore(redis_server.url, prefix="gx:")
    await starred.open()
    await plain.open()
    try:
        await starred.set("mine", b"v", 60, sub="alice")
        await plain.set("theirs", b"v", 60, sub="alice")
        assert await starred.indexed_keys() == ["mine"]
        assert await plain.indexed_keys() == ["theirs"]
    finally:
        await starred.delete("mine")
        await plain.delete("theirs")
        await starred.close()
        await plain.close()


async def test_redis_cluster_spreads_one_users_records_over_every_primary(redis_cluster: RedisClusterNodes) -> None:
    """Each operation names one key, so one user's records may live on three nodes (their slots
    decide) while the user's index set lives on a fourth slot; `keys_where` still finds them all."""
    import redis.asyncio as aioredis

    store = RedisStore(redis_cluster.url, prefix="spread-test:")
    await store.open()
    keys = [f"k{i}" for i in range(12)]
    try:
        for key in keys:
            await store.set(key, key.encode(), 60, sub="carol", sid=f"sid-{key}")
        assert sorted(await store.keys_where(sub="carol")) == sorted(keys)
        assert await store.keys_where(sub="carol", sid="sid-k7") == ["k7"]
        per_node = []
        for node in redis_cluster.nodes:
            async with aioredis.Redis(port=node.port) as client:
                per_node.append(len(await client.keys("spread-test:r:*")))
        assert sum(per_node) == 12, per_node
        assert min(per_node) >= 1, per_node
        assert await store.delete("k3") is True
        assert sorted(await store.keys_where(sub="carol")) == sorted(set(keys) - {"k3"})
    finally:
        await store.close()


# -- URLs -------------------------------------------------------------------------------------


def test_open_store_picks_the_backend_by_url_without_io(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    for url in ("memory://", "sqlite:///x.db", "redis://127.0.0.1:1/0", "redis+cluster://127.0.0.1:1/"):
        assert isinstance(open_store(url), Store)  # each backend has every method of the protocol
    relative = open_store("sqlite:///.bff/sessions.db")
    assert isinstance(relative, SQLiteStore)
    assert relative.path == Path(".bff/sessions.db")
    absolute = open_store(f"sqlite:///{tmp_path}/never-created/s.db")
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == tmp_path / "never-created" / "s.db"
    assert not (tmp_path / "never-created").exists()
    modes = {}
    for url in ("redis://127.0.0.1:1/0", "redis+sentinel://127.0.0.1:1/m/0", "redis+cluster://127.0.0.1:1/"):
        redis_store = open_store(url)
        assert isinstance(redis_store, RedisStore)
        modes[url.split(":", 1)[0]] = redis_store.mode
    assert modes == {"redis": "single", "redis+sentinel": "sentinel", "redis+cluster": "cluster"}
    for url in ("redis://:secret@127.0.0.1:1/0", "redis+sentinel://:secret@h:1/m", "redis+cluster://u:secret@h:1"):
        assert "secret" not in repr(open_store(url))


@pytest.mark.parametrize(
    "url",
    [
        "postgres://x",
        "sqlite://",
        "sqlite:///",
        "file:///x.db",
        "",
        "redis+sentinel://:pw@h:26379",
        "redis+cluster://:pw@h:7000/2",
        "redis+cluster://:pw@h/",
        "postgres://user:pw@h/db",
    ],
)
def test_open_store_rejects_unknown_urls_in_one_line_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(url)
    [problem] = caught.value.problems
    assert problem.startswith("session_store: "), problem
    assert "pw" not in problem, problem


@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("true", "1 error")])
def test_a_missing_redis_server_skips_loudly_but_fails_under_ci(ci: str, outcome: str) -> None:
    env = {**os.environ, "BFF_TEST_REDIS_SERVER": "/nonexistent/redis-server", "CI": ci}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            f"{__file__}::test_ping_answers[redis]",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert outcome in run.stdout, run.stdout
    assert "REDIS TESTS NOT RUN" in run.stdout
    assert (run.returncode == 0) is (ci == "")


async def test_a_sqlite_sweep_of_a_large_backlog_deletes_in_batches_and_lets_other_calls_in(tmp_path: Path) -> None:
    """The triggering write deletes one batch; the rest goes a batch per call of the store's
    thread, so a read or write queued meanwhile waits for one batch, not the whole backlog."""
    clock = Clock()
    store = SQLiteStore(tmp_path / "s.db", clock=clock)
    await store.open()
    expired = 2 * SWEEP_BATCH + 10
    with sqlite3.connect(tmp_path / "s.db") as raw:
        raw.executemany(
            "INSERT INTO entries (key, value, expires_at) VALUES (?, ?, ?)",
            ((f"old-{i}", b"v", clock() + 1) for i in range(expired)),
        )
    raw.close()
    clock.advance(SWEEP_INTERVAL + 2)

    def remaining() -> int:
        with sqlite3.connect(tmp_path / "s.db") as raw:
            (count,) = raw.execute("SELECT count(*) FROM entries WHERE key LIKE 'old-%'").fetchone()
        raw.close()
        return int(count)

    await store.set("new", b"v", 600)  # the sweep is due: one batch now, the rest in the background
    assert remaining() == expired - SWEEP_BATCH
    draining = store._draining
    assert draining is not None
    assert await store.get("new") == b"v"  # served between two batches
    await draining
    assert remaining() == 0
    assert store._draining is None
    await store.close()
