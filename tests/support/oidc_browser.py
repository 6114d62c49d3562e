"""A browser stand-in for the integration tests: httpx with its own cookie jar, following
redirects by hand so that every response is recorded, and filling in the provider's HTML forms.

`Browser.login(bff_url, user)` does what a person does: open `/bff/login`, get sent to the
provider, type a login name and password into the provider's own sign-in page, press "Continue"
on its consent page, come back through `/bff/callback` and land on `returnTo`.

Over an https `public_url` the BFF is still driven over http (there is no TLS here): `https_alias`
maps the public https origin to the http one, and `Secure` cookies are sent back over http; the
attributes are checked on the raw `Set-Cookie` headers, as a browser would receive them.
"""

from __future__ import annotations

import dataclasses
import http.cookiejar
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from tests.support.browsing import fetch_headers, parse_forms


@dataclasses.dataclass
class Recorded:
    method: str
    url: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def set_cookies(self) -> list[str]:
        return [value for name, value in self.headers if name.lower() == "set-cookie"]

    def text(self) -> str:
        return "\n".join(f"{name}: {value}" for name, value in self.headers) + "\n\n" + self.body.decode("latin-1")


class Browser:
    def __init__(self, *, https_alias: dict[str, str] | None = None, user_agent: str = "integration-browser") -> None:
        self.jar = http.cookiejar.CookieJar()
        self.https_alias = https_alias or {}
        self.http = httpx.Client(cookies=self.jar, timeout=30, headers={"user-agent": user_agent})
        self.history: list[Recorded] = []

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------ requests

    def _real_url(self, url: str) -> str:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin in self.https_alias:
            target = urlsplit(self.https_alias[origin])
            return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))
        return url

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        real = self._real_url(url)
        response = self.http.request(method, real, follow_redirects=False, **kwargs)
        if self.https_alias:
            # The stand-in for TLS: send `Secure` cookies back over http (httpx copies the jar for
            # each request, so a cookie policy cannot do this). The raw headers keep the flag.
            for cookie in self.jar:
                cookie.secure = False
        self.history.append(
            Recorded(method, real, response.status_code, list(response.headers.multi_items()), response.content)
        )
        return response

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def api(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """What the SPA's `fetch` sends: the anti-forgery header and the page's own Origin."""
        headers = fetch_headers(method, url, kwargs.pop("headers", {}))
        return self.request(method, url, headers=headers, **kwargs)

    def cookie(self, name: str) -> str | None:
        for cookie in self.jar:
            if cookie.name == name:
                return cookie.value
        return None

    def cookies_named(self, prefix: str) -> dict[str, str]:
        return {c.name: c.value or "" for c in self.jar if c.name == prefix or c.name.startswith(prefix + "-")}

    def set_cookie(self, name: str, value: str, domain: str = "127.0.0.1") -> None:
        """Put a cookie in the jar by hand (a forged, stolen or replayed one)."""
        self.http.cookies.set(name, value, domain=domain, path="/")

    def clear_cookies(self) -> None:
        self.jar.clear()

    # ------------------------------------------------------------------ the login dance

    def follow(self, response: httpx.Response, *, stop_at: str | None = None, limit: int = 20) -> httpx.Response:
        """Follow redirects (and the provider's auto-submitting form_post pages) until a page
        that is not a redirect, or until a redirect to a URL starting with `stop_at`."""
        for _ in range(limit):
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if stop_at is not None and location.startswith(stop_at):
                    return response
                response = self.get(location)
                continue
            return response
        raise AssertionError(f"more than {limit} redirects, last at {response.url}")

    def submit(self, response: httpx.Response, values: dict[str, str], *, form_index: int = -1) -> httpx.Response:
        forms = parse_forms(response.text)
        if not forms:
            raise AssertionError(f"no form on {response.url}: {response.text[:500]}")
        form = forms[form_index]
        action = urljoin(str(response.url), form.action)
        return self.request(form.method, action, data={**form.fields, **values})

    def provider_sign_in(self, response: httpx.Response, user: str, *, stop_at: str) -> httpx.Response:
        """On the provider's pages: sign in as `user`, consent, follow back until `stop_at`."""
        for _ in range(4):
            response = self.follow(response, stop_at=stop_at)
            if response.is_redirect:
                return response
            if response.status_code != 200:
                raise AssertionError(f"provider page {response.url} answered {response.status_code}: {response.text}")
            forms = parse_forms(response.text)
            prompt = forms[-1].fields.get("prompt") if forms else None
            if prompt == "login":
                response = self.submit(response, {"login": user, "password": "any password"})
            elif prompt == "consent":
                response = self.submit(response, {})
            else:
                raise AssertionError(f"unexpected provider page {response.url}: {response.text[:800]}")
        raise AssertionError("the provider kept asking")

    def start_login(self, bff_url: str, return_to: str | None = "/app") -> httpx.Response:
        params = {} if return_to is None else {"returnTo": return_to}
        return self.get(f"{bff_url}/bff/login", params=params)

    def login(self, bff_url: str, user: str, *, return_to: str = "/app") -> httpx.Response:
        """The whole login; returns the BFF's final redirect (to `returnTo`)."""
        response = self.start_login(bff_url, return_to)
        assert response.is_redirect, f"/bff/login answered {response.status_code}: {response.text}"
        response = self.provider_sign_in(response, user, stop_at=f"{bff_url}/bff/callback")
        callback = urljoin(str(response.url), response.headers["location"])
        response = self.get(callback)
        assert response.is_redirect, f"/bff/callback answered {response.status_code}: {response.text}"
        return response

    def provider_logout(self, issuer: str, client_id: str) -> httpx.Response:
        """RP-initiated logout at the provider, as the signed-in person: open the end-session
        page and press "Yes, sign me out" (this is what sends the back-channel logout)."""
        response = self.get(f"{issuer}/session/end", params={"client_id": client_id})
        assert response.status_code == 200, response.text
        forms = parse_forms(response.text)
        form = next(f for f in forms if f.id == "op.logoutForm")
        response = self.post(urljoin(str(response.url), form.action), data={**form.fields, "logout": "yes"})
        return self.follow(response)
