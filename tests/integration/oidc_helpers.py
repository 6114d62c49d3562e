"""Helpers of the integration tests shared by the server-mode and cookie-mode modules: reading
`Set-Cookie` headers, waiting out access tokens, logging in, firing concurrent requests, and looking
for leaked tokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping

import httpx

from bff.cookies import SESSION_ID_PATTERN
from tests.integration.oidc_harness import ACCESS_TTL, Bff, Run
from tests.support import jwt_api
from tests.support.cookies import parse_set_cookie
from tests.support.jwt_api import JwtApi
from tests.support.oidc_browser import Browser
from tests.support.oidc_provider import OidcProvider, token_fragments

CSRF = {"X-CSRF": "1"}


def wait_for_expiry(*echoes: httpx.Response) -> None:
    """Sleep until the access tokens behind these API answers have expired: the API echoes each
    token's `exp` and allows no leeway, so after this the next request needs a refresh."""
    exp = max(float(echo.json()["exp"]) for echo in echoes)
    assert exp - time.time() <= ACCESS_TTL + 1, "the provider issued a long-lived access token"
    jwt_api.wait_for_expiry(exp, margin=0.5)


def session_cookie(browser: Browser, bff: Bff) -> str:
    value = browser.cookie(bff.cookie_name)
    assert value, f"no {bff.cookie_name} cookie in the jar"
    return value


def session_id_of(cookie_value: str) -> str:
    """The session-id part of a signed cookie value (`<id>.<signature>`)."""
    return cookie_value.rsplit(".", 1)[0] if "." in cookie_value else cookie_value


def raw_get(bff: Bff, path: str, cookie: str | Mapping[str, str] | None, *, csrf: bool = True) -> httpx.Response:
    """A request with a cookie header written by hand (forged, stolen, replayed): `cookie` is the
    session cookie's value, or every cookie by name (cookie mode's chunks)."""
    headers = dict(CSRF) if csrf else {}
    if isinstance(cookie, str):
        headers["Cookie"] = f"{bff.cookie_name}={cookie}"
    elif cookie is not None:
        headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookie.items())
    return httpx.get(f"{bff.url}{path}", headers=headers, timeout=30)


def logged_in(run: Run, bff: Bff, user: str, *, user_agent: str = "integration-browser") -> Browser:
    browser = run.new_browser(bff, user_agent=user_agent)
    response = browser.login(bff.public_url, user)
    assert response.headers["location"].endswith("/app"), response.headers["location"]
    return browser


def bff_cookie_values(run: Run) -> set[str]:
    """Every non-empty cookie value a BFF ever set in any browser of the run."""
    bff_origins = {bff.url for bff in run.bffs}
    values: set[str] = set()
    for browser in run.browsers:
        for record in browser.history:
            if not any(record.url.startswith(origin) for origin in bff_origins):
                continue
            for header in record.set_cookies():
                _, value, _ = parse_set_cookie(header)
                if value:
                    values.add(value)
    return values


def secret_fragments(run: Run) -> set[str]:
    """What must never show up outside the BFF's memory: every token the provider issued or the API
    saw, and every BFF cookie value with the session-id part of a signed one (a cookie-mode chunk,
    `<count>.<sealed part>`, has none: its count is no secret)."""
    cookies = bff_cookie_values(run)
    session_ids = {session_id_of(value) for value in cookies} & {
        value.partition(".")[0] for value in cookies if SESSION_ID_PATTERN.fullmatch(value.partition(".")[0])
    }
    return token_fragments(run.provider.issued_tokens() | run.api.tokens_seen) | token_fragments(cookies | session_ids)


def leaks(haystacks: Iterable[tuple[str, bytes]], needles: set[str]) -> list[str]:
    return [
        f"{where}: contains {needle[:12]}... ({len(needle)} chars)"
        for where, data in haystacks
        for needle in needles
        if needle.encode() in data
    ]


def concurrent_api_requests(bff: Bff, cookie: str, n: int, *, method: str = "GET") -> list[httpx.Response]:
    """`n` concurrent requests of one session to the API, as one browser tab firing many fetches."""

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        headers = {**CSRF, "Cookie": f"{bff.cookie_name}={cookie}"}
        async with httpx.AsyncClient(base_url=bff.url, headers=headers, limits=limits, timeout=60) as client:
            return await asyncio.gather(*(client.request(method, f"/api/concurrent/{i}") for i in range(n)))

    return asyncio.run(fire())


def fifty_at_once_cause_one_refresh(run: Run, bff: Bff, provider: OidcProvider, api: JwtApi, user: str) -> None:
    """50 concurrent API requests of one session with an expired access token: all 200, exactly
    one refresh at the provider, one new access token, no 401 and replay."""
    browser = logged_in(run, bff, user)
    cookie = session_cookie(browser, bff)
    warm = browser.api("GET", f"{bff.url}/api/warm")
    assert warm.status_code == 200, warm.text
    refreshes = provider.refresh_count(bff.client.client_id)
    before = api.count()

    wait_for_expiry(warm)
    responses = concurrent_api_requests(bff, cookie, 50)
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 50, {s: statuses.count(s) for s in set(statuses)}
    assert provider.refresh_count(bff.client.client_id) == refreshes + 1, provider.counters()
    assert not provider.refresh_errors(bff.client.client_id)
    jtis = {r.json()["jti"] for r in responses}
    assert len(jtis) == 1, f"{len(jtis)} different access tokens after one refresh"
    assert api.count() - before == 50  # no 401 and replay: the refresh came first
    # The session survived the rotation: the next request still works.
    assert browser.api("GET", f"{bff.url}/api/after").status_code == 200
