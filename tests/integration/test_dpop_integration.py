"""DPoP (RFC 9449, README "DPoP") against the real provider, in server and cookie mode.

Its own provider (panva's oidc-provider with `OP_DPOP=nonce`: every proof at the token endpoint
must carry the provider's nonce) and its own upstream, the DPoP API of `tests.support.dpop_api`,
which checks every proof as §4.3 says and demands its nonce (`require_nonce`). Each BFF has
`oidc.dpop = true`; the `/api` route forwards the user's token there. Every test runs once per
mode (`dpop_bff` is parametrized).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis

from bff.app import BffApp
from bff.config import load_settings
from bff.dpop import DPoPKey
from bff.tokenset import TokenSet
from tests.integration.oidc_harness import ACCESS_TTL, Bff, Run, user_name
from tests.integration.oidc_helpers import (
    CSRF,
    concurrent_api_requests,
    leaks,
    logged_in,
    secret_fragments,
    session_cookie,
)
from tests.support import jwt_api
from tests.support.dpop_api import DPoPApi, running_dpop_api
from tests.support.jwt_api import JwtApi
from tests.support.oidc_browser import Browser
from tests.support.oidc_provider import OidcProvider
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

MODES = ["server", "cookie"]
PRIVATE_KEYS_SEEN: set[str] = set()
"""The `d` of every session key `stored_tokens` read, for the log check."""


@pytest.fixture(scope="module")
def dpop_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("dpop")
    provider = OidcProvider(root / "provider", access_ttl=ACCESS_TTL, dpop="nonce")
    provider.start()
    # The run's JWT API is never started: this module's BFFs send `/api` to the DPoP API.
    session = Run(root=root, provider=provider, api=JwtApi(provider.issuer, provider.api_audience))
    try:
        yield session
    finally:
        session.close()
        provider.close()


@pytest.fixture(scope="module")
def dpop_api(dpop_run: Run) -> Iterator[DPoPApi]:
    with running_dpop_api(dpop_run.provider.issuer, dpop_run.provider.api_audience) as api:
        yield api


@pytest.fixture(scope="module")
def new_dpop_bff(dpop_run: Run, dpop_api: DPoPApi) -> Callable[..., Bff]:
    def make(name: str, mode: str, **kwargs: Any) -> Bff:
        return dpop_run.new_bff(
            f"{name}-{mode}", token_storage=mode, api_url=dpop_api.url, oidc_extra={"dpop": True}, **kwargs
        )

    return make


@pytest.fixture(scope="module", params=MODES)
def dpop_bff(request: pytest.FixtureRequest, new_dpop_bff: Callable[..., Bff]) -> Iterator[Bff]:
    bff = new_dpop_bff("dpop", request.param)
    yield bff
    bff.process.stop()


# ---------------------------------------------------------------------------------------- helpers


def stored_tokens(bff: Bff, browser: Browser) -> TokenSet:
    """The session's tokens as the BFF reads them (its own code, settings and store)."""

    async def read() -> TokenSet:
        app = BffApp(load_settings({}, bff.process.config_file), clock=time.time, idp_transport=None, extra_routes=())
        await app.store.open()
        try:
            cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies_named(bff.cookie_name).items())
            session = await app.sessions.load([(b"cookie", cookie.encode())])
            assert session is not None, "the BFF does not know the browser's session"
            if session.tokens.dpop_key:
                PRIVATE_KEYS_SEEN.add(json.loads(session.tokens.dpop_key)["d"])
            return session.tokens
        finally:
            await app.stop()

    return asyncio.run(read())


def jkt_of(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False})["cnf"]["jkt"])


def counts_of(provider: OidcProvider, bff: Bff, prefix: str) -> dict[str, int]:
    """The provider's counters of this BFF's client whose names start with `prefix`."""
    client = bff.client.client_id
    return {
        name: per_client[client]
        for name, per_client in provider.counters().items()
        if name.startswith(prefix) and client in per_client
    }


def api_path(bff: Bff, name: str) -> str:
    """A path of the shared DPoP API that only this BFF uses."""
    return f"/api/{name}/{bff.process.port}"


def wait_for_expiry(echo: httpx.Response) -> None:
    jwt_api.wait_for_expiry(float(echo.json()["exp"]), margin=0.5)


# ------------------------------------------------------------------- 1. login binds to the session's key


