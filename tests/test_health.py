"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from bff.app import BffApp
from bff.stores import Store
from tests.fakes import Clock, DownStore, FakeIdP, settings_for
from tests.support.app_clients import app_client


def make_client(idp: FakeIdP, *, store: Store | None = None, **environ: str) -> TestClient:
    clock = Clock()
    idp.clock = clock
    return app_client(settings_for(**environ), clock=clock, idp=idp, store=store)


def test_healthz_is_always_ok() -> None:
    idp = FakeIdP()
    idp.unreachable = True
    with make_client(idp) as client:
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


def test_readyz_checks_store_and_provider() -> None:
    idp = FakeIdP()
    with make_client(idp) as client:
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "store": "ok", "provider": "ok"}
        idp.unreachable = True
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["status"] == "unavailable"
        assert response.json()["store"] == "ok"
        assert "unreachable" in response.json()["provider"]
        idp.unreachable = False
        assert client.get("/readyz").status_code == 200


def test_readyz_with_the_store_down_is_503() -> None:
    idp = FakeIdP()
    with make_client(idp, store=DownStore(message="store down")) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["store"] == "store down"


def test_metrics_counts_logins() -> None:
    idp = FakeIdP()
    with make_client(idp) as client:
        params = idp.authorize(client.get("/bff/login").headers["location"])
        assert client.get("/bff/callback", params=params).status_code == 302
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert 'bff_logins_total{outcome="success"} 1' in response.text


def test_readyz_is_503_shutting_down_once_the_drain_began_and_drain_then_hands_over() -> None:
    with make_client(FakeIdP()) as client:
        app = client.app
        assert isinstance(app, BffApp)
        handed_over: list[bool] = []
        client.portal.call(app.drain.drain, lambda: handed_over.append(True))  # type: ignore[union-attr]
        response = client.get("/readyz")
        assert (response.status_code, response.json()) == (503, {"status": "shutting_down"})
        assert response.headers["cache-control"] == "no-store"
        assert handed_over == [True]
        assert client.get("/healthz").status_code == 200


async def test_a_warm_start_reads_discovery_once_and_a_provider_down_at_start_only_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`bff serve`'s workers ask the provider at start (`warm_on_start`), so a worker's first
    login or refresh does not wait for discovery as well; a provider down then keeps it starting."""
    for unreachable in (False, True):
        idp = FakeIdP()
        idp.unreachable = unreachable
        client = make_client(idp)
        app = client.app
        assert isinstance(app, BffApp)
        app.warm_on_start = True
        await app.start()
        try:
            assert app._warming is not None
            await app._warming
        finally:
            await app.stop()
        assert idp.calls["/.well-known/openid-configuration"] == 1  # asked once, answered or not
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.name == "bff.app"] == [
        "Login source not ready at start"
    ]
