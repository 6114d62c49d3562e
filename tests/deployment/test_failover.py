"""`kill -9` of one of two replicas behind the repository's `Caddyfile`, under a logged-in user's
steady traffic: Caddy retries the GETs the dead replica refused or dropped on the other one, so
none fails, and the session (in Redis) lives on with the same cookie.

The SPA of one user sends `CLIENTS` concurrent streams of GETs through the proxied `/api` route,
each every `INTERVAL` seconds, staggered, for `REQUESTS` rounds (30 s), from the loopback address
127.0.0.2. After `KILL_AFTER` seconds the test waits for the next token refresh to come back and
then kills replica A: a replica killed while it holds the session's refresh lease, or between the
provider's rotation of the refresh token and saving it, is another story (README, "Several
replicas on Redis"), not Caddy's failover.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
import pytest

from tests.deployment.browser import CLIENT_ADDRESS, Visitor
from tests.deployment.conftest import ACCESS_TTL
from tests.deployment.harness import CSRF, Cluster, proxied_requests
from tests.support.oidc_provider import OidcProvider

pytestmark = pytest.mark.integration

CLIENTS = 4
INTERVAL = 0.05
REQUESTS = 600
KILL_AFTER = 15.0
USER = "failover"


@dataclass(frozen=True)
class Sent:
    """One GET of the traffic: when it started and ended (monotonic), and what came back."""

    started: float
    ended: float
    status: int | None  # None: no HTTP answer at all
    sub: str | None = None
    jti: str | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.sub == USER


@dataclass
class Kill:
    at: float = 0.0
    status: int | None = None
    survivor_before: int = 0
    victim_served: int = 0


async def send(client: httpx.AsyncClient, url: str) -> Sent:
    started = time.monotonic()
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        return Sent(started, time.monotonic(), None, error=repr(exc))
    ended = time.monotonic()
    if response.status_code != 200:
        return Sent(started, ended, response.status_code, error=response.text[:200])
    body = response.json()
    return Sent(started, ended, 200, body.get("sub"), body.get("jti"))


async def stream(client: httpx.AsyncClient, url: str, index: int, start: float, sent: list[Sent]) -> None:
    """One of the SPA's streams: a GET every INTERVAL, offset from the others by index."""
    for n in range(REQUESTS):
        await asyncio.sleep(max(0.0, start + (n + index / CLIENTS) * INTERVAL - time.monotonic()))
        sent.append(await send(client, f"{url}/api/failover/{index}/{n}"))


async def kill_after_a_refresh(cluster: Cluster, start: float, sent: list[Sent], kill: Kill) -> None:
    """At KILL_AFTER, wait until an answer carries a new access token, then `kill -9` replica A."""
    await asyncio.sleep(start + KILL_AFTER - time.monotonic())
    before = sent[-1].jti
    deadline = time.monotonic() + ACCESS_TTL + 2
    while sent[-1].jti == before:
        assert time.monotonic() < deadline, "no token refresh within the access token's lifetime"
        await asyncio.sleep(0.005)
    victim, survivor = cluster.replicas
    async with httpx.AsyncClient(timeout=5) as metrics:
        kill.victim_served = proxied_requests((await metrics.get(f"{victim.url}/metrics")).text)
        kill.survivor_before = proxied_requests((await metrics.get(f"{survivor.url}/metrics")).text)
    kill.at = time.monotonic()
    kill.status = victim.kill()


async def traffic(cluster: Cluster, cookie: str) -> tuple[list[Sent], Kill]:
    sent: list[Sent] = []
    kill = Kill()
    transport = httpx.AsyncHTTPTransport(local_address=CLIENT_ADDRESS)
    headers = {**CSRF, "Cookie": f"bff={cookie}"}
    async with httpx.AsyncClient(transport=transport, timeout=10, headers=headers) as client:
        start = time.monotonic()
        await asyncio.gather(
            kill_after_a_refresh(cluster, start, sent, kill),
            *(stream(client, cluster.url, index, start, sent) for index in range(CLIENTS)),
        )
    return sent, kill


def test_kill_9_of_one_replica_loses_no_request_and_no_session(cluster: Cluster, provider: OidcProvider) -> None:
    visitor = Visitor()
    try:
        cookie = cluster.logged_in(visitor, USER)
        refreshes = provider.refresh_count(cluster.client.client_id)
        sent, kill = asyncio.run(traffic(cluster, cookie))
        victim, survivor = cluster.replicas
        survivor_served = cluster.proxied(survivor) - kill.survivor_before

        failed = [s for s in sent if not s.ok]
        after = [s for s in sent if s.started > kill.at]
        in_flight = [s for s in sent if s.started <= kill.at < s.ended]
        slowest = max(s.ended - s.started for s in sent if s.ended >= kill.at)
        summary = (
            f"{len(sent)} sent, {len(failed)} failed, {len(in_flight)} in flight at the kill, "
            f"{len(after)} after it; slowest answer after the kill {slowest * 1000:.0f} ms"
        )
        print(summary)
        assert kill.status == -9
        assert len(sent) == CLIENTS * REQUESTS
        assert failed == [], summary
        # Both replicas served before the kill; afterwards the survivor served everything.
        assert kill.victim_served > 0
        assert kill.survivor_before > 0
        assert len(after) > 0, (survivor_served, summary)
        assert survivor_served >= len(after), (survivor_served, summary)
        # Tokens kept being refreshed, on the survivor, for the session the cookie names.
        assert len({s.jti for s in after}) > 1
        assert provider.refresh_count(cluster.client.client_id) > refreshes
        assert provider.refresh_errors(cluster.client.client_id) == {}
        assert visitor.cookie("bff") == cookie
        user = visitor.api("GET", f"{cluster.url}/bff/user")
        assert user.status_code == 200
        assert user.json()["sub"] == USER
        assert not victim.running
    finally:
        visitor.close()
