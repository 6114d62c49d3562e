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
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

CLIENT_ADDRESS = "127.0.0.2"


class _Forms(HTMLParser):
    """Every `<form>` of a page with its `<input>` values (an input's `form=` attribute honoured)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, str, dict[str, str], str]] = []
        self._by_id: dict[str, dict[str, str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            fields: dict[str, str] = {}
            form_id = attributes.get("id") or ""
            self.forms.append(
                (attributes.get("action") or "", (attributes.get("method") or "get").upper(), fields, form_id)
            )
            if form_id:
                self._by_id[form_id] = fields
        elif tag == "input" and self.forms and attributes.get("name"):
            owner = self._by_id.get(attributes.get("form") or "") or self.forms[-1][2]
            owner[attributes["name"] or ""] = attributes.get("value") or ""


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
        headers = {"X-CSRF": "1", **kwargs.pop("headers", {})}
        if method.upper() not in ("GET", "HEAD"):
            parts = urlsplit(url)
            headers.setdefault("Origin", f"{parts.scheme}://{parts.netloc}")
            headers.setdefault("Sec-Fetch-Site", "same-origin")
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
            parser = _Forms()
            parser.feed(response.text)
            assert parser.forms, f"no form on {response.url}: {response.text[:500]}"
            action, method, fields, _ = parser.forms[-1]
            if fields.get("prompt") == "login":
                fields = {**fields, "login": user, "password": "any password"}
            elif fields.get("prompt") != "consent":
                raise AssertionError(f"unexpected provider page {response.url}: {response.text[:800]}")
            response = self.http.request(
                method, urljoin(str(response.url), action), data=fields, follow_redirects=False
            )
        raise AssertionError("the login never came back to /bff/callback")

    def provider_logout(self, issuer: str, client_id: str) -> httpx.Response:
        """RP-initiated logout at the provider, as the signed-in person: open its end-session page
        and press "Yes, sign me out" (the provider then sends the back-channel logout)."""
        response = self.get(f"{issuer}/session/end", params={"client_id": client_id})
        assert response.status_code == 200, response.text
        parser = _Forms()
        parser.feed(response.text)
        action, method, fields, _ = next(form for form in parser.forms if form[3] == "op.logoutForm")
        url = urljoin(str(response.url), action)
        response = self.http.request(method, url, data={**fields, "logout": "yes"}, follow_redirects=False)
        for _ in range(10):
            if not response.is_redirect:
                break
            location = urljoin(str(response.url), response.headers["location"])
            if not location.startswith(issuer):
                break  # back at the application: the provider is done
            response = self.get(location)
        return response
