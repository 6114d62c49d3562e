"""ServerSessions with an injected clock: lifecycle, timeouts, sliding, listing, and encryption at rest."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from starlette.datastructures import Secret

from bff.config import SessionSettings, Settings
from bff.cookies import CookieCodec
from bff.errors import StoreUnavailable
from bff.login import LoginResult
from bff.server_sessions import SLIDE_INTERVAL, ServerSessions
from bff.session import Session, session_key
from bff.stores import Store, redis_tracking
from bff.stores.memory import MemoryStore
from bff.stores.sqlite import SQLiteStore
from bff.tokenset import TokenSet
from tests.fakes import Clock, CountingStore, ReadOnlyStore, UnreadableStore

IDLE = 1000.0
ABSOLUTE = 5000.0
UA = "Mozilla/5.0 (X11; Linux x86_64) Test"


def new_tokens(n: int = 1) -> TokenSet:
    return TokenSet(
        access_token=f"access-token-{n}-{uuid.uuid4().hex}",
        refresh_token=f"refresh-token-{n}-{uuid.uuid4().hex}",
        id_token=f"id-token-{n}-{uuid.uuid4().hex}",
        expires_at=1_800_000_300.0,
    )


def make_settings(public_url: str = "http://127.0.0.1:8000") -> Settings:
    return Settings(
        secret_keys=(Secret("k" * 40),),
        public_url=public_url,
        session=SessionSettings(idle_timeout=IDLE, absolute_timeout=ABSOLUTE),
    )


def manager(
    store: Store, clock: Clock, public_url: str = "http://127.0.0.1:8000", *, cache_size: int = 2048
) -> ServerSessions:
    settings = make_settings(public_url)
    return ServerSessions(
        store, CookieCodec(settings, clock=clock), settings.session, clock=clock, cache_size=cache_size
    )


async def new_session(sessions: ServerSessions, sub: str = "alice", sid: str | None = "sid-1") -> Session:
    session, _ = await create(sessions, sub=sub, sid=sid, claims={"sub": sub, "name": "Alice"}, user_agent=UA)
    return session


async def create(
    sessions: ServerSessions,
    *,
    sub: str,
    sid: str | None,
    claims: dict[str, str],
    user_agent: str,
    tokens: TokenSet | None = None,
) -> tuple[Session, str]:
    """A new session and its Set-Cookie."""
    login = LoginResult(sub=sub, provider_sid=sid, claims=claims, tokens=tokens or new_tokens())
    session, cookies = await sessions.create(login, [(b"user-agent", user_agent.encode())])
    [cookie] = cookies
    return session, cookie


# -- lifecycle, on every store ----------------------------------------------------------------


async def test_a_created_session_loads_with_its_claims_and_tokens(store: Store) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    created = await new_session(sessions)
    loaded = await sessions.load_id(created.id)
    assert loaded == created
    assert loaded is not None
    assert loaded.tokens.refresh_token == created.tokens.refresh_token
    assert dict(loaded.claims) == {"sub": "alice", "name": "Alice"}
    assert (loaded.created_at, loaded.expires_at) == (clock.now, clock.now + ABSOLUTE)
    assert loaded.key == session_key(created.id)


async def test_every_session_gets_a_new_random_id(store: Store) -> None:
    sessions = manager(store, Clock())
    first, second = await new_session(sessions), await new_session(sessions)
    assert first.id != second.id
    assert first.key != second.key
    assert len(first.id) == 43


async def test_saved_tokens_replace_the_old_and_keep_the_refresh_token(store: Store) -> None:
    sessions = manager(store, Clock())
    session = await new_session(sessions)
    refreshed = session.with_tokens(TokenSet(access_token="access-token-2", expires_at=1_800_000_600.0))
    assert refreshed.tokens.refresh_token == session.tokens.refresh_token
    assert refreshed.tokens.id_token == session.tokens.id_token
    await sessions.save(refreshed, replacing=session)
    loaded = await sessions.load_id(session.id)
    assert loaded is not None
    assert loaded.tokens.access_token == "access-token-2"
    assert loaded.tokens.refresh_token == session.tokens.refresh_token
    rotated = loaded.with_tokens(TokenSet(access_token="access-token-3", refresh_token="refresh-token-3"))
    assert rotated.tokens.refresh_token == "refresh-token-3"


async def test_a_destroyed_session_is_gone_and_a_late_save_does_not_revive_it(store: Store) -> None:
    sessions = manager(store, Clock())
    session = await new_session(sessions)
    await sessions.destroy(session)
    assert await sessions.load_id(session.id) is None
    await sessions.save(session.with_tokens(new_tokens(2)), replacing=session)  # a refresh that finished after logout
    assert await sessions.load_id(session.id) is None
    assert await sessions.destroy_own(session.key, sub="alice") is False


async def test_list_for_shows_the_users_live_sessions_newest_use_first(store: Store) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    first = await new_session(sessions)
    clock.now += 10
    second, _ = await create(sessions, sub="alice", sid="sid-2", claims={}, user_agent="Phone")
    await new_session(sessions, sub="bob")
    infos = await sessions.list_for("alice")
    assert [info.key for info in infos] == [second.key, first.key]
    assert [(info.sub, info.sid) for info in infos] == [("alice", "sid-2"), ("alice", "sid-1")]
    assert infos[0].user_agent == "Phone"
    assert infos[1].created_at == first.created_at
    assert infos[1].expires_at == first.expires_at
    for info in infos:
        assert first.id not in repr(info)
        assert second.id not in repr(info)
    assert await sessions.list_for("carol") == []


async def test_list_all_shows_every_users_live_sessions_and_skips_other_records(store: Store) -> None:
    clock = Clock()
    sessions = manager(store, clock)
    alice = await new_session(sessions)
    clock.now += 10
    bob = await new_session(sessions, sub="bob", sid=None)
    clock.now += 10
    idle = await new_session(sessions, sub="carol")
    await store.set("cookie-session:" + "0" * 64, b"live", 60, sub="dave", sid="sid-9")  # cookie mode's
    clock.now += IDLE - 25  # carol's is used now; alice's has been idle 995 s, bob's 985 s
    assert await sessions.load_id(idle.id) is not None
    assert [(info.key, info.sub, info.sid) for info in await sessions.list_all()] == [
        (idle.key, "carol", "sid-1"),
        (bob.key, "bob", None),
        (alice.key, "alice", "sid-1"),
    ]
    clock.now += 10  # alice's idle timeout has passed
    assert [info.sub for info in await sessions.list_all()] == ["carol", "bob"]


async def test_destroy_where_ends_exactly_the_matching_sessions(store: Store) -> None:
    sessions = manager(store, Clock())
    a1 = await new_session(sessions, sub="alice", sid="sid-1")
    a2 = await new_session(sessions, sub="alice", sid="sid-2")
    b1 = await new_session(sessions, sub="bob", sid="sid-1")
    b2 = await new_session(sessions, sub="bob", sid="sid-3")
    assert await sessions.destroy_where(sub="alice", sid="sid-1") == 1
    assert await sessions.load_id(a1.id) is None
    assert await sessions.load_id(a2.id) is not None
    assert await sessions.destroy_where(sid="sid-1") == 1  # bob's
    assert await sessions.load_id(b1.id) is None
    assert await sessions.destroy_where(sub="bob") == 1
    assert await sessions.load_id(b2.id) is None
    assert await sessions.load_id(a2.id) is not None
    assert await sessions.destroy_where(sub="nobody") == 0
    with pytest.raises(ValueError, match="sub or sid"):
        await sessions.destroy_where()


# -- timeouts (memory store: the clock is the manager's) --------------------------------------


async def test_a_session_idle_for_the_idle_timeout_ends() -> None:
    clock = Clock()
    store = MemoryStore()
    sessions = manager(store, clock)
    session = await new_session(sessions)
    clock.now += IDLE - 1
    assert await sessions.load_id(session.id) is not None  # ...and this use slides it
    clock.now += IDLE
    assert await sessions.load_id(session.id) is None
    assert await store.get(session.key) is None  # purged
    assert await sessions.list_for("alice") == []


async def test_use_slides_the_idle_timeout() -> None:
    clock = Clock()
    sessions = manager(MemoryStore(), clock)
    session = await new_session(sessions)
    for _ in range(4):  # 4 x 0.9 idle: far past one idle timeout, never idle that long
        clock.now += 0.9 * IDLE
        loaded = await sessions.load_id(session.id)
        assert loaded is not None
        assert loaded.last_used_at == clock.now
    [info] = await sessions.list_for("alice")
    assert info.last_used_at == clock.now


async def test_the_absolute_timeout_ends_even_a_busy_session() -> None:
    clock = Clock()
    sessions = manager(MemoryStore(), clock)
    session = await new_session(sessions)
    while clock.now + 0.5 * IDLE < session.expires_at:
        clock.now += 0.5 * IDLE
        assert await sessions.load_id(session.id) is not None
    clock.now = session.expires_at
    assert await sessions.load_id(session.id) is None


async def test_sliding_writes_at_most_once_per_interval() -> None:
    clock = Clock()
    store = CountingStore()
    sessions = manager(store, clock)
    session = await new_session(sessions)
    assert store.writes == 1
    for _ in range(50):
        clock.now += 1
        assert await sessions.load_id(session.id) is not None
    assert store.writes == 1  # 50 s of use, no write
    clock.now += SLIDE_INTERVAL
    await sessions.load_id(session.id)
    await sessions.load_id(session.id)
    assert store.writes == 2


async def test_a_slide_never_overwrites_tokens_saved_meanwhile() -> None:
    """Request A reads the session; a refresh saves rotated tokens; then A slides last_used_at.
    A's write must not bring back the old refresh token (rotation would read it as theft)."""
    clock = Clock()
    store = CountingStore()
    sessions = manager(store, clock)
    session = await new_session(sessions)
    stale = await store.get(session.key)
    assert stale is not None
    await sessions.save(session.with_tokens(TokenSet(access_token="new", refresh_token="rotated")), replacing=session)
    clock.now += SLIDE_INTERVAL + 1
    store.stale[session.key] = stale  # request A's read happened before the save
    assert await sessions.load_id(session.id) is not None
    loaded = await sessions.load_id(session.id)
    assert loaded is not None
    assert loaded.tokens.refresh_token == "rotated"


