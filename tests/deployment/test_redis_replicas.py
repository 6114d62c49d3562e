"""The README's "several replicas on Redis", for real: two `bff serve` processes with the same
`secret_keys` and one `redis-server` (append-only file, so a restart keeps the sessions), behind
Caddy's round robin, against the real OpenID provider and the JWT-validating API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from bff.stores.redis_tracking import HEARTBEAT
from tests.deployment.browser import CLIENT_ADDRESS, Visitor
from tests.deployment.harness import CSRF, Cluster
from tests.support.cookies import clears
from tests.support.jwt_api import wait_for_expiry
from tests.support.oidc_provider import OidcProvider

pytestmark = pytest.mark.integration

CONCURRENT = 50


@pytest.fixture
def visitor() -> Iterator[Visitor]:
    visitor = Visitor()
    try:
        yield visitor
    finally:
        visitor.close()


# ------------------------------------------------------------------------------- round robin


def test_requests_alternate_between_replicas_and_all_work_with_one_cookie(cluster: Cluster, visitor: Visitor) -> None:
    cluster.logged_in(visitor, "round-robin")
    served_by: list[str] = []
    for i in range(6):
        before = [cluster.proxied(r) for r in cluster.replicas]
        response = visitor.api("GET", f"{cluster.url}/api/items/{i}")
        assert response.status_code == 200, response.text
        assert response.json()["sub"] == "round-robin"
        after = [cluster.proxied(r) for r in cluster.replicas]
        deltas = [b - a for a, b in zip(before, after, strict=True)]
        assert sorted(deltas) == [0, 1], deltas
        served_by.append("ab"[deltas.index(1)])
    # Caddy's round robin: strictly one replica, then the other, each with the same cookie.
    assert served_by in (list("ababab"), list("bababa")), served_by
    for replica in cluster.replicas:
        user = visitor.api("GET", f"{replica.url}/bff/user")
        assert user.status_code == 200
        assert user.json()["sub"] == "round-robin"


# ---------------------------------------------------------------------------- single flight


def test_expired_token_and_50_concurrent_requests_over_both_replicas_refresh_once(
    cluster: Cluster, visitor: Visitor, provider: OidcProvider
) -> None:
    cookie = cluster.logged_in(visitor, "single-flight")
    first = visitor.api("GET", f"{cluster.url}/api/before")
    assert first.status_code == 200, first.text
    old_jti = first.json()["jti"]
    wait_for_expiry(first.json()["exp"], margin=1.1)
    refreshes = provider.refresh_count(cluster.client.client_id)
    served = [cluster.proxied(r) for r in cluster.replicas]

    async def burst() -> list[httpx.Response]:
        transport = httpx.AsyncHTTPTransport(local_address=CLIENT_ADDRESS)
        headers = {**CSRF, "Cookie": f"bff={cookie}"}
        async with httpx.AsyncClient(transport=transport, timeout=30, headers=headers) as client:
            return list(await asyncio.gather(*(client.get(f"{cluster.url}/api/burst/{i}") for i in range(CONCURRENT))))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * CONCURRENT, [r.text for r in responses if r.status_code != 200]
    assert provider.refresh_count(cluster.client.client_id) == refreshes + 1
    assert provider.refresh_errors(cluster.client.client_id) == {}
    jtis = {r.json()["jti"] for r in responses}
    assert len(jtis) == 1, "every request must carry the one refreshed token"
    assert old_jti not in jtis, "every request must carry the one refreshed token"
    # Both replicas took part in the burst.
    deltas = [cluster.proxied(r) - before for r, before in zip(cluster.replicas, served, strict=True)]
    assert sum(deltas) == CONCURRENT, deltas
    assert min(deltas) > 0, deltas


# ---------------------------------------------------------------------------------- logout


def test_logout_on_one_replica_makes_the_old_cookie_401_on_the_other(cluster: Cluster, visitor: Visitor) -> None:
    cookie = cluster.logged_in(visitor, "logout")
    first, second = cluster.replicas
    assert visitor.api("GET", f"{second.url}/api/ok").status_code == 200
    logout = visitor.api("POST", f"{first.url}/bff/logout", headers={"Origin": cluster.url})
    assert logout.status_code == 200, logout.text
    # The old cookie, replayed by hand, on the other replica and then through Caddy (both ways).
    old = {"Cookie": f"bff={cookie}", **CSRF}
    for url in (f"{second.url}/api/ok", f"{cluster.url}/api/ok", f"{cluster.url}/api/ok"):
        response = httpx.get(url, headers=old, timeout=10)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "not_authenticated"
    assert httpx.get(f"{second.url}/bff/user", headers=old, timeout=10).status_code == 401


def test_back_channel_logout_through_caddy_ends_the_session_on_both_replicas(
    cluster: Cluster, visitor: Visitor, provider: OidcProvider
) -> None:
    cookie = cluster.logged_in(visitor, "back-channel")
    sent = provider.backchannel_count(cluster.client.client_id)
    visitor.provider_logout(provider.issuer, cluster.client.client_id)
    # The provider posted the logout token to public_url (Caddy), which gave it to one replica.
    deadline = time.monotonic() + 5
    while provider.backchannel_count(cluster.client.client_id) == sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert provider.backchannel_count(cluster.client.client_id) == sent + 1
    old = {"Cookie": f"bff={cookie}", **CSRF}
    for replica in cluster.replicas:
        response = httpx.get(f"{replica.url}/api/after", headers=old, timeout=10)
        assert response.status_code == 401, response.text


# --------------------------------------------------------------------------------- redis down


def test_redis_down_answers_503_store_unavailable_with_retry_after_and_keeps_the_session(
    cluster: Cluster, visitor: Visitor
) -> None:
    cluster.logged_in(visitor, "redis-down")
    assert visitor.api("GET", f"{cluster.url}/api/up").status_code == 200
    cluster.redis.stop()
    try:
        for path in ("/api/down", "/api/down", "/bff/user", "/bff/user"):  # twice: both replicas
            response = visitor.api("GET", f"{cluster.url}{path}")
            assert response.status_code == 503, (path, response.status_code, response.text)
            assert response.json()["error"] == "store_unavailable"
            assert int(response.headers["retry-after"]) >= 1
            assert not any(clears(h) for h in response.headers.get_list("set-cookie")), "no logout"
    finally:
        cluster.redis.start()
    # Redis kept the session in its append-only file: the same cookie works on both replicas.
    for i in range(2):
        response = visitor.api("GET", f"{cluster.url}/api/back/{i}")
        assert response.status_code == 200, response.text
        assert response.json()["sub"] == "redis-down"
    for replica in cluster.replicas:
        assert visitor.api("GET", f"{replica.url}/bff/user").json()["sub"] == "redis-down"


def test_a_hung_redis_answers_503_after_the_store_timeout_not_a_hanging_request(
    cluster: Cluster, visitor: Visitor
) -> None:
    cluster.logged_in(visitor, "hung-redis")
    cluster.redis.pause()
    try:
        # Until a tracking PING goes unanswered a replica still answers from the records it holds
        # (no write can land on a hung Redis); from then on each load asks Redis.
        time.sleep(2 * HEARTBEAT + 0.5)
        for _ in range(2):  # both replicas
            started = time.monotonic()
            response = visitor.api("GET", f"{cluster.url}/api/hung")
            elapsed = time.monotonic() - started
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "store_unavailable"
            assert "retry-after" in response.headers
            assert elapsed < 5, f"answered after {elapsed:.1f}s (store timeout 2s)"
    finally:
        cluster.redis.resume()
    response = visitor.api("GET", f"{cluster.url}/api/resumed")
    assert response.status_code == 200, response.text


def test_replicas_idle_while_redis_restarted_serve_their_first_request_after_it(
    cluster: Cluster, visitor: Visitor
) -> None:
    """Each replica's pooled Redis connections died with the server; the first request on each
    must reconnect, not answer 503 although Redis is back."""
    cluster.logged_in(visitor, "idle-restart")
    for replica in cluster.replicas:
        assert visitor.api("GET", f"{replica.url}/api/warm").status_code == 200
    cluster.redis.stop()
    cluster.redis.start()
    for replica in cluster.replicas:
        response = visitor.api("GET", f"{replica.url}/api/first")
        assert response.status_code == 200, response.text
        assert response.json()["sub"] == "idle-restart"


def test_readyz_of_a_replica_is_503_while_redis_is_down_and_200_after(cluster: Cluster) -> None:
    replica = cluster.replicas[0]
    assert httpx.get(f"{replica.url}/readyz", timeout=10).status_code == 200
    cluster.redis.stop()
    try:
        down = httpx.get(f"{replica.url}/readyz", timeout=10)
        assert down.status_code == 503, down.text
        assert down.json()["status"] == "unavailable"
        assert down.json()["store"] != "ok"
        assert down.json()["provider"] == "ok"
        assert httpx.get(f"{replica.url}/healthz", timeout=10).status_code == 200  # alive, only not ready
    finally:
        cluster.redis.start()
    up = httpx.get(f"{replica.url}/readyz", timeout=10)
    assert up.status_code == 200, up.text
    assert up.json() == {"status": "ok", "store": "ok", "provider": "ok"}
