"""TokenManager: proactive and reactive refresh, single flight in-process and across workers,
rotation, `invalid_grant`, provider outages and the client-credentials cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bff.config import RouteSettings, Settings
from bff.cookies import CookieCodec
from bff.errors import NotAuthenticated, ProviderUnavailable, RefreshRejected, SessionExpired
from bff.login import LoginResult
from bff.metrics import Metrics
from bff.oidc import OIDCClient
from bff.server_sessions import ServerSessions
from bff.session import Session
from bff.stores import Store, open_store
from bff.tokens import Bearer, TokenManager
from bff.tokenset import TokenSet
from tests.fakes import Clock, FakeIdP, settings_for

USER = RouteSettings(path="/api", upstream="http://127.0.0.1:9", token="user")
OPTIONAL = RouteSettings(path="/maybe", upstream="http://127.0.0.1:9", token="user_optional")
CLIENT = RouteSettings(path="/svc", upstream="http://127.0.0.1:9", token="client")
NONE = RouteSettings(path="/pub", upstream="http://127.0.0.1:9", token="none")


@dataclass
class Worker:
    """One process's worth of parts: its own caches and in-process single flight."""

    settings: Settings
    store: Store
    cookies: CookieCodec
    sessions: ServerSessions
    tokens: TokenManager
    metrics: Metrics
    http: httpx.AsyncClient

    def headers(self, session: Session) -> list[tuple[bytes, bytes]]:
        value = f"{self.cookies.session_cookie_name}={self.cookies.sign_session_id(session.id)}"
        return [(b"cookie", value.encode())]

    async def login(self, idp: FakeIdP, clock: Clock, *, expires_in: float = 300) -> Session:
        tokens = TokenSet(access_token="at-0", refresh_token=idp.issue_refresh_token(), expires_at=clock() + expires_in)
        return await self.create(tokens, sid="sid-1")

    async def create(self, tokens: TokenSet, *, sid: str | None) -> Session:
        login = LoginResult(sub="alice", provider_sid=sid, claims={"sub": "alice"}, tokens=tokens)
        session, _ = await self.sessions.create(login, user_agent="t")
        return session

    async def token(self, route: RouteSettings, headers: list[tuple[bytes, bytes]]) -> str | None:
        """What the proxy would send as the bearer token."""
        bearer = await self.tokens.bearer(route, headers)
        return None if bearer is None else bearer.token

    async def token_after_rejection(self, route: RouteSettings, rejected: Bearer) -> str | None:
        bearer = await self.tokens.bearer_after_rejection(route, rejected)
        return None if bearer is None else bearer.token


def rejected(session: Session | None, token: str = "at-0") -> Bearer:
    """The bearer the proxy sent, which the upstream answered 401."""
    return Bearer(token, session=session, loaded=session)


async def start_worker(idp: FakeIdP, clock: Clock, store_url: str = "memory://", **environ: str) -> Worker:
    settings = settings_for(SESSION_STORE=store_url, **environ)
    store = open_store(settings.session_store)
    await store.open()
    cookies = CookieCodec(settings, clock=clock)
    sessions = ServerSessions(store, cookies, settings.session, clock=clock)
    http = httpx.AsyncClient(transport=httpx.MockTransport(idp))
    metrics = Metrics()
    oidc = OIDCClient(http, settings, clock=clock)
    tokens = TokenManager(sessions, oidc, metrics, client_credentials=oidc.client_credentials, clock=clock)
    return Worker(settings, store, cookies, sessions, tokens, metrics, http)


@pytest.fixture
def idp(clock: Clock) -> FakeIdP:
    return FakeIdP(clock=clock, token_delay=0.02)


@pytest.fixture
async def worker(idp: FakeIdP, clock: Clock) -> AsyncIterator[Worker]:
    worker = await start_worker(idp, clock)
    yield worker
    await worker.http.aclose()
    await worker.store.close()