@pytest.mark.parametrize("mode", MODES)
def test_login_binds_the_tokens_to_the_sessions_key_and_the_upstream_gets_dpop_proofs(
    dpop_run: Run, new_dpop_bff: Callable[..., Bff], dpop_api: DPoPApi, mode: str, request: pytest.FixtureRequest
) -> None:
    bff, provider = new_dpop_bff("dpop-login", mode), dpop_run.provider
    try:
        browser = logged_in(dpop_run, bff, user_name(request))
        [login] = provider.issued(bff.client.client_id)
        assert (login["grantType"], login["token_type"]) == ("authorization_code", "DPoP")
        tokens = stored_tokens(bff, browser)
        assert tokens.token_type == "DPoP"
        assert tokens.dpop_key is not None
        key = DPoPKey.from_jwk(tokens.dpop_key)
        assert jkt_of(login["access_token"]) == key.jkt == jkt_of(tokens.access_token)
        # A new BFF knows no nonce yet: its first proof is refused, the retry carries the nonce.
        assert counts_of(provider, bff, "grant") == {
            "grant:authorization_code": 1,
            "grant_error:authorization_code:use_dpop_nonce": 1,
        }

        hello = api_path(bff, "hello")
        answer = browser.api("GET", f"{bff.url}{hello}?x=1")
        assert answer.status_code == 200, answer.text
        assert answer.json()["jkt"] == key.jkt
        body = {"name": "widget", "size": 3}
        items = api_path(bff, "items")
        created = browser.api("POST", f"{bff.url}{items}", json=body)
        assert created.status_code == 200, created.text
        assert json.loads(created.json()["body"]) == body
        # The API demands its nonce: the first request learns it (a challenge, then one replay),
        # the next one carries it.
        assert [(seen.status, seen.error) for seen in dpop_api.seen_for(hello)] == [
            (401, "nonce missing or stale"),
            (200, None),
        ]
        assert [seen.status for seen in dpop_api.seen_for(items)] == [200]
        seen = dpop_api.seen_for(hello) + dpop_api.seen_for(items)
        assert {request.authorization for request in seen} == {"DPoP " + tokens.access_token}
        assert len({request.proof for request in seen}) == 3
    finally:
        bff.process.stop()


def test_a_replayed_proof_is_refused_by_the_upstream(
    dpop_run: Run, dpop_bff: Bff, dpop_api: DPoPApi, request: pytest.FixtureRequest
) -> None:
    browser = logged_in(dpop_run, dpop_bff, user_name(request))
    once = api_path(dpop_bff, "once")
    assert browser.api("GET", f"{dpop_bff.url}{once}").status_code == 200
    [accepted] = [seen for seen in dpop_api.seen_for(once) if seen.status == 200]
    refused_before = dpop_api.refused["invalid_dpop_proof"]
    replayed = httpx.get(
        f"{dpop_api.url}{once}", headers={"authorization": accepted.authorization, "dpop": accepted.proof or ""}
    )
    assert replayed.status_code == 401
    assert replayed.json() == {"error": "invalid_dpop_proof"}
    assert dpop_api.refused["invalid_dpop_proof"] == refused_before + 1
    assert dpop_api.seen_for(once)[-1].error == "jti used before (a replayed proof)"


# ------------------------------------------------------------------------------------- 2. refresh


@dataclass
class Expired:
    """A signed-in browser whose access token has just expired, and what the provider had issued."""

    browser: Browser
    key: DPoPKey
    refreshes: int
    issued: int

    def refreshed_once(self, provider: OidcProvider, bff: Bff) -> dict[str, Any]:
        """The one refresh since: a DPoP-bound token for the same key."""
        assert provider.refresh_count(bff.client.client_id) == self.refreshes + 1
        [refreshed] = provider.issued(bff.client.client_id)[self.issued :]
        assert (refreshed["grantType"], refreshed["token_type"]) == ("refresh_token", "DPoP")
        assert jkt_of(refreshed["access_token"]) == self.key.jkt
        return refreshed


def expired_session(run: Run, bff: Bff, user: str) -> Expired:
    browser = logged_in(run, bff, user)
    key = DPoPKey.from_jwk(stored_tokens(bff, browser).dpop_key or "")
    first = browser.api("GET", f"{bff.url}/api/warm")
    assert first.status_code == 200, first.text
    refreshes, issued = run.provider.refresh_count(bff.client.client_id), len(run.provider.issued(bff.client.client_id))
    wait_for_expiry(first)
    return Expired(browser, key, refreshes, issued)


