"""A browser stand-in for the deployment tests: httpx with a cookie jar, on a loopback address of
its own (`127.0.0.2`), so that the address the upstream finally sees in `X-Forwarded-For` can only
be the client's if every proxy on the way passed it on honestly (Caddy and the BFF both run on
`127.0.0.1`).

`Visitor.login(public_url, user)` signs in the way a person does: `/bff/login` at the public URL
(Caddy), the provider's own sign-in and consent forms, back through `/bff/callback`.
"""

from __future__ import annotations

import http.cookiejar
import ssl
from typing import Any
from urllib.parse import urljoin

import httpx

from tests.support.browsing import fetch_headers, parse_forms

CLIENT_ADDRESS = "127.0.0.2"


class Visitor:
    def __init__(self, *, verify: ssl.SSLContext | bool = True, local_address: str = CLIENT_ADDRESS) -> None:
        self.jar = http.cookiejar.CookieJar()
        self.transport = httpx.HTTPTransport(verify=verify, local_address=local_address)
        self.http = httpx.Client(
            transport=self.transport, cookies=self.jar, timeout=30, headers={"user-agent": "deployment-test"}
        )

    def close(self) -> None:
        self.http.close()

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(url, follow_redirects=False, **kwargs)

    def api(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """What the SPA's `fetch` sends: the anti-forgery header, and its own Origin when it posts."""
        headers = fetch_headers(method, url, kwargs.pop("headers", {}))
        return self.http.request(method, url, headers=headers, follow_redirects=False, **kwargs)

    def cookie(self, name: str) -> str | None:
        return next((cookie.value for cookie in self.jar if cookie.name == name), None)

    def login(self, public_url: str, user: str, *, return_to: str = "/app") -> httpx.Response:
        """The whole login through `public_url`; returns `/bff/callback`'s response (its
        redirect to `return_to`, with the session cookie)."""
        callback = f"{public_url}/bff/callback"
        response = self.get(f"{public_url}/bff/login", params={"returnTo": return_to})
        assert response.is_redirect, f"/bff/login answered {response.status_code}: {response.text}"
        for _ in range(20):
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(callback):
                    response = self.get(location)
                    assert response.is_redirect, f"/bff/callback answered {response.status_code}: {response.text}"
                    return response
                response = self.get(location)
                continue
            assert response.status_code == 200, f"{response.url} answered {response.status_code}: {response.text}"
            forms = parse_forms(response.text)
            assert forms, f"no form on {response.url}: {response.text[:500]}"
            form = forms[-1]
            fields = form.fields
            if fields.get("prompt") == "login":
                fields = {**fields, "login": user, "password": "any password"}
            elif fields.get("prompt") != "consent":
                raise AssertionError(f"unexpected provider page {response.url}: {response.text[:800]}")
            response = self.http.request(
                form.method, urljoin(str(response.url), form.action), data=fields, follow_redirects=False
            )
        raise AssertionError("the login never came back to /bff/callback")

    def provider_logout(self, issuer: str, client_id: str) -> httpx.Response:
        """RP-initiated logout at the provider, as the signed-in person: open its end-session page
        and press "Yes, sign me out" (the provider then sends the back-channel logout)."""
        response = self.get(f"{issuer}/session/end", params={"client_id": client_id})
        assert response.status_code == 200, response.text
        form = next(form for form in parse_forms(response.text) if form.id == "op.logoutForm")
        url = urljoin(str(response.url), form.action)
        response = self.http.request(form.method, url, data={**form.fields, "logout": "yes"}, follow_redirects=False)
        for _ in range(10):
            if not response.is_redirect:
                break
            location = urljoin(str(response.url), response.headers["location"])
            if not location.startswith(issuer):
                break  # back at the application: the provider is done
            response = self.get(location)
        return response
