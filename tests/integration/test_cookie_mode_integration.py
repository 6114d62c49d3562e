"""Cookie mode (`token_storage = "cookie"`, README "Cookie mode") against the real provider.

The same components as `test_oidc_integration`: panva's oidc-provider with JWT access tokens of
ACCESS_TTL seconds, rotating refresh tokens, revocation and introspection; the JWT API; `bff serve`
as a process; a `Browser` signing in through the provider's pages. Here the whole session lives
in the browser's sealed, chunked cookies, and the store keeps only the short records. Accounts
named `big-claim...` get a claim of about 12 kB from the provider (`provider.mjs`), a session
that needs several chunks.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Mapping

import httpx
import pytest

from bff.cookies import MAX_SET_COOKIE
from tests.integration.oidc_harness import Bff, Run, user_name
from tests.integration.oidc_helpers import (
    fifty_at_once_cause_one_refresh,
    leaks,
    logged_in,
    raw_get,
    session_cookie,
    wait_for_expiry,
)
from tests.support.bff_process import new_secret_key
from tests.support.cookies import is_clearing, parse_set_cookie, set_cookies
from tests.support.jwt_api import JwtApi
from tests.support.oidc_browser import Browser
from tests.support.oidc_provider import OidcProvider, token_fragments

pytestmark = pytest.mark.integration

BIG_CLAIM = 12 * 1024  # the length of the `bio` claim of a `big-claim...` account
NOT_AUTHENTICATED = "not_authenticated"


@pytest.fixture(scope="module")
def cookie_bff(run: Run) -> Iterator[Bff]:
    """Cookie mode, one worker, SQLite store: the BFF most tests of this module share."""
    bff = run.new_bff("cookie", token_storage="cookie")
    yield bff
    bff.process.stop()


@pytest.fixture(scope="module")
def memory_bff(run: Run) -> Iterator[Bff]:
    """Cookie mode with `memory://`: nothing survives a restart but what is in the cookie."""
    bff = run.new_bff("cookie-memory", token_storage="cookie", store="memory://")
    yield bff
    bff.process.stop()


# ---------------------------------------------------------------------------------------- helpers


def is_chunk(name: str, bff: Bff) -> bool:
    """`bff`, `bff-1`, `bff-2`... (not the login-state cookie `bff-login-...`)."""
    return name == bff.cookie_name or (name.startswith(bff.cookie_name + "-") and name.rpartition("-")[2].isdigit())


def chunks_of(browser: Browser, bff: Bff) -> dict[str, str]:
    """The session cookie and its chunks in the browser's jar, by name."""
    return {name: value for name, value in browser.cookies_named(bff.cookie_name).items() if is_chunk(name, bff)}


def sealed_bytes(chunks: Mapping[str, str], name: str) -> bytes:
    """What the chunks carry, base64-decoded: `<name>` = `<count>.<part 0>`, `<name>-1` ... the rest."""
    count, _, first = chunks[name].partition(".")
    value = first + "".join(chunks[f"{name}-{i}"] for i in range(1, int(count)))
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def session_set_cookies(response: httpx.Response, bff: Bff) -> dict[str, tuple[str, dict[str, str]]]:
    return {name: value for name, value in set_cookies(response).items() if is_chunk(name, bff)}


def assert_not_authenticated(response: httpx.Response, what: str) -> None:
    assert response.status_code == 401, f"{what}: {response.status_code} {response.text}"
    assert response.json()["error"] == NOT_AUTHENTICATED, f"{what}: {response.text}"


def big_user(request: pytest.FixtureRequest) -> str:
    return "big-claim-" + user_name(request)[:30]


# -------------------------------------------------------------- 1. no token readable in the cookie