async def test_anonymous_requests(worker: Worker) -> None:
    with pytest.raises(NotAuthenticated):
        await worker.token(USER, [])
    assert await worker.token(OPTIONAL, []) is None
    assert await worker.token(NONE, [(b"cookie", b"bff=whatever")]) is None


async def test_a_fresh_token_is_used_as_is(worker: Worker, idp: FakeIdP, clock: Clock) -> None:
    session = await worker.login(idp, clock)
    assert await worker.token(USER, worker.headers(session)) == "at-0"
    assert await worker.token(OPTIONAL, worker.headers(session)) == "at-0"
    assert idp.calls["/token"] == 0


async def test_proactive_refresh_within_the_skew_rotates_the_refresh_token(
    worker: Worker, idp: FakeIdP, clock: Clock
) -> None:
    session = await worker.login(idp, clock)
    old_refresh = session.tokens.refresh_token
    clock.advance(271)  # 29 s left, skew is 30 s
    token = await worker.token(USER, worker.headers(session))
    assert token is not None and token != "at-0"
    stored = await worker.sessions.load_id(session.id)
    assert stored is not None and stored.tokens.access_token == token
    assert stored.tokens.refresh_token != old_refresh and stored.tokens.refresh_token in idp.refresh_tokens
    assert old_refresh not in idp.refresh_tokens
    assert worker.metrics.value("bff_token_refreshes_total", outcome="success") == 1


async def test_with_the_skew_off_only_a_rejection_refreshes(idp: FakeIdP, clock: Clock) -> None:
    worker = await start_worker(idp, clock, OIDC__REFRESH_SKEW="0")
    session = await worker.login(idp, clock)
    clock.advance(400)
    assert await worker.token(USER, worker.headers(session)) == "at-0"
    assert idp.calls["/token"] == 0
    token = await worker.token_after_rejection(USER, rejected(session))
    assert token is not None and token != "at-0"
    assert idp.calls["/token"] == 1


async def test_twenty_concurrent_expired_requests_cause_one_refresh(worker: Worker, idp: FakeIdP, clock: Clock) -> None:
    session = await worker.login(idp, clock)
    clock.advance(600)
    tokens = await asyncio.gather(*(worker.token(USER, worker.headers(session)) for _ in range(20)))
    assert idp.calls["/token"] == 1
    assert len(set(tokens)) == 1 and tokens[0] != "at-0"


