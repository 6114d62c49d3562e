"""`SessionMemo` (bff.session_memo): a request with the same `Cookie` header as an earlier one
gets that session without a full load, and never once a full load would answer otherwise: after
a write anywhere on the store (another worker's logout or refresh), past the session's end, or
when its next slide is due."""

from __future__ import annotations

from pathlib import Path

import pytest

from bff.errors import StoreUnavailable
from bff.server_sessions import SLIDE_INTERVAL, ServerSessions
from bff.session_memo import MAX_COOKIE_HEADER, SessionMemo
from bff.stores import Store
from bff.stores.memory import MemoryStore
from bff.stores.sqlite import SQLiteStore
from bff.tokenset import TokenSet
from tests.fakes import Clock, HookedStore
from tests.test_sessions_contract import ABSOLUTE, IDLE, build, signed_in
from tests.test_sessions_contract import kind as kind  # the fixture: both modes


def _fail(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a full load ran where the memo should have answered")


async def test_the_same_cookie_header_is_answered_from_the_memo(kind: str, store: Store, clock: Clock) -> None:
    sessions = build(kind, store, clock)
    _, cookies = await signed_in(sessions)
    first = await sessions.load(cookies)
    assert first is not None
    sessions._cookies = _Refusing()  # type: ignore[attr-defined]  # a full load would fail now
    if store.version() is None:  # Redis Cluster and Sentinel cannot tell: every load is a full one
        with pytest.raises(AssertionError, match="a full load ran"):
            await sessions.load(cookies)
        return
    assert await sessions.load(cookies) is first
    assert await sessions.load([(b"user-agent", b"Test"), *cookies]) is first  # other headers: the same key


async def test_a_logout_on_another_worker_is_seen_at_the_next_load(kind: str, tmp_path: Path, clock: Clock) -> None:
    """Two workers on one SQLite file, each with its own store connection and memo."""
    first, second = SQLiteStore(tmp_path / "s.db"), SQLiteStore(tmp_path / "s.db")
    await first.open()
    await second.open()
    try:
        worker_a, worker_b = build(kind, first, clock), build(kind, second, clock)
        _, cookies = await signed_in(worker_a)
        for _ in range(2):
            assert await worker_a.load(cookies) is not None  # the second answered by the memo
        on_b = await worker_b.load(cookies)
        assert on_b is not None
        await worker_b.destroy(on_b)
        assert await worker_a.load(cookies) is None
    finally:
        await first.close()
        await second.close()


async def test_a_refresh_on_another_worker_is_seen_at_the_next_load(tmp_path: Path, clock: Clock) -> None:
    """Server mode (cookie mode's refreshed tokens travel in the new cookie instead)."""
    first, second = SQLiteStore(tmp_path / "s.db"), SQLiteStore(tmp_path / "s.db")
    await first.open()
    await second.open()
    try:
        worker_a, worker_b = build("server", first, clock), build("server", second, clock)
        _, cookies = await signed_in(worker_a)
        assert await worker_a.load(cookies) is not None
        on_b = await worker_b.load(cookies)
        assert on_b is not None
        await worker_b.save(on_b.with_tokens(TokenSet(access_token="at-1", refresh_token="rt-1")), replacing=on_b)
        after = await worker_a.load(cookies)
        assert after is not None
        assert after.tokens.access_token == "at-1"
    finally:
        await first.close()
        await second.close()


async def test_the_memo_ends_at_the_idle_and_absolute_ends(kind: str, clock: Clock) -> None:
    sessions = build(kind, MemoryStore(clock=clock), clock)
    _, cookies = await signed_in(sessions)
    assert await sessions.load(cookies) is not None
    clock.advance(IDLE)  # no request in between: idle, whatever the memo held
    assert await sessions.load(cookies) is None
    other = build(kind, MemoryStore(clock=clock), clock)
    _, cookies = await signed_in(other)
    assert await other.load(cookies) is not None
    clock.advance(ABSOLUTE)
    assert await other.load(cookies) is None


async def test_a_slide_that_could_not_be_written_is_tried_again_at_the_next_load(clock: Clock) -> None:
    store = _FailingReplace(clock)
    sessions = build("server", store, clock)
    assert isinstance(sessions, ServerSessions)
    _, cookies = await signed_in(sessions)
    clock.advance(SLIDE_INTERVAL)
    store.failing = True
    assert await sessions.load(cookies) is not None
    assert await sessions.load(cookies) is not None
    assert store.replaces == 2  # not answered from the memo: its stored last use is still old
    store.failing = False
    assert await sessions.load(cookies) is not None
    assert store.replaces == 3
    assert await sessions.load(cookies) is not None
    assert store.replaces == 3  # slid: the memo answers until the next slide


# -- SessionMemo on its own --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        ([(b"cookie", b"a=1")], b"a=1"),
        ([(b"host", b"x"), (b"Cookie", b"a=1")], b"a=1"),
        ([(b"cookie", b"a=1"), (b"cookie", b"b=2")], None),  # several: the full load decides
        ([(b"cookie", b"a" * (MAX_COOKIE_HEADER + 1))], None),
        ([(b"cookie", b"a" * MAX_COOKIE_HEADER)], b"a" * MAX_COOKIE_HEADER),
    ],
    ids=["none", "one", "any case", "several", "too long", "longest kept"],
)
def test_the_cookie_header_it_keys_on(headers: list[tuple[bytes, bytes]], expected: bytes | None) -> None:
    assert SessionMemo.cookie_header(headers) == expected


async def test_what_it_keeps_and_for_how_long(clock: Clock) -> None:
    store = MemoryStore(clock=clock)
    sessions = build("server", store, clock)
    session, _ = await signed_in(sessions)
    memo = SessionMemo(store, clock, size=2)
    version = store.version()
    memo.keep(b"a", None, clock.now + 10, session)  # a store that cannot tell: never kept
    memo.keep(b"b", version, clock.now, session)  # already due: never kept
    assert memo.known([(b"cookie", b"a")]) is None
    assert memo.known([(b"cookie", b"b")]) is None
    memo.keep(b"c", version, clock.now + 10, session)
    assert memo.known([(b"cookie", b"c")]) is session
    clock.advance(10)
    assert memo.known([(b"cookie", b"c")]) is None
    for name in (b"d", b"e", b"f"):  # two entries at most, least recently used out
        memo.keep(name, version, clock.now + 10, session)
    assert [memo.known([(b"cookie", name)]) for name in (b"d", b"e", b"f")] == [None, session, session]
    await store.set("elsewhere", b"x", 60)  # any write moves the version
    assert memo.known([(b"cookie", b"e")]) is None


class _Refusing:
    """A cookie codec whose every use fails the test."""

    def __getattr__(self, name: str) -> object:
        return _fail


class _FailingReplace(HookedStore):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.failing = False
        self.replaces = 0

    def before(self, operation: str, /) -> None:
        if operation == "replace":
            self.replaces += 1
            if self.failing:
                raise StoreUnavailable("the store is down")
