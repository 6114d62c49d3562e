"""The real JWT login APIs of `tests/support/token_apis.py` behave as the token-API mode's tests
will rely on: the exact statuses of logins, refreshes, revocations and expired access tokens,
SimpleJWT's rotation, flask-jwt-extended's refresh without rotation, the request counters, and
50 concurrent requests. Talks to them directly with httpx (no BFF)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.support.token_apis import (
    DEFAULT_ACCESS_LIFETIME,
    FLAVOURS,
    TokenApi,
    TokenApiFactory,
    jwt_claims,
    wait_until_expired,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_login_with_the_right_password_answers_an_access_and_a_refresh_token(
    http: httpx.Client, token_api: TokenApi
) -> None:
    flavour = token_api.flavour
    response = http.post(token_api.login_url, json={"username": token_api.username, "password": token_api.password})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {flavour.access_field, flavour.refresh_field}
    access = body[flavour.access_field]
    assert jwt_claims(access)["exp"] == pytest.approx(jwt_claims(access)["iat"] + DEFAULT_ACCESS_LIFETIME, abs=1)
    me = http.get(token_api.me_url, headers=bearer(access))
    assert me.status_code == 200
    identity = me.json()["username"] if flavour.name == "simplejwt" else me.json()["sub"]
    assert identity == ("alice" if flavour.name == "simplejwt" else "1")


def test_login_with_a_wrong_password_is_refused_with_401(http: httpx.Client, token_api: TokenApi) -> None:
    response = http.post(token_api.login_url, json={"username": token_api.username, "password": "wrong"})

    assert response.status_code == 401
    if token_api.flavour.name == "flask_jwt":
        assert response.json() == {"msg": "bad credentials"}
    else:
        assert response.json() == {"detail": "No active account found with the given credentials"}


def test_protected_endpoint_answers_method_and_body_and_refuses_no_token(
    http: httpx.Client, token_api: TokenApi
) -> None:
    tokens = token_api.login()

    posted = http.post(token_api.me_url, headers=bearer(tokens.access), content=b'{"hello": "world"}')
    got = http.get(token_api.me_url, headers=bearer(tokens.access))
    anonymous = http.get(token_api.me_url)

    assert posted.status_code == 200
    assert posted.json()["method"] == "POST"
    assert posted.json()["body"] == '{"hello": "world"}'
    assert (got.json()["method"], got.json()["body"]) == ("GET", "")
    if token_api.flavour.name == "simplejwt":
        assert (posted.json()["user_id"], posted.json()["username"]) == (1, "alice")
    else:
        assert posted.json()["sub"] == "1"
    assert anonymous.status_code == 401


def test_simplejwt_refresh_rotates_and_the_old_refresh_token_is_refused(
    http: httpx.Client, simplejwt_api: TokenApi
) -> None:
    tokens = simplejwt_api.login()

    rotated = http.post(simplejwt_api.refresh_url, json={"refresh": tokens.refresh})
    again = http.post(simplejwt_api.refresh_url, json={"refresh": tokens.refresh})

    assert rotated.status_code == 200
    assert set(rotated.json()) == {"access", "refresh"}
    assert rotated.json()["refresh"] != tokens.refresh
    assert http.get(simplejwt_api.me_url, headers=bearer(rotated.json()["access"])).status_code == 200
    assert again.status_code == 401
    assert again.json() == {"detail": "Token is blacklisted", "code": "token_not_valid"}
    assert simplejwt_api.refresh(rotated.json()["refresh"]).status_code == 200


def test_simplejwt_blacklisted_refresh_token_is_refused(http: httpx.Client, simplejwt_api: TokenApi) -> None:
    tokens = simplejwt_api.login()

    blacklisted = http.post(simplejwt_api.logout_url, json={"refresh": tokens.refresh})
    refused = simplejwt_api.refresh(tokens.refresh)

    assert blacklisted.status_code == 200
    assert refused.status_code == 401
    assert refused.json()["code"] == "token_not_valid"


def test_flask_refresh_answers_an_access_token_only_and_keeps_the_refresh_token(
    http: httpx.Client, flask_jwt_api: TokenApi
) -> None:
    tokens = flask_jwt_api.login()

    first = http.post(flask_jwt_api.refresh_url, headers=bearer(tokens.refresh))
    second = http.post(flask_jwt_api.refresh_url, headers=bearer(tokens.refresh))

    assert (first.status_code, second.status_code) == (200, 200)
    assert set(first.json()) == {"access_token"} == set(second.json())
    assert first.json()["access_token"] != tokens.access
    assert http.get(flask_jwt_api.me_url, headers=bearer(second.json()["access_token"])).status_code == 200


def test_flask_revoked_refresh_token_is_refused(http: httpx.Client, flask_jwt_api: TokenApi) -> None:
    tokens = flask_jwt_api.login()

    revoked = http.delete(flask_jwt_api.logout_url, headers=bearer(tokens.refresh))
    refused = flask_jwt_api.refresh(tokens.refresh)

    assert revoked.status_code == 200
    assert refused.status_code == 401
    assert refused.json() == {"msg": "Token has been revoked"}
    assert flask_jwt_api.logout(tokens.refresh).status_code == 401
    # The library's default for a token of the wrong type (an access token where a refresh token
    # is required): 422, not 401.
    assert flask_jwt_api.refresh(tokens.access).status_code == 422


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_expired_access_token_is_refused_with_401_and_a_bearer_challenge(
    http: httpx.Client, token_api_factory: TokenApiFactory, flavour: str
) -> None:
    api = token_api_factory(flavour, access_lifetime=2)
    tokens = api.login()
    assert http.get(api.me_url, headers=bearer(tokens.access)).status_code == 200

    wait_until_expired(tokens.access)
    expired = http.get(api.me_url, headers=bearer(tokens.access))
    refreshed = api.refresh(tokens.refresh)

    assert expired.status_code == 401
    assert expired.headers["WWW-Authenticate"].startswith("Bearer ")
    assert refreshed.status_code == 200
    new_access = refreshed.json()[api.flavour.access_field]
    assert http.get(api.me_url, headers=bearer(new_access)).status_code == 200


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_padding_claim_is_in_every_token_and_survives_a_refresh(
    http: httpx.Client, token_api_factory: TokenApiFactory, flavour: str
) -> None:
    api = token_api_factory(flavour, extra_claim_bytes=3000)
    tokens = api.login()
    refreshed = api.refresh(tokens.refresh).raise_for_status().json()

    for token in (tokens.access, tokens.refresh, refreshed[api.flavour.access_field]):
        assert jwt_claims(token)["bff_test_padding"] == "x" * 3000
        assert len(token) > 4000
    assert http.get(api.me_url, headers=bearer(tokens.access)).status_code == 200


def test_counters_count_requests_per_path_until_reset(http: httpx.Client, token_api: TokenApi) -> None:
    tokens = token_api.login()
    for _ in range(2):
        token_api.refresh(tokens.refresh if token_api.flavour.name == "flask_jwt" else token_api.login().refresh)
    for _ in range(3):
        http.get(token_api.me_url, headers=bearer(tokens.access))
    http.get(token_api.me_url, headers=bearer("not-a-token"))

    logins = 1 if token_api.flavour.name == "flask_jwt" else 3
    assert token_api.counts() == {
        token_api.flavour.login_path: logins,
        token_api.flavour.refresh_path: 2,
        token_api.flavour.me_path: 4,
    }
    token_api.reset()
    assert token_api.counts() == {}


async def test_fifty_concurrent_requests_are_all_answered(token_api: TokenApi) -> None:
    access = token_api.login().access
    async with httpx.AsyncClient(timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post(token_api.me_url, headers=bearer(access), content=str(i)) for i in range(50))
        )

    assert [response.status_code for response in responses] == [200] * 50
    assert sorted(int(response.json()["body"]) for response in responses) == list(range(50))
    assert token_api.counts()[token_api.flavour.me_path] == 50


async def test_simplejwt_concurrent_logins_and_refreshes_do_not_lock_the_database(simplejwt_api: TokenApi) -> None:
    """Each login writes an outstanding token, each refresh blacklists one and writes another."""
    credentials = {"username": simplejwt_api.username, "password": simplejwt_api.password}
    async with httpx.AsyncClient(timeout=30) as client:
        logins = await asyncio.gather(*(client.post(simplejwt_api.login_url, json=credentials) for _ in range(25)))
        assert [response.status_code for response in logins] == [200] * 25
        refreshes = await asyncio.gather(
            *(client.post(simplejwt_api.refresh_url, json={"refresh": login.json()["refresh"]}) for login in logins)
        )

    assert [response.status_code for response in refreshes] == [200] * 25
    assert len({response.json()["refresh"] for response in refreshes}) == 25
    assert simplejwt_api.counts() == {"/api/token/": 25, "/api/token/refresh/": 25}
