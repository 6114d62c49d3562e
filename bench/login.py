"""Logging the logged-in set-ups in: the authorization-code flow at the development provider
(`log_in`, for `bff-user` and `bff-cookie`) and `POST /bff/login` in token-API mode
(`token_api_log_in`, for `bff-tokenapi`), and the sign-in and consent pages of the tests' real
provider (`provider_log_in`, for `bff-oidc` and `bff-dpop`). Each returns the `Cookie` header value wrk then sends.

Starting the BFF and its provider is bench/setups.py's.
"""

from __future__ import annotations

import html
import http.client
import json
import re
from urllib.parse import urlencode, urljoin, urlsplit

from bench.processes import CSRF_HEADER
from tests.support.oidc_browser import Browser as ProviderBrowser

__all__ = ["Browser", "log_in", "provider_log_in", "token_api_log_in"]


class Browser:
    """Just enough of a browser for the login flow: it follows nothing by itself, and keeps the
    cookies `base` sets by hand, because the BFF's are `Secure` and are sent here over http."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar: dict[str, str] = {}

    @property
    def cookie(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.jar.items())

    def remember(self, response: http.client.HTTPResponse) -> None:
        for header, value in response.getheaders():
            if header.lower() != "set-cookie":
                continue
            pair, _, attributes = value.partition(";")
            name, _, content = pair.strip().partition("=")
            if not content or "max-age=0" in attributes.lower().replace(" ", ""):
                self.jar.pop(name, None)
            else:
                self.jar[name] = content

    def request(self, url: str, method: str = "GET", body: str | None = None) -> tuple[int, str, str]:
        """Status, the absolute `Location` (or `url` itself when there is none) and the body."""
        parts = urlsplit(url)
        ours = url.startswith(self.base)
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
        headers = {"Cookie": self.cookie} if ours and self.jar else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body, headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
            if ours:
                self.remember(response)
            return response.status, urljoin(url, response.getheader("Location") or ""), text
        finally:
            connection.close()


def log_in(base: str, user: str = "alice") -> str:
    """Walk the authorization-code flow like a browser and return the `Cookie` header value of
    the new session."""
    browser = Browser(base)
    status, authorize, _ = browser.request(f"{base}/bff/login?returnTo=/")
    if status not in (302, 303):
        raise ValueError(f"GET /bff/login answered {status}")
    status, _, page = browser.request(authorize)
    match = re.search(r'name="transaction" value="([^"]+)"', page)
    if status != 200 or match is None:
        raise ValueError(f"the provider's login page answered {status} without a transaction")
    form = urlencode({"transaction": html.unescape(match.group(1)), "username": user})
    status, callback, _ = browser.request(urljoin(authorize, "authorize"), "POST", form)
    if status not in (302, 303) or not callback.startswith(base):
        raise ValueError(f"the provider's login answered {status}, not a redirect to the BFF")
    status, _, text = browser.request(callback)
    if status not in (302, 303) or not browser.jar:
        raise ValueError(f"GET /bff/callback answered {status}: {text[:200]}")
    return browser.cookie


def token_api_log_in(base: str, username: str, password: str) -> str:
    """`POST /bff/login` with the credentials as JSON, as an SPA sends them; the `Cookie` header
    value of the new session."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    body = json.dumps({"username": username, "password": password})
    try:
        connection.request(
            "POST", "/bff/login", body, {"Content-Type": "application/json", CSRF_HEADER[0]: CSRF_HEADER[1]}
        )
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        cookies = [
            value.partition(";")[0].strip() for name, value in response.getheaders() if name.lower() == "set-cookie"
        ]
    finally:
        connection.close()
    if response.status != 200 or not cookies:
        raise ValueError(f"POST /bff/login answered {response.status}: {text[:200]}")
    return "; ".join(cookies)


def provider_log_in(base: str, user: str = "bench-user") -> str:
    """The tests' own browser stand-in (`tests.support.oidc_browser`) signs in at the real
    provider's pages and consents; the `Cookie` header value of the BFF's session cookies (the
    jar holds the provider's too: same host, other port)."""
    browser = ProviderBrowser(user_agent="bench")
    try:
        browser.login(base, user, return_to="/")
        cookies = browser.cookies_named("bff")
    finally:
        browser.close()
    if not cookies:
        raise ValueError("no session cookie after the login")
    return "; ".join(f"{name}={value}" for name, value in cookies.items())