def test_login_sets_an_encrypted_cookie_in_which_no_issued_token_is_readable(
    run: Run, cookie_bff: Bff, provider: OidcProvider, api: JwtApi, request: pytest.FixtureRequest
) -> None:
    bff, user = cookie_bff, user_name(request)
    browser = run.new_browser(bff)
    callback = browser.login(bff.url, user)
    value, attributes = session_set_cookies(callback, bff)[bff.cookie_name]
    assert value.startswith("1.")
    assert attributes["samesite"] == "Strict"
    assert attributes["path"] == "/"
    assert "httponly" in attributes
    assert "secure" not in attributes
    assert "domain" not in attributes
    echo = browser.api("GET", f"{bff.url}/api/hello")
    assert echo.status_code == 200, echo.text
    assert echo.json()["sub"] == user

    login = provider.issued(bff.client.client_id)[-1]  # the code exchange of this login
    tokens = {kind: str(login[kind]) for kind in ("access_token", "refresh_token", "id_token")}
    assert all(tokens.values()), login
    assert api.seen_for("/api/hello")[-1].token == tokens["access_token"]  # what the BFF forwarded

    chunks = chunks_of(browser, bff)
    assert list(chunks) == [bff.cookie_name]
    plain = sealed_bytes(chunks, bff.cookie_name)
    assert len(plain) > 500  # claims, tokens and times, sealed
    needles = token_fragments(tokens.values())
    found = leaks([("decoded cookie", plain), ("cookie text", value.encode())], needles)
    assert not found, "\n".join(found)
    for clear_text in (user.encode(), b"refresh_token", b"access_token", b"@example.test"):
        assert clear_text not in plain, f"{clear_text!r} is readable in the cookie"


# --------------------------------------------------------------------------- 2. restart, no store


def test_restart_with_a_memory_store_keeps_the_user_signed_in(
    run: Run, memory_bff: Bff, provider: OidcProvider, request: pytest.FixtureRequest
) -> None:
    bff, user = memory_bff, user_name(request)
    browser = logged_in(run, bff, user)
    cookie = session_cookie(browser, bff)
    before = raw_get(bff, "/bff/user", cookie)
    assert before.status_code == 200, before.text
    warm = raw_get(bff, "/api/before-restart", cookie)
    assert warm.status_code == 200, warm.text

    bff.process.restart()
    after = raw_get(bff, "/bff/user", cookie)
    assert after.status_code == 200, after.text
    assert after.json() == before.json()
    # The API gets the user's token (the one from before, or, when the restart took longer than
    # the token's few seconds, one refreshed with the refresh token from the cookie).
    after_api = raw_get(bff, "/api/after-restart", cookie)
    assert (after_api.status_code, after_api.json()["sub"]) == (200, warm.json()["sub"])
    warm = after_api
    refreshes = provider.refresh_count(bff.client.client_id)
    wait_for_expiry(warm)
    refreshed = raw_get(bff, "/api/after-expiry", cookie)  # the refresh token came from the cookie
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["jti"] != warm.json()["jti"]
    assert provider.refresh_count(bff.client.client_id) == refreshes + 1


# ------------------------------------------------------------------------------- 3. single flight


def test_fifty_concurrent_requests_with_an_expired_token_cause_one_refresh_in_cookie_mode(
    run: Run, cookie_bff: Bff, provider: OidcProvider, api: JwtApi, request: pytest.FixtureRequest
) -> None:
    fifty_at_once_cause_one_refresh(run, cookie_bff, provider, api, user_name(request))


def test_fifty_concurrent_requests_cause_one_refresh_with_two_workers_on_sqlite_in_cookie_mode(
    run: Run, new_bff: Callable[..., Bff], provider: OidcProvider, api: JwtApi, request: pytest.FixtureRequest
) -> None:
    bff = new_bff("cookie-workers2", workers=2, token_storage="cookie")
    fifty_at_once_cause_one_refresh(run, bff, provider, api, user_name(request))


# --------------------------------------------------------------------- 4. the pre-refresh cookie


