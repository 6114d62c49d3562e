"""`POST /bff/login` of the token-API mode in-process against the fake SimpleJWT-shaped API: the
answer, its failures, what reaches the API, and the session it starts (user, a proxied refresh,
logout)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from bff.session import Session
from bff.token_api_endpoints import MAX_LOGIN_BODY
from tests.fakes import TOKEN_API, Clock, FakeTokenAPI, token_api_settings_for
from tests.support.app_clients import app_client, app_of
from tests.support.upstreams import ServerThread, UpstreamApp

CSRF = {"X-CSRF": "1"}
COOKIE = "__Host-bff"
ALICE = {"username": "alice", "password": "wonderland"}
DAY = 86400


@pytest.fixture
def api(clock: Clock) -> FakeTokenAPI:
    return FakeTokenAPI(clock=clock)


def make_client(api: FakeTokenAPI, clock: Clock, **environ: str) -> TestClient:
    return app_client(token_api_settings_for(**environ), clock=clock, idp=api)


@pytest.fixture
def client(api: FakeTokenAPI, clock: Clock) -> Iterator[TestClient]:
    with make_client(api, clock) as client:
        yield client


def log_in(client: TestClient, credentials: Any = None, **headers: str) -> httpx2.Response:
    return client.post("/bff/login", json=ALICE if credentials is None else credentials, headers={**CSRF, **headers})


def cookie_of(response: httpx2.Response) -> str:
    """The session cookie a login set; leaves the client's jar empty."""
    (set_cookie,) = response.headers.get_list("set-cookie")
    name, _, rest = set_cookie.partition("=")
    assert name == COOKIE
    return rest.split(";")[0]


def as_user(cookie: str, **headers: str) -> dict[str, str]:
    return {"cookie": f"{COOKIE}={cookie}", **headers}


def session_of(client: TestClient, cookie: str) -> Session:
    assert client.portal is not None
    session = client.portal.call(app_of(client).sessions.load, [(b"cookie", f"{COOKIE}={cookie}".encode())])
    assert session is not None
    return session