def test_proactive_refresh_carries_a_proof_and_keeps_the_tokens_bound_to_the_same_key(
    dpop_run: Run, dpop_bff: Bff, dpop_api: DPoPApi, request: pytest.FixtureRequest
) -> None:
    bff = dpop_bff
    expired = expired_session(dpop_run, bff, user_name(request))
    after_path = api_path(bff, "after")
    after = expired.browser.api("GET", f"{bff.url}{after_path}")
    assert after.status_code == 200, after.text
    refreshed = expired.refreshed_once(dpop_run.provider, bff)
    assert after.json()["jkt"] == expired.key.jkt
    tokens = stored_tokens(bff, expired.browser)
    assert (tokens.access_token, tokens.dpop_key) == (refreshed["access_token"], expired.key.private_jwk())
    assert [seen.status for seen in dpop_api.seen_for(after_path)] == [200]  # refreshed before sending


@pytest.mark.parametrize("mode", MODES)
def test_reactive_refresh_after_the_upstreams_401_carries_a_proof_and_replays_with_a_new_proof(
    dpop_run: Run, new_dpop_bff: Callable[..., Bff], dpop_api: DPoPApi, mode: str, request: pytest.FixtureRequest
) -> None:
    bff = new_dpop_bff("dpop-reactive", mode, refresh_skew="0s")
    try:
        expired = expired_session(dpop_run, bff, user_name(request))
        reactive = api_path(bff, "reactive")
        replayed = expired.browser.api("POST", f"{bff.url}{reactive}", json={"n": 1})
        assert replayed.status_code == 200, replayed.text
        assert replayed.json()["body"] == '{"n":1}'
        refreshed = expired.refreshed_once(dpop_run.provider, bff)
        seen = dpop_api.seen_for(reactive)
        assert [(s.status, s.error) for s in seen] == [(401, "access token: ExpiredSignatureError"), (200, None)]
        assert seen[0].body_sha256 == seen[1].body_sha256
        assert seen[1].authorization == "DPoP " + refreshed["access_token"]
    finally:
        bff.process.stop()


def test_fifty_requests_on_an_expired_dpop_token_cause_one_refresh(
    dpop_run: Run, dpop_bff: Bff, dpop_api: DPoPApi, request: pytest.FixtureRequest
) -> None:
    bff = dpop_bff
    expired = expired_session(dpop_run, bff, user_name(request))
    accepted = dpop_api.accepted
    responses = concurrent_api_requests(bff, session_cookie(expired.browser, bff), 50)
    statuses = [response.status_code for response in responses]
    assert statuses == [200] * 50, {status: statuses.count(status) for status in set(statuses)}
    expired.refreshed_once(dpop_run.provider, bff)
    assert len({response.json()["jti"] for response in responses}) == 1  # one new access token
    assert dpop_api.accepted - accepted == 50  # 50 proofs, each with its own jti, none refused
    assert expired.browser.api("GET", f"{bff.url}/api/after-fifty").status_code == 200


# -------------------------------------------------------------------------------------- 3. logout


def test_logout_revokes_the_dpop_bound_refresh_token(
    dpop_run: Run, dpop_bff: Bff, request: pytest.FixtureRequest
) -> None:
    bff, provider, user = dpop_bff, dpop_run.provider, user_name(request)
    browser = logged_in(dpop_run, bff, user)
    [refresh_token] = provider.current_refresh_tokens(user, bff.client.client_id)
    assert provider.introspect(refresh_token, bff.client)["active"] is True
    response = browser.api("POST", f"{bff.url}/bff/logout")
    assert response.status_code == 200, response.text
    assert provider.introspect(refresh_token, bff.client)["active"] is False
    assert browser.api("GET", f"{bff.url}/api/after-logout").status_code == 401


# ------------------------------------------------------------------------ 4. the key stays in the BFF


def test_the_private_key_is_in_no_browser_visible_byte_no_log_line_and_no_plaintext_store_byte(
    dpop_run: Run, dpop_bff: Bff, request: pytest.FixtureRequest
) -> None:
    bff = dpop_bff
    browser = logged_in(dpop_run, bff, user_name(request))
    private = json.loads(stored_tokens(bff, browser).dpop_key or "{}")
    d = private["d"]
    assert len(d) == 43  # 32 bytes, base64url
    for path in ("/bff/user", "/api/leak-check"):
        assert browser.api("GET", f"{bff.url}{path}").status_code == 200
    if bff.process.config["token_storage"] == "server":
        assert browser.api("GET", f"{bff.url}/bff/sessions").status_code == 200
    time.sleep(0.3)  # let the process write its last lines

    seen = [(f"{r.method} {r.url}", r.text().encode("latin-1")) for r in browser.history if r.url.startswith(bff.url)]
    seen.append(("log", bff.process.log_file.read_bytes()))
    store = bff.process.sqlite_path
    assert store is not None
    seen.extend((f"store {path.name}", path.read_bytes()) for path in Path(store).parent.glob(store.name + "*"))
    needles = {d, d[:16], d[-16:]}
    found = leaks(seen, needles)
    assert not found, "\n".join(found)
    visible = b"".join(data for where, data in seen if not where.startswith("store"))
    assert b'"d"' not in visible
    assert b"dpop_key" not in visible