async def test_the_store_ttl_is_the_nearer_of_idle_and_absolute_end(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(tmp_path / "s.db")
    sessions = manager(store, clock)
    session = await new_session(sessions)
    with sqlite3.connect(tmp_path / "s.db") as raw:
        (expires_at,) = raw.execute("SELECT expires_at FROM entries").fetchone()
    raw.close()
    assert abs(expires_at - (time.time() + IDLE)) < 5
    clock.now = session.expires_at - 100  # used until near the absolute end
    await sessions.save(dataclasses.replace(session, last_used_at=clock.now), replacing=session)
    with sqlite3.connect(tmp_path / "s.db") as raw:
        (expires_at,) = raw.execute("SELECT expires_at FROM entries").fetchone()
    raw.close()
    assert abs(expires_at - (time.time() + 100)) < 5
    await store.close()


# -- cookies ----------------------------------------------------------------------------------


async def test_the_cookie_lives_until_the_absolute_end() -> None:
    clock = Clock()
    sessions = manager(MemoryStore(), clock, public_url="https://app.example.com")
    session, header = await create(sessions, sub="alice", sid=None, claims={}, user_agent=UA)
    assert header.startswith("__Host-bff=")
    assert f"Max-Age={int(ABSOLUTE)};" in header
    assert "HttpOnly" in header
    assert "Secure" in header
    assert "SameSite=Strict" in header
    assert sessions.clear_cookies() == ["__Host-bff=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Strict"]
    assert await sessions.destroy(session) == sessions.clear_cookies()


async def test_load_follows_the_cookie() -> None:
    clock = Clock()
    sessions = manager(MemoryStore(), clock)
    session, header = await create(sessions, sub="alice", sid=None, claims={}, user_agent=UA)
    cookie = header.split(";")[0]
    assert await sessions.load([(b"cookie", f"a=1; {cookie}".encode())]) == session
    tampered = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
    assert await sessions.load([(b"cookie", tampered.encode())]) is None
    assert await sessions.load([]) is None


async def test_a_session_id_of_the_wrong_shape_does_not_reach_the_store() -> None:
    store = CountingStore()
    sessions = manager(store, Clock())
    for bad in ("", "short", "x" * 44, "../../etc/passwd" + "a" * 27):
        assert await sessions.load_id(bad) is None


# -- encryption at rest -----------------------------------------------------------------------


async def test_the_sqlite_file_holds_no_session_id_cookie_or_token(tmp_path: Path) -> None:
    clock = Clock()
    store = SQLiteStore(tmp_path / "sessions.db")
    await store.open()
    sessions = manager(store, clock)
    secrets_: list[str] = []
    for n in range(3):
        session, header = await create(
            sessions,
            sub="alice",
            sid=f"sid-{n}",
            claims={"email": "hidden@example.com"},
            tokens=new_tokens(n),
            user_agent=UA,
        )
        refreshed = session.with_tokens(new_tokens(n + 10))
        await sessions.save(refreshed, replacing=session)
        signed = header.split(";")[0].split("=", 1)[1]
        secrets_ += [session.id, signed, signed.split(".")[1]]
        for token_set in (session.tokens, refreshed.tokens):
            secrets_ += [t for t in (token_set.access_token, token_set.refresh_token, token_set.id_token) if t]

    def stored_bytes() -> bytes:
        files = [tmp_path / name for name in ("sessions.db", "sessions.db-wal", "sessions.db-shm")]
        return b"".join(path.read_bytes() for path in files if path.exists())

    before_close = stored_bytes()
    await store.close()  # checkpoints the WAL into the main file
    for dump in (before_close, stored_bytes()):
        assert b"alice" in dump  # the file is what we think it is
        for secret in secrets_:
            assert secret.encode() not in dump, "a secret is readable in the store"
        assert b"hidden@example.com" not in dump  # claims are encrypted too


async def test_a_record_copied_to_another_key_or_altered_does_not_decrypt() -> None:
    clock = Clock()
    store = MemoryStore()
    sessions = manager(store, clock)
    victim = await new_session(sessions)
    attacker = await new_session(sessions, sub="mallory")
    raw = await store.get(victim.key)
    assert raw is not None
    # The attacker can write to the store and knows their own id: the victim's box under their key
    await store.set(attacker.key, raw, 60, sub="mallory")
    assert await sessions.load_id(attacker.id) is None
    # A longer life written into the metadata is refused too.
    head, _, box = raw.partition(b"\n")
    meta = json.loads(head)
    meta["expires_at"] += 10 * ABSOLUTE
    await store.set(victim.key, json.dumps(meta).encode() + b"\n" + box, 60, sub="alice")
    assert await sessions.load_id(victim.id) is None


async def test_the_session_repr_holds_no_secret() -> None:
    sessions = manager(MemoryStore(), Clock())
    session = await new_session(sessions)
    text = repr(session)
    assert session.id not in text
    assert session.tokens.access_token not in text
    assert session.tokens.refresh_token is not None
    assert session.tokens.refresh_token not in text
    assert session.key in text
    assert "Alice" not in text  # claims stay out of logs too
    assert dataclasses.replace(session, user_agent="x").id == session.id


async def test_destroy_own_ends_only_that_users_session() -> None:
    sessions = manager(MemoryStore(), Clock())
    mine = await new_session(sessions, sub="alice")
    theirs = await new_session(sessions, sub="bob")
    assert await sessions.destroy_own(theirs.key, sub="alice") is False
    assert await sessions.load_id(theirs.id) is not None
    assert await sessions.destroy_own(mine.key, sub="alice") is True
    assert await sessions.load_id(mine.id) is None
    assert await sessions.destroy_own("0" * 64, sub="alice") is False


async def test_a_failed_slide_does_not_fail_the_request() -> None:
    clock = Clock()
    sessions = manager(ReadOnlyStore(), clock)
    session = await new_session(sessions)
    clock.now += SLIDE_INTERVAL + 1
    loaded = await sessions.load_id(session.id)
    assert loaded is not None
    assert loaded.last_used_at == clock.now


async def test_a_store_that_cannot_be_read_is_an_error_not_an_anonymous_user() -> None:
    """A store outage must answer 503, not log the user out (401 and a cleared cookie)."""
    store = UnreadableStore()
    sessions = manager(store, Clock())
    session = await new_session(sessions)
    with pytest.raises(StoreUnavailable):
        await sessions.load_id(session.id)
    with pytest.raises(StoreUnavailable):
        await sessions.list_for("alice")


async def test_the_sqlite_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "data" / "sessions.db")
    await new_session(manager(store, Clock()))
    assert (tmp_path / "data" / "sessions.db").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    await store.close()