def error(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


# -- a login that succeeds --------------------------------------------------------------------


def test_login_answers_the_user_as_the_user_endpoint_does_and_sets_the_session_cookie(
    client: TestClient, clock: Clock
) -> None:
    response = log_in(client)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    (set_cookie,) = response.headers.get_list("set-cookie")
    assert set_cookie.startswith(f"{COOKIE}=")
    assert "; HttpOnly" in set_cookie
    assert "; Secure" in set_cookie
    assert "; SameSite=Strict" in set_cookie
    body = response.json()
    assert body == {
        "sub": "42",
        "sid": body["sid"],
        "claims": {"user_id": 42, "username": "alice"},
        "createdAt": clock.now,
        "expiresAt": clock.now + 30 * DAY,
        "accessTokenExpiresAt": clock.now + 300,
        "logoutUrl": f"/bff/logout?sid={body['sid']}",
    }
    client.cookies.clear()
    user = client.get("/bff/user", headers=as_user(cookie_of(response)))
    assert user.status_code == 200
    assert user.json() == body
    assert app_of(client).metrics.value("bff_logins_total", outcome="success") == 1


def test_login_forwards_the_body_as_is_to_the_login_url(client: TestClient, api: FakeTokenAPI) -> None:
    body = b'{"password": "wonderland",\n "username": "alice", "otp": null}'

    response = client.post("/bff/login", content=body, headers={**CSRF, "content-type": "application/json"})

    assert response.status_code == 200
    (request,) = api.requests
    assert (request.method, str(request.url), request.content) == ("POST", f"{TOKEN_API}/api/token/", body)
    assert request.headers["content-type"] == "application/json"
    assert "cookie" not in request.headers
    assert "authorization" not in request.headers


def test_no_token_in_the_login_answer_body_or_headers(client: TestClient, api: FakeTokenAPI) -> None:
    response = log_in(client)

    tokens = session_of(client, cookie_of(response)).tokens
    assert tokens.refresh_token is not None
    assert tokens.refresh_token in api.refresh_tokens
    answer = response.text + json.dumps(response.headers.multi_items())
    for token in (tokens.access_token, tokens.refresh_token, *tokens.access_token.split(".")):
        assert token not in answer
    assert "eyJ" not in answer  # no JWT at all, nor its header


def test_login_keeps_only_the_configured_claims(api: FakeTokenAPI, clock: Clock) -> None:
    with make_client(api, clock, SESSION__KEEP_CLAIMS='["username"]') as client:
        response = log_in(client)
    assert response.status_code == 200
    assert response.json()["claims"] == {"username": "alice"}


# -- a login that fails -----------------------------------------------------------------------


def test_wrong_password_is_401_invalid_credentials_without_a_cookie(client: TestClient, api: FakeTokenAPI) -> None:
    response = log_in(client, {"username": "alice", "password": "wrong"})

    assert response.status_code == 401
    assert response.json() == error("invalid_credentials", "the login API refused the credentials")
    assert response.headers.get_list("set-cookie") == []
    assert api.calls["/api/token/"] == 1
    assert app_of(client).metrics.value("bff_logins_total", outcome="failure") == 1
    assert app_of(client).metrics.value("bff_logins_total", outcome="success") == 0


def test_login_without_the_anti_forgery_header_is_403_and_never_reaches_the_api(
    client: TestClient, api: FakeTokenAPI
) -> None:
    response = client.post("/bff/login", json=ALICE)

    assert response.status_code == 403
    assert response.json() == error("csrf_rejected", "header 'X-CSRF' must be '1'")
    assert api.requests == []


NOT_JSON = "expected an application/json body with the credentials"
NO_OBJECT = 'the body must be a JSON object, e.g. {"username": "...", "password": "..."}'


@pytest.mark.parametrize(
    ("content_type", "body", "detail"),
    [
        ("application/x-www-form-urlencoded", b"username=alice&password=wonderland", NOT_JSON),
        (None, b'{"username": "alice"}', NOT_JSON),
        ("text/plain", b'{"username": "alice"}', NOT_JSON),
        ("application/json", b'{"username": ', "the body is not valid JSON"),
        ("application/json", b"\xff\xfe", "the body is not valid JSON"),
        ("application/json", b'["alice", "wonderland"]', NO_OBJECT),
    ],
)
def test_login_body_that_is_no_json_object_is_400_and_never_reaches_the_api(
    client: TestClient, api: FakeTokenAPI, content_type: str | None, body: bytes, detail: str
) -> None:
    headers = {**CSRF, **({"content-type": content_type} if content_type else {})}

    response = client.post("/bff/login", content=body, headers=headers)

    assert response.status_code == 400
    assert response.json() == error("bad_request", detail)
    assert api.requests == []


def test_json_with_a_charset_parameter_is_json(client: TestClient) -> None:
    headers = {**CSRF, "content-type": "Application/JSON; charset=utf-8"}
    assert client.post("/bff/login", content=json.dumps(ALICE), headers=headers).status_code == 200


def test_login_body_over_64_kib_is_413(client: TestClient, api: FakeTokenAPI) -> None:
    body = json.dumps({**ALICE, "padding": "x" * MAX_LOGIN_BODY}).encode()

    response = client.post("/bff/login", content=body, headers={**CSRF, "content-type": "application/json"})

    assert MAX_LOGIN_BODY == 64 * 1024
    assert response.status_code == 413
    assert response.json() == error("payload_too_large", "request body is larger than 65536 bytes")
    assert api.requests == []


def test_throttled_login_is_429_with_the_api_retry_after(client: TestClient, api: FakeTokenAPI) -> None:
    api.status["/api/token/"] = 429
    api.status_headers = {"Retry-After": "17"}

    response = log_in(client)

    assert response.status_code == 429
    assert response.json() == error("too_many_requests", "the login API is throttling logins")
    assert response.headers["retry-after"] == "17"


@pytest.mark.parametrize(
    ("failure", "detail", "retry_after"),
    [
        ("unreachable", "token API unreachable at api.example: ConnectError", "5"),
        ("500", "token_api.login_url answered 500", "5"),
        ("503 with Retry-After: 30", "token_api.login_url answered 503", "30"),
    ],
)
def test_login_while_the_api_is_down_is_503_with_retry_after(
    client: TestClient, api: FakeTokenAPI, failure: str, detail: str, retry_after: str
) -> None:
    if failure == "unreachable":
        api.unreachable = True
    else:
        api.status["/api/token/"] = int(failure[:3])
        api.status_headers = {"Retry-After": "30"} if "Retry-After" in failure else {}

    response = log_in(client)

    assert response.status_code == 503
    assert response.json() == error("provider_unavailable", detail)
    assert response.headers["retry-after"] == retry_after
    assert response.headers.get_list("set-cookie") == []
    assert app_of(client).metrics.value("bff_logins_total", outcome="failure") == 1


def test_get_login_does_not_exist_in_token_api_mode(client: TestClient, api: FakeTokenAPI) -> None:
    response = client.get("/bff/login", params={"returnTo": "/app"})

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert api.requests == []


def test_readyz_asks_the_token_api(client: TestClient, api: FakeTokenAPI) -> None:
    assert client.get("/readyz").json() == {"status": "ok", "store": "ok", "provider": "ok"}
    assert [(request.method, request.url.path) for request in api.requests] == [("OPTIONS", "/api/token/refresh/")]
    api.unreachable = True
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["provider"] == "token API unreachable at api.example: ConnectError"


# -- the client address the API is told -------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "forwarded_for", "seen"),
    [
        ('["127.0.0.1"]', "203.0.113.7", "testclient"),  # the peer is no proxy: its header is the browser's own
        ('["testclient"]', "203.0.113.7, 10.0.0.1", "10.0.0.1"),
        ('["testclient", "10.0.0.0/8"]', "203.0.113.7, 10.0.0.1", "203.0.113.7"),
        ('["testclient", "10.0.0.0/8"]', "10.0.0.2, 10.0.0.1", "10.0.0.2"),
    ],
)
def test_the_api_sees_the_browser_address_as_trusted_proxies_judge_it(
    api: FakeTokenAPI, clock: Clock, trusted: str, forwarded_for: str, seen: str
) -> None:
    with make_client(api, clock, TRUSTED_PROXIES=trusted) as client:
        assert log_in(client, **{"X-Forwarded-For": forwarded_for}).status_code == 200
    (request,) = api.requests
    assert request.headers.get_list("x-forwarded-for") == [seen]