def test_the_pre_refresh_cookie_right_after_a_refresh_takes_the_successor_and_does_not_refresh(
    run: Run, cookie_bff: Bff, provider: OidcProvider, request: pytest.FixtureRequest
) -> None:
    bff = cookie_bff
    browser = logged_in(run, bff, user_name(request))
    stale = session_cookie(browser, bff)
    warm = raw_get(bff, "/api/warm", stale)
    assert warm.status_code == 200, warm.text
    wait_for_expiry(warm)
    refreshes = provider.refresh_count(bff.client.client_id)

    first = raw_get(bff, "/api/first", stale)
    assert first.status_code == 200, first.text
    assert first.json()["jti"] != warm.json()["jti"]
    assert provider.refresh_count(bff.client.client_id) == refreshes + 1
    refreshed, _ = session_set_cookies(first, bff)[bff.cookie_name]
    assert refreshed.startswith("1.")
    assert refreshed != stale

    again = raw_get(bff, "/api/again", stale)  # e.g. a request that set out before the answer came
    assert again.status_code == 200, again.text
    assert again.json()["jti"] == first.json()["jti"]
    successor, _ = session_set_cookies(again, bff)[bff.cookie_name]  # it gets the new cookie too
    assert successor.startswith("1.")
    assert successor != stale
    for cookie in (successor, refreshed):
        echo = raw_get(bff, "/api/with-the-new-cookie", cookie)
        assert echo.status_code == 200, echo.text
        assert echo.json()["jti"] == first.json()["jti"]
        assert bff.cookie_name not in session_set_cookies(echo, bff)
    assert provider.refresh_count(bff.client.client_id) == refreshes + 1
    assert not provider.refresh_errors(bff.client.client_id)


# --------------------------------------------------------------------------------------- 5. logout


def test_logout_revokes_the_refresh_token_and_clears_every_chunk(
    run: Run, cookie_bff: Bff, provider: OidcProvider, request: pytest.FixtureRequest
) -> None:
    bff, user = cookie_bff, big_user(request)
    browser = logged_in(run, bff, user)
    chunks = chunks_of(browser, bff)
    assert len(chunks) >= 3, list(chunks)
    refresh_tokens = provider.current_refresh_tokens(user, bff.client.client_id)
    assert len(refresh_tokens) == 1, refresh_tokens
    assert provider.introspect(refresh_tokens[0], bff.client)["active"] is True

    response = browser.api("POST", f"{bff.url}/bff/logout")
    assert response.status_code == 200, response.text
    assert response.json()["logoutUrl"].startswith(provider.discovery()["end_session_endpoint"] + "?")
    cleared = session_set_cookies(response, bff)
    assert sorted(cleared) == sorted(chunks)
    assert all(is_clearing(*cookie) for cookie in cleared.values()), cleared
    assert chunks_of(browser, bff) == {}

    assert provider.introspect(refresh_tokens[0], bff.client)["active"] is False
    for path in ("/bff/user", "/api/after-logout"):
        assert_not_authenticated(raw_get(bff, path, chunks), f"the logged-out cookie on {path}")


# ------------------------------------------------------------------------ 6. forged cookies refused


def test_tampered_truncated_and_garbage_cookies_get_401_not_authenticated(
    run: Run, cookie_bff: Bff, request: pytest.FixtureRequest
) -> None:
    bff, name = cookie_bff, cookie_bff.cookie_name
    browser = logged_in(run, bff, user_name(request))
    good = session_cookie(browser, bff)
    assert raw_get(bff, "/bff/user", good).status_code == 200
    middle = len(good) // 2
    flipped = good[:middle] + ("A" if good[middle] != "A" else "B") + good[middle + 1 :]
    body = good.removeprefix("1.")
    forged: dict[str, dict[str, str]] = {
        "one character flipped": {name: flipped},
        "truncated": {name: good[:-6]},
        "cut in half": {name: good[:middle]},
        "no count": {name: body},
        "count of two, second chunk missing": {name: "2." + body},
        "split in two, the halves swapped": {name: "2." + body[middle:], f"{name}-1": body[:middle]},
        "count beyond the maximum": {name: "9." + body},
        "empty": {name: ""},
        "count only": {name: "1."},
        "garbage": {name: "1.garbage"},
        "not base64": {name: "1.%00%ff!!"},
        "long garbage": {name: "1." + "x" * 3900},
        "json": {name: '1.{"sub":"admin"}'},
        "only a second chunk": {f"{name}-1": body},
    }
    for label, cookies in forged.items():
        for path in ("/bff/user", "/api/forged"):
            assert_not_authenticated(raw_get(bff, path, cookies), f"{label} on {path}")


