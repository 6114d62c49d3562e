"""Cookie mode in-process against the fake provider: the sealed, chunked session cookie, refresh
through a route with the successor record, key rotation, logout, timeouts and the sessions API."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Iterator

import httpx2
import pytest
from starlette.testclient import TestClient

from bff import create_app
from bff.cookie_sessions import CookieSessions
from bff.cookies import MAX_CHUNKS, MAX_SET_COOKIE
from bff.login import LoginResult
from bff.tokenset import TokenSet
from tests.fakes import SECRET_KEY, Clock, FakeIdP, settings_for
from tests.support.app_clients import app_client, app_of
from tests.support.upstreams import ServerThread
from tests.test_endpoints import CSRF, TokenUpstream, start_login

COOKIE = "__Host-bff"
OTHER_KEY = "o" * 40


def cookie_client(idp: FakeIdP, clock: Clock, upstream_url: str | None = None, **environ: str) -> TestClient:
    base = {"TOKEN_STORAGE": "cookie"}
    if upstream_url is not None:
        base |= {"ROUTES__0__PATH": "/api", "ROUTES__0__UPSTREAM": upstream_url, "ROUTES__0__TOKEN": "user"}
    return app_client(settings_for(**base, **environ), clock=clock, idp=idp)


def log_in(client: TestClient, idp: FakeIdP, **claims: str) -> httpx2.Response:
    params = idp.authorize(start_login(client).headers["location"], **claims)
    response = client.get("/bff/callback", params=params)
    assert response.status_code == 302, response.text
    return response


def jar(client: TestClient) -> str:
    """The Cookie header the browser would send."""
    return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


def session_cookies(response: httpx2.Response) -> list[str]:
    return [c for c in response.headers.get_list("set-cookie") if c.startswith(COOKIE) and "-login-" not in c]


def kept(cookies: list[str]) -> list[str]:
    """The `Set-Cookie` values that set a chunk (not those deleting one)."""
    return [c for c in cookies if "Max-Age=0" not in c]


@pytest.fixture
def upstream() -> Iterator[tuple[TokenUpstream, str]]:
    app = TokenUpstream()
    with ServerThread(app) as server:
        yield app, server.url


def test_login_sets_a_sealed_cookie_in_which_no_token_is_readable(idp: FakeIdP, clock: Clock) -> None:
    with cookie_client(idp, clock) as client:
        response = log_in(client, idp)
        [cookie] = session_cookies(response)  # a fresh browser: nothing to delete
        assert cookie.startswith(f"{COOKIE}=1.")
        assert "HttpOnly" in cookie
        assert "Secure" in cookie
        assert "SameSite=Strict" in cookie
        value = client.cookies[COOKIE].split(".", 1)[1]
        opened = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        assert idp.issued
        for token in idp.issued:
            assert token.encode() not in opened
            assert token not in value
        user = client.get("/bff/user").json()
        assert user["sub"] == "alice"
        assert "access_token" not in str(user)


def test_a_restart_with_an_empty_store_keeps_the_user_signed_in(idp: FakeIdP, clock: Clock) -> None:
    with cookie_client(idp, clock) as client:
        log_in(client, idp)
        cookie = jar(client)
    with cookie_client(idp, clock) as restarted:  # a new app: a new, empty memory:// store
        assert restarted.get("/bff/user", headers={"cookie": cookie}).json()["sub"] == "alice"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda v: v[:-5] + ("AAAAA" if not v.endswith("AAAAA") else "BBBBB"),  # tampered
        lambda v: v[: len(v) // 2],  # truncated
        lambda _v: "1.garbage",
        lambda _v: "9.x",
        lambda _v: "",
    ],
    ids=["tampered", "truncated", "garbage", "missing-chunks", "empty"],
)
def test_a_bad_cookie_is_no_session(idp: FakeIdP, clock: Clock, mangle: object) -> None:
    with cookie_client(idp, clock) as client:
        log_in(client, idp)
        value = client.cookies[COOKIE]
        client.cookies.clear()
        assert callable(mangle)
        response = client.get("/bff/user", headers={"cookie": f"{COOKIE}={mangle(value)}"})
        assert (response.status_code, response.json()["error"]) == (401, "not_authenticated")


def test_key_rotation_opens_old_cookies_and_a_retired_key_gets_401(idp: FakeIdP, clock: Clock) -> None:
    with cookie_client(idp, clock) as client:
        log_in(client, idp)
        cookie = jar(client)
    rotated = f'["{OTHER_KEY}", "{SECRET_KEY}"]'
    with cookie_client(idp, clock, SECRET_KEYS=rotated) as client:
        assert client.get("/bff/user", headers={"cookie": cookie}).status_code == 200
    with cookie_client(idp, clock, SECRET_KEYS=f'["{OTHER_KEY}"]') as client:
        assert client.get("/bff/user", headers={"cookie": cookie}).status_code == 401


def test_a_large_session_is_chunked_and_shrinking_deletes_the_stale_chunks(idp: FakeIdP, clock: Clock) -> None:
    with cookie_client(idp, clock) as client:
        response = log_in(client, idp, picture="p" * 12_000)
        chunks = kept(session_cookies(response))
        assert len(chunks) >= 3
        assert chunks[0].startswith(f"{COOKIE}={len(chunks)}.")
        assert all(len(c) < MAX_SET_COOKIE for c in chunks)
        assert client.get("/bff/user").json()["claims"]["picture"] == "p" * 12_000
        sessions = app_sessions(client)
        loaded = client.portal.call(sessions.load, [(b"cookie", jar(client).encode())]) if client.portal else None
        assert loaded is not None
        assert loaded.cookie_chunks == len(chunks)
        smaller = dataclasses.replace(loaded, claims={"sub": "alice"})
        shrunk = sessions.cookies_for(smaller, loaded=loaded)
        assert shrunk[0].startswith(f"{COOKIE}=1.")
        assert shrunk[1:] == [
            f"{COOKIE}-{i}=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Strict" for i in range(1, len(chunks))
        ]


def test_a_login_over_a_larger_sessions_chunks_deletes_those_it_does_not_overwrite(idp: FakeIdP, clock: Clock) -> None:
    # Found by the integration test: the callback wrote one chunk and left `-1`... of the earlier
    # session's in the browser.
    with cookie_client(idp, clock) as client:
        big = kept(session_cookies(log_in(client, idp, picture="p" * 12_000)))
        assert len(big) >= 3
        response = log_in(client, idp)  # another login in the same browser, a small session
        cookies = session_cookies(response)
        assert kept(cookies)[0].startswith(f"{COOKIE}=1.")
        assert len(kept(cookies)) == 1
        assert cookies[1:] == [
            f"{COOKIE}-{i}=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Strict" for i in range(1, len(big))
        ]
        assert sorted(client.cookies.keys()) == [COOKIE]
        assert client.get("/bff/user").status_code == 200


def test_a_session_too_large_for_the_cookies_fails_the_login_naming_keep_claims(idp: FakeIdP, clock: Clock) -> None:
    with cookie_client(idp, clock) as client:
        params = idp.authorize(start_login(client).headers["location"], picture="p" * 4000 * MAX_CHUNKS)
        response = client.get("/bff/callback", params=params)
        assert response.status_code == 500
        assert response.json()["error"] == "session_too_large"
        assert "session.keep_claims" in response.json()["detail"]
        assert session_cookies(response) == []
    with cookie_client(idp, clock, SESSION__KEEP_CLAIMS='["sub"]') as client:
        log_in(client, idp, picture="p" * 4000 * MAX_CHUNKS)
        assert client.get("/bff/user").json()["claims"] == {"sub": "alice"}


def test_a_refresh_reissues_the_cookie_on_the_proxied_answer(
    idp: FakeIdP, clock: Clock, upstream: tuple[TokenUpstream, str]
) -> None:
    _, url = upstream
    with cookie_client(idp, clock, url) as client:
        log_in(client, idp)
        first = client.get("/api/x", headers=CSRF)
        assert session_cookies(first) == []
        clock.advance(idp.access_ttl)
        refreshed = client.get("/api/x", headers=CSRF)
        assert refreshed.status_code == 200
        assert idp.calls["/token"] == 2
        assert len(session_cookies(refreshed)) == 1
        assert refreshed.json()["auth"] != first.json()["auth"]
        assert client.get("/api/x", headers=CSRF).json()["auth"] == refreshed.json()["auth"]
        assert idp.calls["/token"] == 2


def test_the_pre_refresh_cookie_right_after_a_refresh_gets_the_new_tokens_without_a_second_refresh(
    idp: FakeIdP, clock: Clock, upstream: tuple[TokenUpstream, str]
) -> None:
    _, url = upstream
    with cookie_client(idp, clock, url) as client:
        log_in(client, idp)
        stale = jar(client)
        clock.advance(idp.access_ttl)
        refreshed = client.get("/api/x", headers=CSRF).json()["auth"]
        late = client.get("/api/x", headers={**CSRF, "cookie": stale})
        assert late.json()["auth"] == refreshed
        assert idp.calls["/token"] == 2  # code exchange + one refresh
        assert len(session_cookies(late)) == 1  # the late browser gets the new cookie too


def test_concurrent_requests_with_one_expired_cookie_refresh_once(idp: FakeIdP, clock: Clock) -> None:
    with cookie_client(idp, clock) as client:
        log_in(client, idp)
        headers = [(b"cookie", jar(client).encode())]
        tokens = app_of(client).tokens
        clock.advance(idp.access_ttl)

        async def many() -> set[str]:
            loaded = [await app_sessions(client).load(headers) for _ in range(20)]
            fresh = await asyncio.gather(*(tokens.fresh_session(s) for s in loaded if s is not None))
            return {s.tokens.access_token for s in fresh}

        assert client.portal is not None
        assert len(client.portal.call(many)) == 1
        assert idp.calls["/token"] == 2


def test_logout_revokes_clears_every_chunk_and_refuses_a_copy_of_the_cookie(idp: FakeIdP, clock: Clock) -> None:
    with cookie_client(idp, clock) as client:
        chunks = kept(session_cookies(log_in(client, idp, picture="p" * 9000)))
        copy = jar(client)
        response = client.post("/bff/logout", headers=CSRF)
        assert response.status_code == 200
        assert idp.revoked  # the refresh token, at the provider
        assert session_cookies(response) == [
            f"{COOKIE}{'' if i == 0 else f'-{i}'}=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Strict"
            for i in range(len(chunks))
        ]
        assert client.get("/bff/user", headers={"cookie": copy}).status_code == 401


def test_backchannel_logout_ends_cookie_sessions_of_that_sid(idp: FakeIdP, clock: Clock) -> None:
    with cookie_client(idp, clock) as client:
        log_in(client, idp, sid="sid-1")
        mine = jar(client)
        client.cookies.clear()
        log_in(client, idp, sid="sid-2")
        other = jar(client)
        client.cookies.clear()
        response = client.post(
            "/bff/backchannel-logout",
            data={"logout_token": idp.logout_token(sid="sid-1")},
        )
        assert response.status_code == 200
        assert client.get("/bff/user", headers={"cookie": mine}).status_code == 401
        assert client.get("/bff/user", headers={"cookie": other}).status_code == 200


def test_a_slid_cookie_is_re_sent_once_per_slide_interval_not_on_every_request(idp: FakeIdP, clock: Clock) -> None:
    """A client that keeps sending the pre-slide cookie (concurrent requests, or one that ignores
    Set-Cookie) is not answered with a newly sealed cookie each time; the use still counts."""
    environ = {"SESSION__IDLE_TIMEOUT": "400", "SESSION__ABSOLUTE_TIMEOUT": "1000"}
    with cookie_client(idp, clock, **environ) as client:
        log_in(client, idp)
        old = jar(client)
        clock.advance(300)
        first = client.get("/bff/user", headers={"cookie": old})
        assert first.status_code == 200
        assert len(session_cookies(first)) == 1
        again = client.get("/bff/user", headers={"cookie": old})
        assert again.status_code == 200
        assert session_cookies(again) == []
        clock.advance(150)  # 450 s after login, 150 s after the use this worker saw
        later = client.get("/bff/user", headers={"cookie": old})
        assert later.status_code == 200
        assert len(session_cookies(later)) == 1


def test_idle_and_absolute_timeouts_hold(idp: FakeIdP, clock: Clock) -> None:
    environ = {"SESSION__IDLE_TIMEOUT": "400", "SESSION__ABSOLUTE_TIMEOUT": "1000"}
    with cookie_client(idp, clock, **environ) as client:
        log_in(client, idp)
        clock.advance(300)
        slid = client.get("/bff/user")  # a use after the slide interval re-sends the cookie
        assert slid.status_code == 200
        assert len(session_cookies(slid)) == 1
        clock.advance(300)
        assert client.get("/bff/user").status_code == 200  # 300 s since the slid cookie
        clock.advance(401)
        assert client.get("/bff/user").status_code == 401  # idle
    with cookie_client(idp, clock, **environ) as client:
        log_in(client, idp)
        for _ in range(5):
            clock.advance(199)
            assert client.get("/bff/user").status_code == 200
        clock.advance(6)
        assert client.get("/bff/user").status_code == 401  # past the absolute end


def test_the_sessions_api_answers_a_clear_error_in_cookie_mode(idp: FakeIdP, clock: Clock) -> None:
    with cookie_client(idp, clock) as client:
        log_in(client, idp)
        response = client.get("/bff/sessions")
        assert response.status_code == 404
        assert response.json() == {
            "error": "not_available",
            "detail": 'the sessions API needs token_storage = "server": cookie sessions cannot be listed',
        }


async def test_an_opened_cookie_is_cached_by_its_exact_value(clock: Clock) -> None:
    settings = settings_for(TOKEN_STORAGE="cookie")
    app = create_app(settings, clock=clock)
    sessions = app.sessions
    assert isinstance(sessions, CookieSessions)
    await app.store.open()
    login = LoginResult(sub="alice", provider_sid=None, claims={"sub": "alice"}, tokens=TokenSet(access_token="at"))
    session, [cookie] = await sessions.create(login, [(b"user-agent", b"t")])
    headers = [(b"cookie", cookie.split(";")[0].encode())]
    first = await sessions.load(headers)
    again = await sessions.load(headers)
    assert first == again == session
    assert first is not None
    assert again is not None
    assert first.claims is again.claims  # opened once
    await app.store.close()


def app_sessions(client: TestClient) -> CookieSessions:
    sessions = app_of(client).sessions
    assert isinstance(sessions, CookieSessions)
    return sessions