# -- the session it starts --------------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[tuple[UpstreamApp, str]]:
    app = UpstreamApp()
    with ServerThread(app) as server:
        yield app, server.url


def authorization_seen(response: httpx2.Response) -> str:
    assert response.status_code == 200, response.text
    headers = dict(response.json()["headers"])
    return str(headers["authorization"])


def test_a_route_gets_the_access_token_and_refreshes_it_when_expired(
    api: FakeTokenAPI, clock: Clock, upstream: tuple[UpstreamApp, str]
) -> None:
    _, url = upstream
    routes = {"ROUTES__0__PATH": "/api", "ROUTES__0__UPSTREAM": url, "ROUTES__0__TOKEN": "user"}
    with make_client(api, clock, **routes) as client:
        cookie = cookie_of(log_in(client))
        client.cookies.clear()
        first = session_of(client, cookie).tokens

        assert (
            authorization_seen(client.get("/api/me", headers=as_user(cookie, **CSRF))) == f"Bearer {first.access_token}"
        )
        clock.advance(api.access_ttl)
        seen = authorization_seen(client.get("/api/me", headers=as_user(cookie, **CSRF)))

        second = session_of(client, cookie).tokens
        assert seen == f"Bearer {second.access_token}"
        assert second.access_token != first.access_token
        assert api.calls["/api/token/refresh/"] == 1
        assert second.refresh_token in api.refresh_tokens
        assert first.refresh_token not in api.refresh_tokens
        assert json.loads(api.requests[-1].content) == {"refresh": first.refresh_token}


def test_logout_blacklists_the_refresh_token_and_ends_the_session(client: TestClient, api: FakeTokenAPI) -> None:
    cookie = cookie_of(log_in(client))
    client.cookies.clear()
    refresh_token = session_of(client, cookie).tokens.refresh_token

    response = client.post("/bff/logout", headers=as_user(cookie, **CSRF))

    assert response.status_code == 200
    assert response.json() == {"logoutUrl": None}
    (cleared,) = response.headers.get_list("set-cookie")
    assert cleared.startswith(f"{COOKIE}=;")
    assert api.calls["/api/token/blacklist/"] == 1
    assert api.blacklisted == [refresh_token]
    assert json.loads(api.requests[-1].content) == {"refresh": refresh_token}
    assert client.get("/bff/user", headers=as_user(cookie)).status_code == 401


def test_logs_hold_no_password_token_or_cookie(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    assert log_in(client, {"username": "alice", "password": "not-the-password-4711"}).status_code == 401
    cookie = cookie_of(log_in(client))
    client.cookies.clear()
    tokens = session_of(client, cookie).tokens
    assert client.post("/bff/logout", headers=as_user(cookie, **CSRF)).status_code == 200

    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.split(".")[0] in ("bff", "httpx"))
    assert "Login. sub: '42'" in logged
    assert "Login failed. error: 'invalid_credentials'" in logged
    for secret in (
        "wonderland",
        "not-the-password-4711",
        cookie,
        cookie.split(".")[0],
        tokens.access_token,
        tokens.refresh_token,
    ):
        assert secret
        assert secret not in logged
