"""The `Sessions` contract, one suite over every implementation (ServerSessions, CookieSessions)
and every store: what `bff.tokens` and the endpoints rely on, whatever keeps the session."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.datastructures import Secret

from bff.config import SessionSettings, Settings
from bff.cookie_sessions import CookieSessions
from bff.cookies import CookieCodec
from bff.login import LoginResult
from bff.server_sessions import ServerSessions
from bff.session import Session, Sessions
from bff.stores import Store
from bff.tokenset import TokenSet
from tests.fakes import Clock

IDLE = 1000.0
ABSOLUTE = 5000.0
KINDS = ["server", "cookie"]

Jar = list[tuple[bytes, bytes]]


def build(kind: str, store: Store, clock: Clock) -> Sessions:
    settings = Settings(
        secret_keys=(Secret("k" * 40),),
        public_url="https://app.example.com",
        session=SessionSettings(idle_timeout=IDLE, absolute_timeout=ABSOLUTE),
    )
    cookies = CookieCodec(settings, clock=clock)
    factory: Callable[..., Sessions] = ServerSessions if kind == "server" else CookieSessions
    return factory(store, cookies, settings.session, clock=clock)


def jar(set_cookies: list[str]) -> Jar:
    """What the browser sends back after these `Set-Cookie` values (deletions dropped)."""
    pairs = [cookie.split(";")[0] for cookie in set_cookies if "Max-Age=0;" not in cookie]
    return [(b"cookie", "; ".join(pairs).encode())] if pairs else []


def login(sub: str = "alice", sid: str | None = "sid-1", n: int = 0) -> LoginResult:
    tokens = TokenSet(access_token=f"at-{n}", refresh_token=f"rt-{n}", expires_at=1_800_000_300.0)
    return LoginResult(sub=sub, provider_sid=sid, claims={"sub": sub, "name": "Alice"}, tokens=tokens)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def signed_in(sessions: Sessions, *, sub: str = "alice", sid: str = "sid-1") -> tuple[Session, Jar]:
    session, cookies = await sessions.create(login(sub, sid), [(b"user-agent", b"Test")])
    return session, jar(cookies)


async def test_a_created_session_loads_from_the_cookies_it_set(kind: str, store: Store, clock: Clock) -> None:
    sessions = build(kind, store, clock)
    created, cookies = await signed_in(sessions)
    loaded = await sessions.load(cookies)
    assert loaded == created
    assert loaded is not None
    assert dict(loaded.claims) == {"sub": "alice", "name": "Alice"}
    assert loaded.tokens == created.tokens
    assert loaded.expires_at == clock.now + ABSOLUTE
    assert await sessions.load([]) is None


async def test_tampered_and_foreign_cookies_load_as_none(kind: str, store: Store, clock: Clock) -> None:
    sessions = build(kind, store, clock)
    _, [(name, value)] = await signed_in(sessions)
    text = value.decode()
    for bad in (text[:-4] + ("AAAA" if not text.endswith("AAAA") else "BBBB"), text[: len(text) // 2], "x=y"):
        assert await sessions.load([(name, bad.encode())]) is None


async def test_a_destroyed_session_stays_ended_and_its_cookies_are_cleared(
    kind: str, store: Store, clock: Clock
) -> None:
    sessions = build(kind, store, clock)
    _, cookies = await signed_in(sessions)
    loaded = await sessions.load(cookies)
    assert loaded is not None
    cleared = await sessions.destroy(loaded)
    assert cleared
    assert all("Max-Age=0;" in cookie for cookie in cleared)
    assert cleared[0].startswith("__Host-bff=;")
    assert await sessions.load(cookies) is None


async def test_the_refresh_lease_yields_the_newest_state(kind: str, store: Store, clock: Clock) -> None:
    sessions = build(kind, store, clock)
    _, cookies = await signed_in(sessions)
    stale = await sessions.load(cookies)
    assert stale is not None
    async with sessions.refreshing(stale) as current:
        assert current is not None
        assert current.tokens.access_token == "at-0"
        refreshed = current.with_tokens(TokenSet(access_token="at-1", refresh_token="rt-1"))
        await sessions.save(refreshed, replacing=current)
    # Another request, still carrying the stale state, takes the lease next: it sees the refresh.
    async with sessions.refreshing(stale) as newest:
        assert newest is not None
        assert newest.tokens.access_token == "at-1"
        assert newest.tokens.refresh_token == "rt-1"


async def test_cookies_for_an_unchanged_session_are_none_and_a_refreshed_one_loads_from_them(
    kind: str, store: Store, clock: Clock
) -> None:
    sessions = build(kind, store, clock)
    _, cookies = await signed_in(sessions)
    loaded = await sessions.load(cookies)
    assert loaded is not None
    assert sessions.cookies_for(loaded, loaded=loaded) == []
    refreshed = loaded.with_tokens(TokenSet(access_token="at-1", refresh_token="rt-1"))
    await sessions.save(refreshed, replacing=loaded)
    sent = sessions.cookies_for(refreshed, loaded=loaded)
    after = await sessions.load(jar(sent) or cookies)  # server mode: the cookie did not change
    assert after is not None
    assert after.tokens.access_token == "at-1"


async def test_idle_and_absolute_ends(kind: str, store: Store, clock: Clock) -> None:
    sessions = build(kind, store, clock)
    _, cookies = await signed_in(sessions)
    clock.now += IDLE - 1
    assert await sessions.load(cookies) is not None
    clock.now += IDLE + 1  # measured from the last slide, which cookie mode sends, not this jar
    assert await sessions.load(cookies) is None
    other = build(kind, store, clock)
    _, cookies = await signed_in(other)
    for _ in range(6):
        clock.now += IDLE / 2
        loaded = await other.load(cookies)
        assert loaded is not None
        cookies = jar(other.cookies_for(loaded, loaded=loaded)) or cookies
    clock.now += ABSOLUTE
    assert await other.load(cookies) is None


async def test_destroy_where_ends_the_sessions_of_that_provider_session(kind: str, store: Store, clock: Clock) -> None:
    sessions = build(kind, store, clock)
    _, mine = await signed_in(sessions, sid="sid-1")
    _, other = await signed_in(sessions, sid="sid-2")
    _, bobs = await signed_in(sessions, sub="bob", sid="sid-3")
    assert await sessions.destroy_where(sid="sid-1") == 1
    assert await sessions.load(mine) is None
    assert await sessions.load(other) is not None
    assert await sessions.destroy_where(sub="alice") == 1
    assert await sessions.load(other) is None
    assert await sessions.load(bobs) is not None
    with pytest.raises(ValueError, match="needs sub or sid"):
        await sessions.destroy_where()


async def test_a_save_after_the_end_does_not_revive_the_session(kind: str, store: Store, clock: Clock) -> None:
    sessions = build(kind, store, clock)
    _, cookies = await signed_in(sessions)
    loaded = await sessions.load(cookies)
    assert loaded is not None
    await sessions.destroy(loaded)
    late = loaded.with_tokens(TokenSet(access_token="late"))
    await sessions.save(late, replacing=loaded)  # a refresh that finished after logout
    assert await sessions.load(jar(sessions.cookies_for(late, loaded=loaded)) or cookies) is None