async def test_two_workers_on_one_sqlite_file_refresh_once(idp: FakeIdP, clock: Clock, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    first, second = await start_worker(idp, clock, url), await start_worker(idp, clock, url)
    try:
        session = await first.login(idp, clock)
        clock.advance(600)
        calls = [w.token(USER, w.headers(session)) for _ in range(10) for w in (first, second)]
        tokens = await asyncio.gather(*calls)
        assert idp.calls["/token"] == 1
        assert len(set(tokens)) == 1 and tokens[0] != "at-0"
        assert (
            second.metrics.value("bff_token_refreshes_total", outcome="shared")
            + first.metrics.value("bff_token_refreshes_total", outcome="shared")
            == 1
        )
    finally:
        for w in (first, second):
            await w.http.aclose()
            await w.store.close()


async def test_rejection_of_a_token_already_replaced_uses_the_new_one(
    worker: Worker, idp: FakeIdP, clock: Clock
) -> None:
    session = await worker.login(idp, clock)
    first = await worker.token_after_rejection(USER, rejected(session))
    # A request that was still carrying the old token comes back with its 401 later.
    second = await worker.token_after_rejection(USER, rejected(session))
    assert first == second and first != "at-0"
    assert idp.calls["/token"] == 1


async def test_rejection_of_the_current_token_refreshes_only_once(worker: Worker, idp: FakeIdP, clock: Clock) -> None:
    session = await worker.login(idp, clock)
    results = await asyncio.gather(*(worker.token_after_rejection(USER, rejected(session)) for _ in range(5)))
    assert idp.calls["/token"] == 1 and len(set(results)) == 1
    assert await worker.token_after_rejection(USER, rejected(None)) is None  # no session: nothing better


async def test_invalid_grant_ends_the_session_and_clears_the_cookie(worker: Worker, idp: FakeIdP, clock: Clock) -> None:
    session = await worker.login(idp, clock)
    idp.refresh_tokens.clear()  # grant revoked at the provider
    clock.advance(600)
    results = await asyncio.gather(
        *(worker.token(USER, worker.headers(session)) for _ in range(3)), return_exceptions=True
    )
    for result in results:
        assert isinstance(result, RefreshRejected)
        assert (result.status_code, result.code) == (401, "session_expired")
        assert result.headers == [("set-cookie", "__Host-bff=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Strict")]
    assert idp.calls["/token"] == 1
    assert await worker.sessions.load_id(session.id) is None
    with pytest.raises(NotAuthenticated):
        await worker.token(USER, worker.headers(session))


@pytest.mark.parametrize("outage", ["503", "unreachable"])
async def test_provider_outage_is_503_and_keeps_the_session(
    worker: Worker, idp: FakeIdP, clock: Clock, outage: str
) -> None:
    session = await worker.login(idp, clock)
    await worker.token(USER, worker.headers(session))  # discovery cached
    clock.advance(600)
    if outage == "503":
        idp.token_status = 503
    else:
        idp.unreachable = True
    with pytest.raises(ProviderUnavailable) as info:
        await worker.token(USER, worker.headers(session))
    assert info.value.status_code == 503 and ("retry-after", "5") in info.value.headers
    assert await worker.sessions.load_id(session.id) is not None
    idp.token_status, idp.unreachable = None, False
    token = await worker.token(USER, worker.headers(session))
    assert token is not None and token != "at-0"


async def test_provider_outage_during_proactive_refresh_uses_the_still_valid_token(
    worker: Worker, idp: FakeIdP, clock: Clock
) -> None:
    session = await worker.login(idp, clock)
    clock.advance(280)  # 20 s left: due for a proactive refresh
    idp.token_status = 503
    assert await worker.token(USER, worker.headers(session)) == "at-0"
    clock.advance(20)
    with pytest.raises(ProviderUnavailable):
        await worker.token(USER, worker.headers(session))


async def test_a_cancelled_caller_does_not_cancel_the_refresh(worker: Worker, idp: FakeIdP, clock: Clock) -> None:
    session = await worker.login(idp, clock)
    clock.advance(600)
    first = asyncio.create_task(worker.token(USER, worker.headers(session)))
    second = asyncio.create_task(worker.token(USER, worker.headers(session)))
    await asyncio.sleep(0.005)
    first.cancel()
    token = await second
    assert token != "at-0" and idp.calls["/token"] == 1


async def test_without_a_refresh_token_an_expired_session_ends(worker: Worker, idp: FakeIdP, clock: Clock) -> None:
    tokens = TokenSet(access_token="at-0", expires_at=clock() + 300)
    session = await worker.create(tokens, sid=None)
    clock.advance(280)
    assert await worker.token(USER, worker.headers(session)) == "at-0"  # still valid: used
    clock.advance(30)
    with pytest.raises(SessionExpired):
        await worker.token(USER, worker.headers(session))
    assert idp.calls["/token"] == 0


async def test_client_credentials_token_is_cached_until_near_expiry(worker: Worker, idp: FakeIdP, clock: Clock) -> None:
    tokens = await asyncio.gather(*(worker.token(CLIENT, []) for _ in range(10)))
    assert len(set(tokens)) == 1 and idp.calls["/token"] == 1
    clock.advance(260)
    assert await worker.token(CLIENT, []) == tokens[0]
    clock.advance(20)  # within 30 s of expiry
    renewed = await worker.token(CLIENT, [])
    assert renewed != tokens[0] and idp.calls["/token"] == 2
    after_401 = await worker.token_after_rejection(CLIENT, rejected(None, renewed or ""))
    assert after_401 not in (None, renewed) and idp.calls["/token"] == 3
    assert await worker.token_after_rejection(CLIENT, rejected(None, renewed or "")) == after_401
    assert idp.calls["/token"] == 3
