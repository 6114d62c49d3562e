"""TokenManager: proactive and reactive refresh, single flight in-process and across workers,
rotation, `invalid_grant`, provider outages and the client-credentials cache."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bff import create_app
from bff.app import BffApp
from bff.config import RouteSettings
from bff.dpop import DPoPKey
from bff.errors import NotAuthenticated, ProviderUnavailable, RefreshRejected, SessionExpired
from bff.login import LoginResult
from bff.metrics import Metrics
from bff.session import Session, Sessions
from bff.tokens import Bearer, TokenManager
from bff.tokenset import TokenSet
from tests.fakes import Clock, FakeIdP, settings_for

USER = RouteSettings(path="/api", upstream="http://127.0.0.1:9", token="user")
OPTIONAL = RouteSettings(path="/maybe", upstream="http://127.0.0.1:9", token="user_optional")
CLIENT = RouteSettings(path="/svc", upstream="http://127.0.0.1:9", token="client")
NONE = RouteSettings(path="/pub", upstream="http://127.0.0.1:9", token="none")


Jar = list[tuple[bytes, bytes]]


@dataclass
class Worker:
    """One process's worth of parts (its own caches and in-process single flight), and the
    browsers' cookie jars, which several workers may share."""

    app: BffApp
    jars: dict[str, Jar] = field(default_factory=dict)

    @property
    def sessions(self) -> Sessions:
        return self.app.sessions

    @property
    def tokens(self) -> TokenManager:
        return self.app.tokens

    @property
    def metrics(self) -> Metrics:
        return self.app.metrics

    def headers(self, session: Session) -> Jar:
        """What the session's browser sends now."""
        return self.jars[session.key]

    async def current(self, session: Session) -> Session | None:
        """The session as its browser's next request would find it."""
        return await self.sessions.load(self.headers(session))

    def _keep(self, session: Session, set_cookies: Sequence[str]) -> None:
        pairs = [cookie.split(";")[0] for cookie in set_cookies if "Max-Age=0;" not in cookie]
        if pairs:
            self.jars[session.key] = [(b"cookie", "; ".join(pairs).encode())]

    async def login(self, idp: FakeIdP, clock: Clock, *, expires_in: float = 300) -> Session:
        tokens = TokenSet(access_token="at-0", refresh_token=idp.issue_refresh_token(), expires_at=clock() + expires_in)
        return await self.create(tokens, sid="sid-1")

    async def create(self, tokens: TokenSet, *, sid: str | None) -> Session:
        login = LoginResult(sub="alice", provider_sid=sid, claims={"sub": "alice"}, tokens=tokens)
        session, cookies = await self.sessions.create(login, [(b"user-agent", b"t")])
        self._keep(session, cookies)
        return session

    async def token(self, route: RouteSettings, headers: Jar) -> str | None:
        """What the proxy would send as the bearer token; the browser keeps the cookies it gets."""
        bearer = await self.tokens.bearer(route, headers)
        if bearer is not None and bearer.session is not None:
            self._keep(bearer.session, bearer.set_cookies)
        return None if bearer is None else bearer.token

    async def token_after_rejection(self, route: RouteSettings, rejected: Bearer) -> str | None:
        bearer = await self.tokens.bearer_after_rejection(route, rejected)
        return None if bearer is None else bearer.token

    async def stop(self) -> None:
        await self.app.stop()


def rejected(session: Session | None, token: str = "at-0") -> Bearer:
    """The bearer the proxy sent, which the upstream answered 401."""
    return Bearer(token, session=session, loaded=session)


async def start_worker(
    idp: FakeIdP, clock: Clock, store_url: str = "memory://", *, storage: str = "server", **environ: str
) -> Worker:
    settings = settings_for(SESSION_STORE=store_url, TOKEN_STORAGE=storage, **environ)
    app = create_app(settings, clock=clock, idp_transport=httpx.MockTransport(idp))
    await app.start()
    return Worker(app)


@pytest.fixture(params=["server", "cookie"])
def storage(request: pytest.FixtureRequest) -> str:
    """Every test runs with sessions in the store and sealed into cookies."""
    return str(request.param)


@pytest.fixture
def idp(clock: Clock) -> FakeIdP:
    return FakeIdP(clock=clock, token_delay=0.02)


@pytest.fixture
async def worker(idp: FakeIdP, clock: Clock, storage: str) -> AsyncIterator[Worker]:
    worker = await start_worker(idp, clock, storage=storage)
    yield worker
    await worker.stop()


async def test_without_a_session_user_routes_refuse_and_optional_and_none_routes_forward_no_token(
    worker: Worker,
) -> None:
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
    assert token is not None
    assert token != "at-0"
    stored = await worker.current(session)
    assert stored is not None
    assert stored.tokens.access_token == token
    assert stored.tokens.refresh_token != old_refresh
    assert stored.tokens.refresh_token in idp.refresh_tokens
    assert old_refresh not in idp.refresh_tokens
    assert worker.metrics.value("bff_token_refreshes_total", outcome="success") == 1


async def test_with_the_skew_off_only_a_rejection_refreshes(idp: FakeIdP, clock: Clock, storage: str) -> None:
    worker = await start_worker(idp, clock, storage=storage, OIDC__REFRESH_SKEW="0")
    session = await worker.login(idp, clock)
    clock.advance(400)
    assert await worker.token(USER, worker.headers(session)) == "at-0"
    assert idp.calls["/token"] == 0
    token = await worker.token_after_rejection(USER, rejected(session))
    assert token is not None
    assert token != "at-0"
    assert idp.calls["/token"] == 1
    await worker.stop()