async def test_a_short_idle_timeout_slides_often_enough_to_stay_alive() -> None:
    clock = Clock()
    settings = SessionSettings(idle_timeout=20, absolute_timeout=ABSOLUTE)
    sessions = ServerSessions(MemoryStore(), CookieCodec(make_settings(), clock=clock), settings, clock=clock)
    session = await new_session(sessions)
    for _ in range(10):  # used every 15 s for 150 s with a 20 s idle timeout
        clock.now += 15
        assert await sessions.load_id(session.id) is not None
    clock.now += 20
    assert await sessions.load_id(session.id) is None


# -- the decoded-session cache ----------------------------------------------------------------


async def test_an_unchanged_record_is_not_decoded_again(store: Store) -> None:
    sessions = manager(store, Clock())
    session = await new_session(sessions)
    first = await sessions.load_id(session.id)
    again = await sessions.load_id(session.id)
    assert first == session
    assert again is first  # the same bytes in the store: the session decoded from them before


async def test_saved_tokens_are_loaded_not_the_cached_ones(store: Store) -> None:
    sessions = manager(store, Clock())
    session = await new_session(sessions)
    assert await sessions.load_id(session.id) is not None
    await sessions.save(
        session.with_tokens(TokenSet(access_token="access-token-2", refresh_token="rotated")), replacing=session
    )
    loaded = await sessions.load_id(session.id)
    assert loaded is not None
    assert (loaded.tokens.access_token, loaded.tokens.refresh_token) == ("access-token-2", "rotated")


