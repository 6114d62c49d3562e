"""DPoP through the proxy: ProxyApp under real uvicorn in front of a real DPoP-protected upstream
(`tests.support.dpop_api`), which checks every proof as RFC 9449 §4.3 says. The bearer source is
a fake handing out DPoP-bound tokens (JWTs with `cnf.jkt`, HS256 with a test key)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import httpx
import jwt
import pytest

from bff.config import RouteSettings
from bff.dpop import DPoPKey, access_token_hash
from tests.fakes import FakeBearer
from tests.support.dpop_api import DPoPApi
from tests.support.upstreams import UpstreamApp, make_settings, proxy_server

CSRF = {"x-csrf": "1"}
TOKEN_KEY = "dpop-api-test-signing-key-0123456789abcdef"
MAX_REPLAY = 1024


def access_token(key: DPoPKey, *, sub: str = "alice", ttl: float = 300) -> str:
    claims = {"sub": sub, "jti": f"{sub}-{time.time()}", "exp": int(time.time() + ttl), "cnf": {"jkt": key.jkt}}
    return jwt.encode(claims, TOKEN_KEY, algorithm="HS256")


def token_claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, TOKEN_KEY, algorithms=["HS256"], options={"require": ["exp", "cnf"]}))


@pytest.fixture
def api() -> Iterator[DPoPApi]:
    """A DPoP API of its own for each test: the proxy's nonce memory is per upstream origin."""
    server = DPoPApi(token_claims)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def key() -> DPoPKey:
    return DPoPKey.generate()


def dpop_route(api: DPoPApi) -> RouteSettings:
    return RouteSettings(path="/api", upstream=api.url, token="user")


def serving(api: DPoPApi, bearer: FakeBearer) -> Any:
    return proxy_server(make_settings(dpop_route(api), max_replay_body=MAX_REPLAY), bearer_source=bearer)


async def test_a_dpop_token_goes_with_the_dpop_scheme_and_a_fresh_proof_per_request(api: DPoPApi, key: DPoPKey) -> None:
    token = access_token(key)
    bearer = FakeBearer(first=token, dpop_key=key.private_jwk())
    with serving(api, bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            first = await client.get("/api/items?page=2")
            second = await client.get("/api/items?page=2")
    assert (first.status_code, second.status_code) == (200, 200), first.text
    assert first.json()["jkt"] == key.jkt
    assert api.accepted == 2
    seen = api.seen_for("/api/items")
    assert [request.authorization for request in seen] == ["DPoP " + token] * 2
    assert seen[0].proof != seen[1].proof
    claims = jwt.decode(seen[0].proof or "", options={"verify_signature": False})
    assert (claims["htm"], claims["htu"], claims["ath"]) == ("GET", f"{api.url}/api/items", access_token_hash(token))


async def test_a_use_dpop_nonce_challenge_is_answered_by_one_replay_with_the_nonce(api: DPoPApi, key: DPoPKey) -> None:
    api.require_nonce = True
    bearer = FakeBearer(first=access_token(key), dpop_key=key.private_jwk())
    body = b'{"name": "widget"}'
    with serving(api, bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            created = await client.post("/api/items", content=body)
            assert created.status_code == 200, created.text
            assert created.json()["body"] == body.decode()
            seen = api.seen_for("/api/items")
            assert [request.status for request in seen] == [401, 200]
            assert seen[0].body_sha256 == seen[1].body_sha256
            assert bearer.rejected == []  # a nonce challenge is no reason to refresh

            again = await client.get("/api/items")  # the remembered nonce: no challenge
            assert again.status_code == 200
            assert len(api.seen_for("/api/items")) == 3

            api.rotate_nonce()
            rotated = await client.get("/api/items")
            assert rotated.status_code == 200
            assert [request.status for request in api.seen_for("/api/items")[3:]] == [401, 200]
    assert api.refused == {"use_dpop_nonce": 2}
    assert api.accepted == 3


async def test_a_body_too_large_to_replay_gets_the_nonce_challenge_itself(api: DPoPApi, key: DPoPKey) -> None:
    api.require_nonce = True
    bearer = FakeBearer(first=access_token(key), dpop_key=key.private_jwk())
    with serving(api, bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            refused = await client.post("/api/upload", content=b"x" * (MAX_REPLAY + 1))
    assert refused.status_code == 401
    assert refused.headers["dpop-nonce"] == api.nonce
    assert len(api.seen_for("/api/upload")) == 1
    assert bearer.rejected == []


async def test_any_other_401_takes_the_refresh_path_and_the_new_token_gets_its_own_proof(
    api: DPoPApi, key: DPoPKey
) -> None:
    expired, fresh = access_token(key, ttl=-10), access_token(key, sub="alice-2")
    bearer = FakeBearer(first=expired, after=fresh, dpop_key=key.private_jwk())
    with serving(api, bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.put("/api/items/1", content=b"{}")
    assert response.status_code == 200, response.text
    assert bearer.rejected == [expired]
    seen = api.seen_for("/api/items/1")
    assert [request.authorization for request in seen] == ["DPoP " + expired, "DPoP " + fresh]
    assert api.refused == {"invalid_token": 1}


async def test_a_bearer_token_stays_bearer_and_a_dpop_upstream_refuses_it(api: DPoPApi, key: DPoPKey) -> None:
    bearer = FakeBearer(first=access_token(key), after=None)
    with serving(api, bearer) as (proxy, _, _):
        async with httpx.AsyncClient(base_url=proxy.url, headers=CSRF) as client:
            response = await client.get("/api/items")
    assert response.status_code == 401
    seen = api.seen_for("/api/items")
    assert seen[0].authorization.startswith("Bearer ")
    assert seen[0].proof is None


async def test_a_websocket_upgrade_carries_a_proof_for_get_and_the_http_form_of_its_url(
    upstream: Any, up: UpstreamApp, key: DPoPKey
) -> None:
    token = access_token(key)
    route = RouteSettings(path="/api", upstream=upstream[0].url, token="user")
    bearer = FakeBearer(first=token, dpop_key=key.private_jwk())
    with proxy_server(make_settings(route), bearer_source=bearer) as (proxy, _, _):
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(proxy.url + "/api/ws?room=1", headers={"origin": "http://127.0.0.1:8000"}) as ws,
        ):
            await ws.send_str("x")
            assert await ws.receive_str(timeout=5) == "x"
    seen = up.websocket_headers[0]
    assert seen["authorization"] == "DPoP " + token
    header = jwt.get_unverified_header(seen["dpop"])
    claims = jwt.decode(seen["dpop"], jwt.PyJWK(header["jwk"]).key, algorithms=["ES256"])
    assert (claims["htm"], claims["htu"]) == ("GET", f"{upstream[0].url}/api/ws")
    assert claims["ath"] == access_token_hash(token)