async def test_twenty_concurrent_expired_requests_cause_one_refresh(worker: Worker, idp: FakeIdP, clock: Clock) -> None:
    session = await worker.login(idp, clock)
    clock.advance(600)
    tokens = await asyncio.gather(*(worker.token(USER, worker.headers(session)) for _ in range(20)))
    assert idp.calls["/token"] == 1
    assert len(set(tokens)) == 1
    assert tokens[0] != "at-0"


async def test_two_workers_on_one_sqlite_file_refresh_once(
    idp: FakeIdP, clock: Clock, tmp_path: Path, storage: str
) -> None:
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    # A slow provider: every request of both workers has read the stale session before the
    # refresh is saved, however slowly this machine runs them.
    idp.token_delay = 0.5
    first = await start_worker(idp, clock, url, storage=storage)
    second = await start_worker(idp, clock, url, storage=storage)
    second.jars = first.jars  # one browser, whose requests reach both workers
    try:
        session = await first.login(idp, clock)
        clock.advance(600)
        calls = [w.token(USER, w.headers(session)) for _ in range(10) for w in (first, second)]
        tokens = await asyncio.gather(*calls)
        assert idp.calls["/token"] == 1
        assert len(set(tokens)) == 1
        assert tokens[0] != "at-0"
        assert (
            second.metrics.value("bff_token_refreshes_total", outcome="shared")
            + first.metrics.value("bff_token_refreshes_total", outcome="shared")
            == 1
        )
    finally:
        for w in (first, second):
            await w.stop()


async def test_the_pre_refresh_cookie_on_another_worker_gets_the_new_token_without_a_refresh(
    idp: FakeIdP, clock: Clock, tmp_path: Path, storage: str
) -> None:
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    first = await start_worker(idp, clock, url, storage=storage)
    second = await start_worker(idp, clock, url, storage=storage)
    try:
        session = await first.login(idp, clock)
        stale = first.headers(session)
        clock.advance(600)
        refreshed = await first.token(USER, stale)
        clock.advance(30)  # a tab that set out with the old cookie, half a minute later
        assert await second.token(USER, stale) == refreshed
        assert idp.calls["/token"] == 1
    finally:
        for w in (first, second):
            await w.stop()


async def test_rejection_of_a_token_already_replaced_uses_the_new_one(
    worker: Worker, idp: FakeIdP, clock: Clock
) -> None:
    session = await worker.login(idp, clock)
    first = await worker.token_after_rejection(USER, rejected(session))
    # A request that was still carrying the old token comes back with its 401 later.
    second = await worker.token_after_rejection(USER, rejected(session))
    assert first == second
    assert first != "at-0"
    assert idp.calls["/token"] == 1


async def test_rejection_of_the_current_token_refreshes_only_once(worker: Worker, idp: FakeIdP, clock: Clock) -> None:
    session = await worker.login(idp, clock)
    results = await asyncio.gather(*(worker.token_after_rejection(USER, rejected(session)) for _ in range(5)))
    assert idp.calls["/token"] == 1
    assert len(set(results)) == 1
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
    assert await worker.current(session) is None
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
    assert info.value.status_code == 503
    assert ("retry-after", "5") in info.value.headers
    assert await worker.current(session) is not None
    idp.token_status, idp.unreachable = None, False
    token = await worker.token(USER, worker.headers(session))
    assert token is not None
    assert token != "at-0"


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
    assert token != "at-0"
    assert idp.calls["/token"] == 1


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
    assert len(set(tokens)) == 1
    assert idp.calls["/token"] == 1
    clock.advance(260)
    assert await worker.token(CLIENT, []) == tokens[0]
    clock.advance(20)  # within 30 s of expiry
    renewed = await worker.token(CLIENT, [])
    assert renewed != tokens[0]
    assert idp.calls["/token"] == 2
    after_401 = await worker.token_after_rejection(CLIENT, rejected(None, renewed or ""))
    assert after_401 not in (None, renewed)
    assert idp.calls["/token"] == 3
    assert await worker.token_after_rejection(CLIENT, rejected(None, renewed or "")) == after_401
    assert idp.calls["/token"] == 3


async def test_a_dpop_bound_session_keeps_its_key_in_the_store_or_cookie_and_the_bearer_carries_it(
    worker: Worker, idp: FakeIdP, clock: Clock
) -> None:
    key = DPoPKey.generate().private_jwk()
    tokens = TokenSet(
        access_token="at-dpop", refresh_token=idp.issue_refresh_token(), expires_at=clock() + 300, token_type="DPoP"
    )
    session = await worker.create(dataclasses.replace(tokens, dpop_key=key), sid="sid-1")
    loaded = await worker.current(session)
    assert loaded is not None
    assert (loaded.tokens.token_type, loaded.tokens.dpop_key) == ("DPoP", key)
    bearer = await worker.tokens.bearer(USER, worker.headers(session))
    assert bearer is not None
    assert (bearer.token, bearer.token_type, bearer.dpop_key) == ("at-dpop", "DPoP", key)
    assert key not in repr(bearer)
    client = await worker.tokens.bearer(CLIENT, [])
    assert client is not None
    assert (client.token_type, client.dpop_key) == ("Bearer", None)  # client credentials stay Bearer