# ---------------------------------------------------------------------------------- 7. key rotation


def test_key_rotation_keeps_the_cookie_and_a_removed_key_gets_401(
    run: Run, memory_bff: Bff, request: pytest.FixtureRequest
) -> None:
    bff = memory_bff
    old_key, new_key = str(bff.process.config["secret_keys"][0]), new_secret_key()
    browser = logged_in(run, bff, user_name(request))
    cookie = session_cookie(browser, bff)
    assert raw_get(bff, "/bff/user", cookie).status_code == 200

    bff.process.restart(secret_keys=[new_key, old_key])  # the new key seals, the old one opens
    assert raw_get(bff, "/bff/user", cookie).status_code == 200
    assert raw_get(bff, "/api/rotated", cookie).status_code == 200
    bff.process.restart(secret_keys=[new_key])  # the old key is gone
    for path in ("/bff/user", "/api/old-key"):
        assert_not_authenticated(raw_get(bff, path, cookie), f"the old key's cookie on {path}")


# ----------------------------------------------------------------------------------- 8. chunks


def test_a_12_kb_claim_takes_three_chunks_and_a_smaller_session_deletes_them(
    run: Run, cookie_bff: Bff, provider: OidcProvider, request: pytest.FixtureRequest
) -> None:
    bff, name = cookie_bff, cookie_bff.cookie_name
    browser = run.new_browser(bff)
    big = browser.login(bff.url, big_user(request))
    headers = [
        h
        for h in big.headers.get_list("set-cookie")
        if is_chunk(parse_set_cookie(h)[0], bff) and not is_clearing(*parse_set_cookie(h)[1:])
    ]
    names = [parse_set_cookie(h)[0] for h in headers]
    assert len(names) >= 3, names
    assert names == [name] + [f"{name}-{i}" for i in range(1, len(names))], names
    assert all(len(h.encode()) < MAX_SET_COOKIE for h in headers), [len(h) for h in headers]
    assert max(len(h.encode()) for h in headers) > 3000  # the chunks are full, not needlessly many
    assert session_cookie(browser, bff).startswith(f"{len(names)}.")
    me = browser.get(f"{bff.url}/bff/user")
    assert me.status_code == 200, me.text
    assert len(me.text) > BIG_CLAIM  # the claim came back whole from the chunks
    assert browser.api("GET", f"{bff.url}/api/big").status_code == 200

    # The big user signs out at the provider (its back-channel logout ends the session, the
    # chunks stay in the browser); a normal user signs in in the same browser: one chunk, and
    # the callback deletes the others.
    assert browser.provider_logout(provider.issuer, bff.client.client_id).status_code == 200
    assert list(chunks_of(browser, bff)) == names
    small = browser.login(bff.url, user_name(request))
    cookies = session_set_cookies(small, bff)
    assert list(cookies) == names  # the first chunk rewritten, each of the others deleted
    assert cookies[name][0].startswith("1.")
    assert all(is_clearing(*cookies[other]) for other in list(cookies)[1:]), cookies
    assert list(chunks_of(browser, bff)) == [name]
    me = browser.get(f"{bff.url}/bff/user")
    assert me.status_code == 200, me.text
    assert me.json()["sub"] == user_name(request)
