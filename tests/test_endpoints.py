"""The /bff endpoints in-process against the fake provider: login, callback, user, logout,
sessions, back-channel logout; and the token lifecycle as a browser sees it through a route."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import pytest
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from bff import create_app
from bff.errors import BadRequest
from bff.login import check_return_to
from bff.stores import Store
from tests.fakes import CLIENT_ID, ISSUER, Clock, DownStore, FakeIdP, settings_for
from tests.support.app_clients import app_client, app_of
from tests.support.upstreams import ServerThread

CSRF = {"X-CSRF": "1"}
COOKIE = "__Host-bff"


def make_client(idp: FakeIdP, clock: Clock, store: Store | None = None, **environ: str) -> TestClient:
    return app_client(settings_for(**environ), clock=clock, idp=idp, store=store)


@pytest.fixture
def client(idp: FakeIdP, clock: Clock) -> Iterator[TestClient]:
    with make_client(idp, clock) as client:
        yield client


def start_login(client: TestClient, return_to: str = "/") -> httpx2.Response:
    response = client.get("/bff/login", params={"returnTo": return_to})
    assert response.status_code == 302, response.text
    return response


def log_in(
    client: TestClient,
    idp: FakeIdP,
    *,
    return_to: str = "/",
    sub: str = "alice",
    sid: str = "sid-1",
    user_agent: str = "testclient",
) -> str:
    """A whole login; returns the session cookie's value and leaves the client's jar empty."""
    params = idp.authorize(start_login(client, return_to).headers["location"], sub=sub, sid=sid)
    response = client.get("/bff/callback", params=params, headers={"user-agent": user_agent})
    assert response.status_code == 302, response.text
    value = client.cookies[COOKIE]
    client.cookies.clear()
    return value


def as_user(cookie: str, **headers: str) -> dict[str, str]:
    return {"cookie": f"{COOKIE}={cookie}", **headers}


def set_cookies(response: httpx2.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


# -- login ------------------------------------------------------------------------------------


def test_login_then_callback_creates_a_session_and_user_shows_its_claims(client: TestClient, idp: FakeIdP) -> None:
    response = start_login(client, "/app?tab=2")
    location = response.headers["location"]
    assert location.startswith(f"{ISSUER}/authorize?")
    (login_cookie,) = set_cookies(response)
    assert login_cookie.startswith(f"{COOKIE}-login-")
    assert "SameSite=Lax" in login_cookie
    assert "Secure" in login_cookie
    assert "HttpOnly" in login_cookie
    assert response.headers["cache-control"] == "no-store"

    response = client.get("/bff/callback", params=idp.authorize(location, sub="alice", sid="sid-7"))
    assert response.status_code == 302
    assert response.headers["location"] == "/app?tab=2"
    session_cookie, cleared = set_cookies(response)
    assert session_cookie.startswith(f"{COOKIE}=")
    assert "SameSite=Strict" in session_cookie
    assert "HttpOnly" in session_cookie
    assert "Secure" in session_cookie
    assert "Path=/" in session_cookie
    assert "Domain" not in session_cookie
    assert cleared.startswith(login_cookie.split("=")[0] + "=;")
    assert "Max-Age=0" in cleared

    response = client.get("/bff/user")
    assert response.status_code == 200
    body = response.json()
    assert body["sub"] == "alice"
    assert body["claims"]["sid"] == "sid-7"
    assert body["claims"]["name"] == "alice"
    assert "nonce" not in body["claims"]
    assert body["logoutUrl"] == f"/bff/logout?sid={body['sid']}"
    assert body["accessTokenExpiresAt"] > 0
    assert body["expiresAt"] > body["createdAt"]
    for token in [*idp.refresh_tokens, "at-", "eyJ"]:  # no access, refresh or ID token
        assert token not in response.text
    assert app_of(client).metrics.value("bff_logins_total", outcome="success") == 1


def test_login_cookie_attributes_over_http() -> None:
    clock = Clock()
    idp = FakeIdP(clock=clock)
    app = create_app(settings_for(PUBLIC_URL="http://testserver"), clock=clock, idp_transport=httpx.MockTransport(idp))
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        params = idp.authorize(start_login(client).headers["location"])
        (session_cookie, _) = set_cookies(client.get("/bff/callback", params=params))
        assert session_cookie.startswith("bff=")
        assert "Secure" not in session_cookie
        assert "HttpOnly" in session_cookie


def test_every_login_gets_a_new_session_id(client: TestClient, idp: FakeIdP) -> None:
    first, second = log_in(client, idp), log_in(client, idp)
    assert first.split(".")[0] != second.split(".")[0]
    assert (
        client.get("/bff/user", headers=as_user(first)).json()["sid"]
        != (client.get("/bff/user", headers=as_user(second)).json()["sid"])
    )


def test_two_tabs_can_log_in_at_once(client: TestClient, idp: FakeIdP) -> None:
    tab_one = idp.authorize(start_login(client, "/one").headers["location"])
    tab_two = idp.authorize(start_login(client, "/two").headers["location"])
    assert client.get("/bff/callback", params=tab_two).headers["location"] == "/two"
    assert client.get("/bff/callback", params=tab_one).headers["location"] == "/one"


def test_wrong_state_is_refused(client: TestClient, idp: FakeIdP) -> None:
    params = idp.authorize(start_login(client).headers["location"])
    response = client.get("/bff/callback", params={**params, "state": "forged"})
    assert response.status_code == 400
    assert response.json()["error"] == "login_failed"
    assert "state" in response.json()["detail"]
    assert COOKIE not in client.cookies


def test_state_from_another_browser_is_refused(client: TestClient, idp: FakeIdP) -> None:
    params = idp.authorize(start_login(client).headers["location"])
    client.cookies.clear()  # the victim's browser has no login cookie for the attacker's state
    response = client.get("/bff/callback", params=params)
    assert response.status_code == 400
    assert response.json()["error"] == "login_failed"


def test_replayed_state_is_refused(client: TestClient, idp: FakeIdP) -> None:
    params = idp.authorize(start_login(client).headers["location"])
    login_cookies = dict(client.cookies)
    assert client.get("/bff/callback", params=params).status_code == 302
    client.cookies.clear()
    client.cookies.update(login_cookies)  # the sealed login cookie, kept and sent again
    response = client.get("/bff/callback", params=params)
    assert response.status_code == 400
    assert "already used" in response.json()["detail"]


def test_provider_error_is_a_clear_400(client: TestClient, idp: FakeIdP) -> None:
    params = idp.authorize(start_login(client).headers["location"])
    response = client.get(
        "/bff/callback", params={"state": params["state"], "error": "access_denied", "error_description": "nope"}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "login_failed", "detail": "the provider answered error 'access_denied': nope"}
    assert app_of(client).metrics.value("bff_logins_total", outcome="failure") == 1


def test_iss_of_another_provider_is_refused(client: TestClient, idp: FakeIdP) -> None:
    params = idp.authorize(start_login(client).headers["location"])
    response = client.get("/bff/callback", params={**params, "iss": "https://evil.example"})
    assert response.status_code == 400
    assert '"iss"' in response.json()["detail"]


def test_missing_iss_is_refused_when_the_provider_promises_it(client: TestClient, idp: FakeIdP) -> None:
    idp.discovery_overrides["authorization_response_iss_parameter_supported"] = True
    params = idp.authorize(start_login(client).headers["location"])
    del params["iss"]
    assert client.get("/bff/callback", params=params).status_code == 400


def test_id_token_with_a_wrong_nonce_is_refused(client: TestClient, idp: FakeIdP) -> None:
    params = idp.authorize(start_login(client).headers["location"], nonce="someone-elses")
    response = client.get("/bff/callback", params=params)
    assert response.status_code == 400
    assert "nonce" in response.json()["detail"]
    assert COOKIE not in client.cookies


def test_unreachable_provider_at_login_is_503(client: TestClient, idp: FakeIdP) -> None:
    idp.unreachable = True
    response = client.get("/bff/login")
    assert response.status_code == 503
    assert response.json()["error"] == "provider_unavailable"
    assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    "return_to",
    [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/\n/evil.example",
        "evil.example",
        "http:/evil.example",
        "/x\x00",
    ],
)
def test_return_to_outside_this_origin_is_refused(client: TestClient, return_to: str) -> None:
    with pytest.raises(BadRequest):
        check_return_to(return_to)
    response = client.get("/bff/login", params={"returnTo": return_to})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


@pytest.mark.parametrize(
    ("return_to", "expected"),
    [(None, "/"), ("/", "/"), ("/app/x?y=1#z", "/app/x?y=1#z"), ("/%2F%2Fx", "/%2F%2Fx"), ("/é", "/%C3%A9")],
)
def test_local_return_to_is_kept(return_to: str | None, expected: str) -> None:
    assert check_return_to(return_to) == expected


# -- the signed-in user -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "cookie", [None, "garbage", "a.b", "x" * 5000, "VfHWQIQW-OgwEWyRYpG7LJ5EWMhGrYWa_tj9hmQ4OWg.x"]
)
def test_user_without_a_valid_session_is_401(client: TestClient, cookie: str | None) -> None:
    headers = as_user(cookie) if cookie is not None else {}
    response = client.get("/bff/user", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_a_store_that_is_down_gives_503_not_500(idp: FakeIdP, clock: Clock) -> None:
    store = DownStore(down=False, message="store unreachable")
    with make_client(idp, clock, store) as client:
        cookie = log_in(client, idp)
        store.down = True
        for response in (
            client.get("/bff/user", headers=as_user(cookie)),
            client.get("/bff/sessions", headers=as_user(cookie)),
            client.post("/bff/logout", headers=as_user(cookie, **CSRF)),
            client.get("/bff/callback", params=idp.authorize(start_login(client).headers["location"])),
        ):
            assert response.status_code == 503
            assert response.json()["error"] == "store_unavailable"
            assert "retry-after" in response.headers


# -- logout -----------------------------------------------------------------------------------


def test_logout_needs_the_anti_forgery_header(client: TestClient, idp: FakeIdP) -> None:
    cookie = log_in(client, idp)
    response = client.post("/bff/logout", headers=as_user(cookie))
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_rejected"
    assert client.get("/bff/user", headers=as_user(cookie)).status_code == 200


def test_logout_revokes_deletes_and_clears(client: TestClient, idp: FakeIdP) -> None:
    cookie = log_in(client, idp)
    (refresh_token,) = idp.refresh_tokens
    response = client.post("/bff/logout", headers=as_user(cookie, **CSRF))
    assert response.status_code == 200
    logout_url = response.json()["logoutUrl"]
    query = parse_qs(urlsplit(logout_url).query)
    assert logout_url.startswith(f"{ISSUER}/session/end?")
    assert query == {"client_id": [CLIENT_ID], "post_logout_redirect_uri": ["https://testserver/"]}
    assert idp.revoked == [refresh_token]
    (cleared,) = set_cookies(response)
    assert cleared.startswith(f"{COOKIE}=;")
    assert "Max-Age=0" in cleared
    assert client.get("/bff/user", headers=as_user(cookie)).status_code == 401


def test_logout_url_carries_the_id_token_hint_when_configured(idp: FakeIdP, clock: Clock) -> None:
    with make_client(idp, clock, OIDC__LOGOUT_ID_TOKEN_HINT="true") as client:
        cookie = log_in(client, idp)
        url = client.post("/bff/logout", headers=as_user(cookie, **CSRF)).json()["logoutUrl"]
        assert "id_token_hint=eyJ" in url


def test_logout_with_the_provider_down_still_ends_the_session(client: TestClient, idp: FakeIdP) -> None:
    cookie = log_in(client, idp)
    idp.unreachable = True
    response = client.post("/bff/logout", headers=as_user(cookie, **CSRF))
    assert response.status_code == 200
    idp.unreachable = False
    assert client.get("/bff/user", headers=as_user(cookie)).status_code == 401


def test_logout_without_a_session_is_harmless(client: TestClient) -> None:
    response = client.post("/bff/logout", headers=CSRF)
    assert response.status_code == 200
    assert response.json() == {"logoutUrl": None}


def test_get_logout_needs_the_sid(client: TestClient, idp: FakeIdP) -> None:
    cookie = log_in(client, idp)
    assert client.get("/bff/logout", headers=as_user(cookie)).status_code == 400
    assert client.get("/bff/logout?sid=wrong", headers=as_user(cookie)).status_code == 400
    sid = client.get("/bff/user", headers=as_user(cookie)).json()["sid"]
    response = client.get(f"/bff/logout?sid={sid}", headers=as_user(cookie))
    assert response.status_code == 302
    assert response.headers["location"].startswith(f"{ISSUER}/session/end?")
    assert client.get("/bff/user", headers=as_user(cookie)).status_code == 401


# -- sessions (devices) -----------------------------------------------------------------------


def test_sessions_list_delete_and_revoke_others(client: TestClient, idp: FakeIdP) -> None:
    laptop = log_in(client, idp)
    phone = log_in(client, idp)
    tablet = log_in(client, idp)
    bob = log_in(client, idp, sub="bob", sid="sid-b")
    rows = client.get("/bff/sessions", headers=as_user(laptop)).json()["sessions"]
    assert len(rows) == 3
    assert [row["current"] for row in rows].count(True) == 1
    assert set(rows[0]) == {"id", "createdAt", "lastUsedAt", "expiresAt", "userAgent", "device", "current"}
    ids = {row["id"] for row in rows}
    phone_id = client.get("/bff/user", headers=as_user(phone)).json()["sid"]
    bob_id = client.get("/bff/user", headers=as_user(bob)).json()["sid"]
    assert phone_id in ids
    assert bob_id not in ids

    assert client.delete(f"/bff/sessions/{phone_id}", headers=as_user(laptop)).status_code == 403
    assert client.delete(f"/bff/sessions/{bob_id}", headers=as_user(laptop, **CSRF)).status_code == 404
    response = client.delete(f"/bff/sessions/{phone_id}", headers=as_user(laptop, **CSRF))
    assert response.status_code == 204
    assert not set_cookies(response)
    assert client.get("/bff/user", headers=as_user(phone)).status_code == 401

    assert client.post("/bff/sessions/revoke-others", headers=as_user(laptop)).status_code == 403
    response = client.post("/bff/sessions/revoke-others", headers=as_user(laptop, **CSRF))
    assert response.json() == {"ended": 1}
    assert client.get("/bff/user", headers=as_user(tablet)).status_code == 401
    assert client.get("/bff/user", headers=as_user(laptop)).status_code == 200
    assert client.get("/bff/user", headers=as_user(bob)).status_code == 200


def test_sessions_name_the_device_beside_the_raw_user_agent(client: TestClient, idp: FakeIdP) -> None:
    chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
    laptop = log_in(client, idp, user_agent=chrome)
    log_in(client, idp, user_agent="integration-browser")
    rows = client.get("/bff/sessions", headers=as_user(laptop)).json()["sessions"]
    assert sorted((row["userAgent"], row["device"]) for row in rows) == [
        (chrome, "Chrome 126 on Linux"),
        ("integration-browser", "Unknown device"),
    ]


def test_deleting_the_current_session_clears_its_cookie(client: TestClient, idp: FakeIdP) -> None:
    cookie = log_in(client, idp)
    own = client.get("/bff/user", headers=as_user(cookie)).json()["sid"]
    response = client.delete(f"/bff/sessions/{own}", headers=as_user(cookie, **CSRF))
    assert response.status_code == 204
    assert set_cookies(response)[0].startswith(f"{COOKIE}=;")


def test_sessions_need_a_session(client: TestClient) -> None:
    assert client.get("/bff/sessions").status_code == 401
    assert client.post("/bff/sessions/revoke-others", headers=CSRF).status_code == 401


# -- back-channel logout ----------------------------------------------------------------------


def backchannel(client: TestClient, token: str) -> httpx2.Response:
    return client.post("/bff/backchannel-logout", data={"logout_token": token})


def test_backchannel_logout_by_sid_ends_exactly_that_session(client: TestClient, idp: FakeIdP) -> None:
    first = log_in(client, idp, sid="sid-1")
    second = log_in(client, idp, sid="sid-2")
    response = backchannel(client, idp.logout_token(sub="alice", sid="sid-1"))
    assert response.status_code == 200
    assert client.get("/bff/user", headers=as_user(first)).status_code == 401
    assert client.get("/bff/user", headers=as_user(second)).status_code == 200


def test_backchannel_logout_by_sub_ends_all_of_them(client: TestClient, idp: FakeIdP) -> None:
    cookies = [log_in(client, idp, sid=f"sid-{i}") for i in range(3)]
    bob = log_in(client, idp, sub="bob", sid="sid-b")
    assert backchannel(client, idp.logout_token(sub="alice", sid=None)).status_code == 200
    assert all(client.get("/bff/user", headers=as_user(c)).status_code == 401 for c in cookies)
    assert client.get("/bff/user", headers=as_user(bob)).status_code == 200


def test_backchannel_logout_token_replayed_is_refused(client: TestClient, idp: FakeIdP) -> None:
    token = idp.logout_token()
    assert backchannel(client, token).status_code == 200
    response = backchannel(client, token)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize("case", ["nonce", "bad signature", "no events", "missing", "json body"])
def test_bad_backchannel_logout_is_400(client: TestClient, idp: FakeIdP, case: str) -> None:
    cookie = log_in(client, idp)
    if case == "json body":
        response = client.post("/bff/backchannel-logout", json={"logout_token": idp.logout_token()})
    elif case == "missing":
        response = client.post("/bff/backchannel-logout", data={"other": "x"})
    else:
        token = idp.logout_token(nonce="n") if case == "nonce" else idp.logout_token(events={"x": {}})
        if case == "bad signature":
            head, body, _ = idp.logout_token().split(".")
            token = f"{head}.{body}.{'A' * 342}"
        response = backchannel(client, token)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert client.get("/bff/user", headers=as_user(cookie)).status_code == 200


def test_logs_hold_no_token_code_state_or_cookie(
    client: TestClient, idp: FakeIdP, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    params = idp.authorize(start_login(client).headers["location"])
    login_cookie = next(iter(client.cookies.values()))
    assert client.get("/bff/callback", params=params).status_code == 302
    cookie = client.cookies[COOKIE]
    client.cookies.clear()
    app = app_of(client)
    session_id = app.cookies.read_session_id([(b"cookie", f"{COOKIE}={cookie}".encode())])
    assert session_id is not None
    session = (
        client.portal.call(app.sessions.load, [(b"cookie", f"{COOKIE}={cookie}".encode())]) if client.portal else None
    )
    assert session is not None
    clock.advance(idp.access_ttl)
    refreshed = client.portal.call(app.tokens.fresh_session, session) if client.portal else None
    assert refreshed is not None
    assert refreshed.tokens.access_token != session.tokens.access_token
    assert backchannel(client, idp.logout_token(sid="other")).status_code == 200
    assert backchannel(client, "not-a-jwt").status_code == 400
    assert client.post("/bff/logout", headers=as_user(cookie, **CSRF)).status_code == 200
    secrets = [
        cookie,
        cookie.split(".")[0],
        login_cookie,
        session_id,
        params["code"],
        params["state"],
        *(
            value
            for tokens in (session.tokens, refreshed.tokens)
            for value in vars(tokens).values()
            if isinstance(value, str)
        ),
    ]
    # The BFF's own loggers, and httpx's for its calls to the provider (the test client's are not the BFF's).
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.split(".")[0] in ("bff", "httpx"))
    assert "Login." in logged
    assert "Back-channel logout." in logged
    assert "idp.example/token" in logged
    for secret in secrets:
        if secret and secret != "Bearer":
            assert secret not in logged


# -- the token lifecycle through a proxied route ------------------------------------------------


class TokenUpstream:
    """401 (`invalid_token`) for tokens in `rejected`, else 200 with the bearer it saw."""

    def __init__(self) -> None:
        self.rejected: set[str] = set()
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        auth = dict(scope["headers"]).get(b"authorization", b"").decode()
        self.seen.append(auth)
        status = 401 if auth.removeprefix("Bearer ") in self.rejected else 200
        headers = [(b"content-type", b"application/json")]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer error="invalid_token"'))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps({"auth": auth}).encode()})


@pytest.fixture
def upstream() -> Iterator[tuple[TokenUpstream, str]]:
    app = TokenUpstream()
    with ServerThread(app) as server:
        yield app, server.url


def routed_client(idp: FakeIdP, clock: Clock, upstream_url: str, **environ: str) -> TestClient:
    return make_client(
        idp, clock, None, ROUTES__0__PATH="/api", ROUTES__0__UPSTREAM=upstream_url, ROUTES__0__TOKEN="user", **environ
    )


def test_proxied_route_gets_the_session_token_and_refreshes_when_expired(
    idp: FakeIdP, clock: Clock, upstream: tuple[TokenUpstream, str]
) -> None:
    _, url = upstream
    with routed_client(idp, clock, url) as client:
        assert client.get("/api/x", headers=CSRF).status_code == 401
        cookie = log_in(client, idp)
        first = client.get("/api/x", headers=as_user(cookie, **CSRF)).json()["auth"]
        assert first.startswith("Bearer at-")
        assert idp.calls["/token"] == 1  # the code exchange
        clock.advance(idp.access_ttl)
        second = client.get("/api/x", headers=as_user(cookie, **CSRF)).json()["auth"]
        assert second != first
        assert idp.calls["/token"] == 2


def test_proxied_401_refreshes_and_replays(idp: FakeIdP, clock: Clock, upstream: tuple[TokenUpstream, str]) -> None:
    app, url = upstream
    with routed_client(idp, clock, url) as client:
        cookie = log_in(client, idp)
        token = client.get("/api/x", headers=as_user(cookie, **CSRF)).json()["auth"].removeprefix("Bearer ")
        app.rejected.add(token)  # revoked early at the API
        response = client.post("/api/x", headers=as_user(cookie, **CSRF), content=b"body")
        assert response.status_code == 200
        assert response.json()["auth"] != f"Bearer {token}"
        assert idp.calls["/token"] == 2


def test_invalid_grant_through_a_route_is_session_expired_with_a_cleared_cookie(
    idp: FakeIdP, clock: Clock, upstream: tuple[TokenUpstream, str]
) -> None:
    _, url = upstream
    with routed_client(idp, clock, url) as client:
        cookie = log_in(client, idp)
        idp.refresh_tokens.clear()
        clock.advance(idp.access_ttl)
        response = client.get("/api/x", headers=as_user(cookie, **CSRF))
        assert response.status_code == 401
        assert response.json()["error"] == "session_expired"
        assert set_cookies(response)[0].startswith(f"{COOKIE}=;")
        assert client.get("/bff/user", headers=as_user(cookie)).status_code == 401


def test_provider_5xx_through_a_route_is_503_and_keeps_the_session(
    idp: FakeIdP, clock: Clock, upstream: tuple[TokenUpstream, str]
) -> None:
    _, url = upstream
    with routed_client(idp, clock, url) as client:
        cookie = log_in(client, idp)
        clock.advance(idp.access_ttl)
        idp.token_status = 502
        response = client.get("/api/x", headers=as_user(cookie, **CSRF))
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert not set_cookies(response)
        idp.token_status = None
        assert client.get("/api/x", headers=as_user(cookie, **CSRF)).status_code == 200