@pytest.mark.parametrize("mode", MODES)
def test_the_private_key_is_not_readable_in_a_redis_dump(
    dpop_run: Run, new_dpop_bff: Callable[..., Bff], mode: str, request: pytest.FixtureRequest
) -> None:
    server: RedisServer = request.getfixturevalue("redis_server")
    database = {"server": "/4", "cookie": "/5"}[mode]  # databases of their own: every key is this BFF's
    bff = new_dpop_bff("dpop-redis", mode, store=server.url[: -len("/0")] + database)
    try:
        browser = logged_in(dpop_run, bff, user_name(request))
        assert browser.api("GET", f"{bff.url}{api_path(bff, 'redis')}").status_code == 200
        d = json.loads(stored_tokens(bff, browser).dpop_key or "{}")["d"]
        client = redis.Redis.from_url(server.url[: -len("/0")] + database)
        try:
            dump = [(f"redis {key!r}", client.dump(key) or b"") for key in client.scan_iter()]
        finally:
            client.close()
        assert dump, "the BFF wrote nothing to Redis"
        found = leaks(dump, {d, d[:16], d[-16:]})
        assert not found, "\n".join(found)
    finally:
        bff.process.stop()


@pytest.mark.parametrize("mode", MODES)
def test_the_login_state_cookie_holds_the_key_sealed(dpop_run: Run, dpop_api: DPoPApi, mode: str) -> None:
    # Without PAR, so that the browser's URL shows the parameters (a pushed request carries the
    # same ones: oidc_messages.build_authorization_params).
    dpop_bff = dpop_run.new_bff(
        f"dpop-plain-url-{mode}",
        token_storage=mode,
        api_url=dpop_api.url,
        oidc_extra={"dpop": True, "pushed_authorization": "off"},
    )
    browser = Browser()
    try:
        started = browser.start_login(dpop_bff.url)
        assert started.status_code == 302
        query = httpx.URL(started.headers["location"]).params
        jkt = query.get("dpop_jkt")
        assert jkt is not None
        assert len(jkt) == 43
        login_cookie = [
            value for name, value in browser.cookies_named(dpop_bff.cookie_name).items() if "-login-" in name
        ]
        assert len(login_cookie) == 1
        assert b'"d"' not in login_cookie[0].encode()
        assert jkt not in login_cookie[0]
    finally:
        browser.close()
        dpop_bff.process.stop()


def test_a_dpop_session_keeps_working_when_the_api_rotates_its_nonce(
    dpop_run: Run, dpop_bff: Bff, dpop_api: DPoPApi, request: pytest.FixtureRequest
) -> None:
    browser = logged_in(dpop_run, dpop_bff, user_name(request))
    assert browser.api("GET", f"{dpop_bff.url}/api/nonce-a").status_code == 200
    dpop_api.rotate_nonce()
    nonce_b = api_path(dpop_bff, "nonce-b")
    rotated = browser.api("POST", f"{dpop_bff.url}{nonce_b}", headers=CSRF, json={"k": "v"})
    assert rotated.status_code == 200, rotated.text
    assert [seen.status for seen in dpop_api.seen_for(nonce_b)] == [401, 200]


@pytest.mark.usefixtures("dpop_bff")  # after each mode's tests
def test_logs_of_the_dpop_bffs_contain_no_token_no_cookie_value_and_no_key(dpop_run: Run) -> None:
    logs = [(bff.process.log_file.name, bff.process.log_file.read_bytes()) for bff in dpop_run.bffs]
    assert sum(len(data) for _, data in logs) > 0
    assert PRIVATE_KEYS_SEEN
    needles = secret_fragments(dpop_run) | {d[:16] for d in PRIVATE_KEYS_SEEN} | {d[-16:] for d in PRIVATE_KEYS_SEEN}
    assert len(needles) > 10
    found = leaks(logs, needles)
    assert not found, "\n".join(found)
