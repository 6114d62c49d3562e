"""`bff demo` in a real Chromium: login, transparent refresh, no token in the browser, devices, logout.

One `bff demo` (2-second access tokens) serves every test; each test signs in as its own user,
so to-do lists and sessions never mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Route, expect

from tests.e2e.e2e_flows import (
    ACCESS_TTL,
    TODO_API,
    OpenTab,
    Server,
    Tab,
    add_todo,
    api,
    checkpoint,
    expect_undisturbed_since,
    login,
    token_leaks,
    unread_bodies,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

DIGIT = re.compile(r"\d")
SESSION_COOKIE = "bff"  # `bff demo` serves plain http, so no `__Host-` prefix


def is_bff_cookie(name: str) -> bool:
    return name == SESSION_COOKIE or name.startswith(SESSION_COOKIE + "-")


async def wait_past_access_token_expiry() -> None:
    await asyncio.sleep(ACCESS_TTL + 1.2)


async def access_token_expires_at(tab: Tab) -> float:
    status, user = await api(tab.page, "GET", "/bff/user")
    assert status == 200, user
    return float(user["accessTokenExpiresAt"])


async def test_login_shows_the_user_and_adds_a_todo(open_tab: OpenTab, demo: Server, artifacts: Path) -> None:
    tab = await open_tab("browser")
    await login(tab, demo.url, "alice")
    await add_todo(tab, "buy milk")
    await add_todo(tab, "log out my other devices")
    await expect(tab.page.locator("#clock")).to_have_text(DIGIT)  # the SSE clock ticks through the proxy
    await expect(tab.page.locator("#token-expiry")).to_have_text(DIGIT)
    await expect(tab.page.locator("#sessions li.current")).to_have_count(1)
    await tab.page.screenshot(path=artifacts / "logged-in.png", full_page=True)
    assert tab.problems == [], f"console errors: {tab.problems}"


async def test_expired_access_token_is_refreshed_without_the_page_noticing(open_tab: OpenTab, demo: Server) -> None:
    tab = await open_tab("browser")
    await login(tab, demo.url, "bob")
    await add_todo(tab, "first, with the first token")
    first_expiry = await access_token_expires_at(tab)
    mark = await checkpoint(tab)
    await wait_past_access_token_expiry()
    await add_todo(tab, "second, after the first token expired")
    await expect_undisturbed_since(tab, mark)
    await expect(tab.page.locator("#todo-list li")).to_have_count(2)
    assert await access_token_expires_at(tab) > first_expiry, "the BFF did not refresh the access token"


async def test_no_token_reaches_the_browser(open_tab: OpenTab, demo: Server) -> None:
    tab = await open_tab("browser")
    page = tab.page
    await login(tab, demo.url, "carol")
    await add_todo(tab, "before refresh")
    await wait_past_access_token_expiry()
    await add_todo(tab, "after refresh")  # a refresh happened: new tokens exist that must not leak either
    await expect(page.locator("#clock")).to_have_text(DIGIT)
    await expect(page.locator("#sessions li.current")).to_have_count(1)

    assert await token_leaks(tab) == []
    assert unread_bodies(tab) == [], "response bodies that could not be checked"
    bodies = [r.url for r in tab.responses if r.body]
    assert len(bodies) >= 10, f"too few response bodies were recorded to mean anything: {bodies}"
    visible = await page.evaluate("document.cookie")
    assert SESSION_COOKIE + "=" not in visible, f"the session cookie is readable by script: {visible}"
    shown = await page.locator("#cookie-visibility").inner_text()
    assert "HttpOnly" in shown, shown
    assert SESSION_COOKIE + "=" not in shown, shown

    cookies = {c["name"]: c for c in await tab.context.cookies() if is_bff_cookie(c["name"])}
    assert SESSION_COOKIE in cookies, f"no session cookie in {await tab.context.cookies()}"
    for name, cookie in cookies.items():
        assert cookie["httpOnly"], f"cookie {name} is not HttpOnly"
    assert cookies[SESSION_COOKIE]["sameSite"] == "Strict"
    assert cookies[SESSION_COOKIE]["path"] == "/"


async def test_logging_out_other_devices_sends_the_other_device_to_login(open_tab: OpenTab, demo: Server) -> None:
    laptop, phone = await open_tab("laptop"), await open_tab("phone")
    await login(laptop, demo.url, "dave")
    await login(phone, demo.url, "dave")
    await laptop.page.reload()
    await expect(laptop.page.locator("#sessions li")).to_have_count(2)
    await expect(laptop.page.locator("#sessions li.current")).to_have_count(1)
    await expect(laptop.page.locator("#sessions li:not(.current) button.session-logout")).to_have_count(1)

    await laptop.page.locator("#logout-others").click()
    await expect(laptop.page.locator("#sessions li")).to_have_count(1)
    await add_todo(laptop, "the laptop still works")

    # The phone's next call (the to-do, or a background call of the page if that comes first).
    before = len(phone.navigation_requests)
    with contextlib.suppress(PlaywrightError):
        await phone.page.locator("#todo-input").fill("the phone was logged out", timeout=2000)
        await phone.page.locator("#todo-add").click(timeout=2000)
    await expect(phone.page.locator("#username")).to_be_visible()  # the development IdP's login page
    went = phone.navigation_requests[before:]
    assert any(urlsplit(url).path == "/bff/login" for url in went), f"the phone went to {went}, not /bff/login"
    await expect(laptop.page.locator("#status")).to_have_text("signed in")


async def test_logout_ends_the_session(open_tab: OpenTab, demo: Server) -> None:
    tab = await open_tab("browser")
    page = tab.page
    await login(tab, demo.url, "erin")
    await add_todo(tab, "one thing")
    await page.locator("#logout").click()
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#status")).to_have_text("signed out")
    assert tab.origin() == demo.url, f"after logout the browser is at {page.url}"
    status, body = await api(page, "GET", TODO_API)
    assert status == 401, f"GET {TODO_API} after logout answered {status}: {body}"
    status, body = await api(page, "GET", "/bff/user")
    assert status == 401, f"GET /bff/user after logout answered {status}: {body}"
    assert [c for c in await tab.context.cookies() if c["name"] == SESSION_COOKIE] == []
    assert await token_leaks(tab) == [], "logging out showed the browser a token (an id_token_hint?)"


async def test_the_token_search_finds_planted_tokens(open_tab: OpenTab, demo: Server) -> None:
    """The search of the two tests above is not vacuous: tokens put where they must not be are found."""
    tab = await open_tab("browser")
    page = tab.page

    async def planted(route: Route) -> None:
        await route.fulfill(content_type="application/json", body='{"access_token": "eyJhbGci.eyJzdWIi.c2ln"}')

    await page.route("**/planted", planted)
    await page.goto(demo.url + "/")
    await page.evaluate("fetch('/planted').then((r) => r.text())")
    await page.evaluate("sessionStorage.setItem('t', 'eyJx.eyJy.z'); localStorage.setItem('r', 'opaque-refresh-1')")
    leaks = await token_leaks(tab, {"opaque-refresh-1"})
    assert any(leak.startswith(f"body of {demo.url}/planted") for leak in leaks), leaks
    assert any(leak.startswith("sessionStorage") for leak in leaks), leaks
    assert any(leak.startswith("localStorage") and "issued" in leak for leak in leaks), leaks


async def test_logout_just_as_the_clock_reconnects_stays_logged_out(open_tab: OpenTab, demo: Server) -> None:
    """The demo API ends the clock's stream when its access token expires, and the page reconnects
    250 ms later. A logout pressed in that moment, on a network where its answer takes half a
    second, must still end on the signed-out page, with no API call after the session ended."""
    tab = await open_tab("browser")
    page = tab.page

    async def slow_logout(route: Route) -> None:
        response = await route.fetch()  # the BFF has ended the session
        await asyncio.sleep(0.5)
        await route.fulfill(response=response)

    await page.route("**/bff/logout", slow_logout)
    await login(tab, demo.url, "oscar")
    async with page.expect_event(
        "requestfinished", lambda request: request.url.endswith("/api/clock"), timeout=(ACCESS_TTL + 5) * 1000
    ):
        pass  # the first stream ended with its token: the page reconnects in 250 ms
    await page.locator("#logout").click()
    await expect(page.locator("#login")).to_be_visible()
    await page.wait_for_timeout(500)  # and it stays there
    await expect(page.locator("#login")).to_be_visible()
    assert tab.origin() == demo.url, f"after logout the page went on to {page.url}"
    late = [f"{r.status} {r.url}" for r in tab.responses if r.status == 401 and "/api/" in r.url]
    assert late == [], f"API calls after the session ended: {late}"


async def test_cookie_mode_demo_signs_in_calls_the_api_and_logs_out_with_no_token_in_the_browser(
    open_tab: OpenTab, cookie_demo: Server
) -> None:
    """`bff demo --token-storage cookie`: the tokens travel in the sealed, HttpOnly cookie, and
    still no token is in the page, its storage or any response."""
    tab = await open_tab("browser")
    page = tab.page
    await login(tab, cookie_demo.url, "frank")
    await add_todo(tab, "sealed in a cookie")
    await expect(page.locator("#todo-list li")).to_have_count(1)
    status, todos = await api(page, "GET", TODO_API)
    assert status == 200, todos

    cookies = {c["name"]: c for c in await tab.context.cookies() if is_bff_cookie(c["name"])}
    assert SESSION_COOKIE in cookies, f"no session cookie in {await tab.context.cookies()}"
    assert cookies[SESSION_COOKIE]["value"].startswith(f"{len(cookies)}."), "not `<count>.<first chunk>`"
    for name, cookie in cookies.items():
        assert cookie["httpOnly"], f"cookie {name} is not HttpOnly"
        assert cookie["sameSite"] == "Strict", cookie
        assert cookie["path"] == "/", cookie
    visible = await page.evaluate("document.cookie")
    assert SESSION_COOKIE + "=" not in visible, f"the session cookie is readable by script: {visible}"
    assert await page.evaluate("localStorage.length") == 0
    assert await token_leaks(tab) == []
    assert unread_bodies(tab) == [], "response bodies that could not be checked"

    await page.locator("#logout").click()
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#status")).to_have_text("signed out")
    status, body = await api(page, "GET", "/bff/user")
    assert status == 401, f"GET /bff/user after logout answered {status}: {body}"
    assert body["error"] == "not_authenticated", body
    assert [c["name"] for c in await tab.context.cookies() if is_bff_cookie(c["name"])] == []
    assert await token_leaks(tab) == [], "logging out showed the browser a token"