async def test_a_slide_is_loaded_not_the_cached_use_time() -> None:
    clock = Clock()
    sessions = manager(MemoryStore(), clock)
    session = await new_session(sessions)
    assert await sessions.load_id(session.id) is not None
    clock.now += SLIDE_INTERVAL
    slid = await sessions.load_id(session.id)  # writes the new last_used_at
    assert slid is not None
    assert slid.last_used_at == clock.now
    clock.now += 1
    loaded = await sessions.load_id(session.id)
    assert loaded is not None
    assert loaded.last_used_at == slid.last_used_at


async def test_loads_read_the_store_again_only_after_a_write(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy's path: while the store's version stays, a load is answered from memory; any
    write (here a refresh's save) makes the next load read. Behind Sentinel or in a Cluster the
    version is unknown and every load reads."""
    monkeypatch.setattr(redis_tracking, "HEARTBEAT", 60.0)  # no PONG moving Redis's version meanwhile
    sessions = manager(store, Clock())
    session = await new_session(sessions)
    reads: list[str] = []
    read = store.get

    async def counted(key: str) -> bytes | None:
        reads.append(key)
        return await read(key)

    monkeypatch.setattr(store, "get", counted)
    for _ in range(3):
        assert await sessions.load_id(session.id) == session
    versioned = store.version() is not None
    assert reads == [session.key] if versioned else [session.key] * 3
    await sessions.save(session.with_tokens(TokenSet(access_token="access-token-2")), replacing=session)
    loaded = await sessions.load_id(session.id)
    assert loaded is not None
    assert loaded.tokens.access_token == "access-token-2"
    assert len(reads) == (2 if versioned else 4)


async def test_logout_on_another_worker_ends_the_session_at_the_next_request(store: Store) -> None:
    """Two managers on one store are two workers: one's cache must not outlive the other's logout."""
    clock = Clock()
    worker_a, worker_b = manager(store, clock), manager(store, clock)
    session = await new_session(worker_a)
    assert await worker_a.load_id(session.id) is not None
    assert await worker_a.load_id(session.id) is not None  # cached by now
    await worker_b.destroy(session)
    assert await worker_a.load_id(session.id) is None


async def test_a_refresh_on_another_worker_is_seen_at_the_next_request(store: Store) -> None:
    clock = Clock()
    worker_a, worker_b = manager(store, clock), manager(store, clock)
    session = await new_session(worker_a)
    assert await worker_a.load_id(session.id) is not None
    refreshed = await worker_b.load_id(session.id)
    assert refreshed is not None
    await worker_b.save(
        refreshed.with_tokens(TokenSet(access_token="from-b", expires_at=1_800_000_900.0)), replacing=session
    )
    loaded = await worker_a.load_id(session.id)
    assert loaded is not None
    assert loaded.tokens.access_token == "from-b"


async def test_back_channel_logout_ends_a_cached_session(store: Store) -> None:
    sessions = manager(store, Clock())
    session = await new_session(sessions, sid="idp-sid")
    assert await sessions.load_id(session.id) is not None
    assert await sessions.destroy_where(sid="idp-sid") == 1
    assert await sessions.load_id(session.id) is None


async def test_a_cached_session_still_ends_at_its_idle_and_absolute_timeouts() -> None:
    clock = Clock()
    sessions = manager(MemoryStore(), clock)
    idle = await new_session(sessions)
    clock.now += 1
    assert await sessions.load_id(idle.id) is not None  # cached, and too soon to slide
    clock.now = idle.last_used_at + IDLE
    assert await sessions.load_id(idle.id) is None

    clock.now = 1_900_000_000.0
    busy = await new_session(sessions)
    while clock.now + 0.5 * IDLE < busy.expires_at:
        clock.now += 0.5 * IDLE
        assert await sessions.load_id(busy.id) is not None
    assert await sessions.load_id(busy.id) is not None  # cached: the record did not change
    clock.now = busy.expires_at
    assert await sessions.load_id(busy.id) is None


async def test_an_altered_record_is_refused_even_after_the_original_was_cached() -> None:
    store = MemoryStore()
    sessions = manager(store, Clock())
    session = await new_session(sessions)
    assert await sessions.load_id(session.id) is not None
    raw = await store.get(session.key)
    assert raw is not None
    head, _, box = raw.partition(b"\n")
    meta = json.loads(head)
    meta["expires_at"] += 10 * ABSOLUTE
    await store.set(session.key, json.dumps(meta).encode() + b"\n" + box, 60, sub="alice")
    assert await sessions.load_id(session.id) is None
    await store.set(session.key, raw, 60, sub="alice")  # the original is back: it loads again
    assert await sessions.load_id(session.id) == session


async def test_the_cache_keeps_at_most_cache_size_sessions() -> None:
    sessions = manager(MemoryStore(), Clock(), cache_size=3)
    created = [await new_session(sessions, sub=f"user-{n}") for n in range(5)]
    loaded = [await sessions.load_id(session.id) for session in created]
    assert all([await sessions.load_id(created[n].id) is loaded[n] for n in (2, 3, 4)])  # the 3 most recent
    first = await sessions.load_id(created[0].id)  # pushed out: decoded again
    assert first == created[0]
    assert first is not loaded[0]
    again = await sessions.load_id(created[2].id)  # now the least recent of three: pushed out by the first
    assert again == created[2]
    assert again is not loaded[2]


async def test_a_destroyed_session_leaves_the_cache(store: Store) -> None:
    sessions = manager(store, Clock())
    session = await new_session(sessions)
    raw = await store.get(session.key)
    assert raw is not None
    cached = await sessions.load_id(session.id)
    await sessions.destroy(session)
    await store.set(session.key, raw, 60, sub="alice")  # the same bytes back
    back = await sessions.load_id(session.id)
    assert back == cached
    assert back is not cached  # decoded afresh: the cache let it go
