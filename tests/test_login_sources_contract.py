"""The `LoginSource` contract, one suite over every implementation (OIDCClient against the fake
provider, TokenAPIClient against the fake SimpleJWT-like API): what `bff.tokens`, logout and
`/readyz` rely on, whoever issued the tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from bff.errors import ProviderUnavailable, RefreshRejected
from bff.login import LoginSource
from bff.oidc import OIDCClient
from bff.token_api import TokenAPIClient
from bff.tokenset import TokenSet
from tests.fakes import Clock, FakeIdP, FakeTokenAPI, holding, settings_for, token_api_settings


@dataclass
class Issuer:
    """A login source and the fake behind it, seen through what the contract needs."""

    source: LoginSource
    fake: FakeIdP | FakeTokenAPI

    def grant(self) -> str:
        """A live refresh token, as a login would have left it."""
        return self.fake.issue_refresh_token()

    def is_live(self, refresh_token: str) -> bool:
        return refresh_token in self.fake.refresh_tokens

    def go_down(self) -> None:
        self.fake.unreachable = True


@pytest.fixture(params=["oidc", "token_api"])
async def issuer(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Issuer]:
    fake: FakeIdP | FakeTokenAPI
    if request.param == "oidc":
        fake = FakeIdP(clock=clock)
        http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
        source: LoginSource = OIDCClient(http, settings_for(), clock=clock)
    else:
        fake = FakeTokenAPI(clock=clock)
        http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
        source = TokenAPIClient(http, token_api_settings(), clock=clock)
    yield Issuer(source, fake)
    await http.aclose()


async def test_refresh_gives_a_new_access_token_and_rotates(issuer: Issuer, clock: Clock) -> None:
    old = issuer.grant()
    tokens = await issuer.source.refresh(holding(old))
    assert tokens.access_token
    assert tokens.expires_at is not None
    assert tokens.expires_at > clock()
    assert tokens.refresh_token is not None
    assert tokens.refresh_token != old
    assert issuer.is_live(tokens.refresh_token)
    assert not issuer.is_live(old)


async def test_a_dead_refresh_token_is_refresh_rejected(issuer: Issuer) -> None:
    with pytest.raises(RefreshRejected) as caught:
        await issuer.source.refresh(holding("not-a-live-refresh-token"))
    assert (caught.value.status_code, caught.value.code, caught.value.error) == (
        401,
        "session_expired",
        "invalid_grant",
    )


async def test_a_source_that_is_down_is_unavailable_and_never_rejects(issuer: Issuer) -> None:
    live = issuer.grant()
    issuer.go_down()
    with pytest.raises(ProviderUnavailable) as caught:
        await issuer.source.refresh(holding(live))
    assert caught.value.status_code == 503
    assert caught.value.headers[0][0] == "retry-after"
    with pytest.raises(ProviderUnavailable):
        await issuer.source.ready()


async def test_end_revokes_the_grant_and_never_raises(issuer: Issuer) -> None:
    live = issuer.grant()
    await issuer.source.end(TokenSet(access_token="at", refresh_token=live))
    assert _revoked(issuer.fake) == [live]
    issuer.go_down()
    await issuer.source.end(TokenSet(access_token="at", refresh_token=issuer.grant()))  # logged, not raised


async def test_ready_when_the_source_answers(issuer: Issuer) -> None:
    await issuer.source.ready()
    assert issuer.source.refresh_skew == 30
    assert issuer.source.timeout == 10


def _revoked(fake: FakeIdP | FakeTokenAPI) -> list[str]:
    return fake.revoked if isinstance(fake, FakeIdP) else fake.blacklisted
