"""The README's "Redis Sentinel and Cluster", failover for real: one `bff serve` on
`redis+sentinel://` (a primary, one replica, three sentinels with `down-after-milliseconds 500`),
a session logged in through the real OpenID provider, and requests running while the primary is
SIGKILLed and the sentinels promote the replica.

What it pins: no answer but 200 or 503; every 503 is `store_unavailable` with `Retry-After` and
clears no cookie; the same cookie works after the switch; the BFF serves again within
`RECOVERY_AFTER_PROMOTION` seconds of the sentinels naming the new primary and within
`RECOVERY_AFTER_KILL` seconds of the kill, and never fails again afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.deployment.browser import Visitor
from tests.deployment.harness import replica_config
from tests.support.bff_process import BffProcess, new_secret_key
from tests.support.cookies import clears
from tests.support.jwt_api import JwtApi
from tests.support.oidc_provider import OidcProvider
from tests.support.processes import free_port
from tests.support.redis_server import redis_server_or_skip
from tests.support.redis_topologies import SentinelGroup
from tests.support.upstreams import ServerThread, UpstreamApp

pytestmark = pytest.mark.integration

RECOVERY_AFTER_PROMOTION = 1.0
"""Seconds from the sentinels naming the new primary to the BFF's first 200: one reconnect."""
RECOVERY_AFTER_KILL = 10.0
"""Seconds from SIGKILL to the first 200 (500 ms to call the primary down, then the election)."""


@dataclass
class Answer:
    sent: float
    answered: float
    path: str
    status: int
    error: str | None
    retry_after: str | None
    set_cookies: list[str]


@dataclass
class Failover:
    group: SentinelGroup
    bff: BffProcess


@pytest.fixture
def failover(
    tmp_path: Path, provider: OidcProvider, api: JwtApi, echo: tuple[ServerThread, UpstreamApp]
) -> Iterator[Failover]:
    group = SentinelGroup(redis_server_or_skip(), tmp_path / "redis")
    port = free_port()
    client = provider.register_client(f"sentinel-{port}", f"http://127.0.0.1:{port}")
    config = replica_config(
        public_url=f"http://127.0.0.1:{port}",
        provider=provider,
        client=client,
        api=api,
        echo_url=echo[0].url,
        store=group.url,
        secret_keys=[new_secret_key()],
        trusted_proxies=["127.0.0.1"],
    )
    bff = BffProcess(workdir=tmp_path / "bff", config=config, port=port)
    try:
        group.start()
        group.wait_until_settled()
        bff.start()
        yield Failover(group, bff)
    finally:
        bff.stop()
        group.stop()


def ask(http: httpx.Client, url: str, path: str) -> Answer:
    sent = time.monotonic()
    response = http.get(f"{url}{path}")
    error = response.json().get("error") if response.status_code != 200 else None
    return Answer(
        sent,
        time.monotonic(),
        path,
        response.status_code,
        error,
        response.headers.get("retry-after"),
        response.headers.get_list("set-cookie"),
    )


def test_primary_killed_under_load_answers_503_with_retry_after_then_the_same_cookie_works(
    failover: Failover,
) -> None:
    visitor = Visitor()
    try:
        visitor.login(failover.bff.url, "failover")
        cookie = visitor.cookie("bff")
        assert cookie
    finally:
        visitor.close()
    headers = {"X-CSRF": "1", "Cookie": f"bff={cookie}"}
    paths = ("/bff/user", "/api/during")
    with httpx.Client(headers=headers, timeout=10) as http:
        assert [ask(http, failover.bff.url, p).status for p in paths] == [200, 200]
        failover.group.wait_until_replicated()  # the session is on the replica (replication is asynchronous)

        answers: list[Answer] = []
        done = threading.Event()

        def load() -> None:
            i = 0
            while not done.is_set():
                answers.append(ask(http, failover.bff.url, paths[i % 2]))
                i += 1
                time.sleep(0.01)

        loader = threading.Thread(target=load)
        loader.start()
        try:
            time.sleep(0.3)
            killing = time.monotonic()
            failover.group.kill_primary()
            killed = time.monotonic()  # the primary is gone: every request sent from now on meets that
            failover.group.wait_for_failover()
            promoted = time.monotonic()
            time.sleep(RECOVERY_AFTER_PROMOTION + 1.0)
        finally:
            done.set()
            loader.join(30)

        before = [a for a in answers if a.answered < killing]
        after = [a for a in answers if a.sent >= killed]
        assert before
        assert {a.status for a in before} == {200}
        assert {a.status for a in answers} == {200, 503}, sorted({(a.status, a.error) for a in answers})
        for answer in answers:
            if answer.status == 503:
                assert (answer.error, answer.retry_after) == ("store_unavailable", "2"), answer
            assert not any(clears(c) for c in answer.set_cookies), answer
        assert after[0].status == 503, "the first request sent after the kill meets the dead primary"
        first_ok = next(i for i, a in enumerate(after) if a.status == 200)
        assert {a.status for a in after[first_ok:]} == {200}, "once back, it stays back"
        recovered = after[first_ok].answered
        assert recovered - killed < RECOVERY_AFTER_KILL, f"served again {recovered - killed:.2f}s after the kill"
        assert recovered - promoted < RECOVERY_AFTER_PROMOTION, f"{recovered - promoted:.2f}s after the promotion"
        print(  # shown with -s: the measured switch
            f"failover: {sum(a.status == 503 for a in after)} x 503, sentinels promoted after "
            f"{promoted - killed:.2f}s, BFF served again after {recovered - killed:.2f}s"
        )

        # The same cookie, after the switch, on the promoted replica: the session was not lost.
        user = http.get(f"{failover.bff.url}/bff/user")
        assert user.status_code == 200
        assert user.json()["sub"] == "failover"
        assert http.get(f"{failover.bff.url}/api/after").json()["sub"] == "failover"
