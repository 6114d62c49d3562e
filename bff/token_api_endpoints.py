"""The token-API endpoint: `POST /bff/login`, the SPA's credentials in, a session cookie out.

Owns reading the login request (the anti-forgery header, a JSON body of bounded size), which
client address the API is told about (`bff.headers.client_address`: the browser's, judged by
`trusted_proxies`), and the answer: the same JSON as `GET /bff/user`, plus the `Set-Cookie`
values of the new session. Never a token, and never the API's own answer, which holds them.

Thin: forwarding the credentials, the API's statuses and the user's claims are
`bff.token_api.TokenAPIClient`'s; the session is `Sessions`'; errors are `BffError`s rendered by
the app (401 `invalid_credentials`, 429 with the API's `Retry-After`, 503 with `Retry-After`).
There is no `GET /bff/login` in this mode: no redirect to a provider's page, the SPA shows its
own login form.
"""

from __future__ import annotations

import dataclasses
import json
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bff.csrf import AntiForgery
from bff.endpoints import Parts, json_response, media_type, read_body, start_session, user_body
from bff.errors import BadRequest, BffError
from bff.headers import TrustedProxies, client_address
from bff.login import user_claims
from bff.token_api import TokenAPIClient

__all__ = ["MAX_LOGIN_BODY", "TokenAPIEndpoints", "build_token_api_routes"]

log = logging.getLogger("bff.endpoints")

MAX_LOGIN_BODY = 64 * 1024
"""Largest credentials body `POST /bff/login` reads (413 above): generous for a user name, a
password and a second factor, small enough that nobody makes the BFF buffer much for the API."""


class TokenAPIEndpoints:
    def __init__(self, parts: Parts, client: TokenAPIClient) -> None:
        self.parts = parts
        self.client = client
        self.anti_forgery = AntiForgery(parts.settings)
        self.trusted = TrustedProxies(parts.settings.trusted_proxies)
        self.keep_claims = parts.settings.session.keep_claims

    async def login(self, request: Request) -> Response:
        # A cross-site form could post credentials of the attacker's account (login CSRF).
        self.anti_forgery.check(request.headers.raw)
        client_ip = client_address(request.headers.raw, request.client.host if request.client else None, self.trusted)
        try:
            body = await _credentials(request)
            result = await self.client.login(body, client_ip=client_ip)
            result = dataclasses.replace(result, claims=user_claims(result.claims, hidden=(), keep=self.keep_claims))
            session, cookies = await start_session(self.parts, result, request)
        except BffError as exc:
            self.parts.metrics.logged_in("failure")
            log.info("Login failed. error: '%s', client: '%s'", exc.code, client_ip)
            raise
        return json_response(user_body(session, self.parts.settings), cookies=cookies)


async def _credentials(request: Request) -> bytes:
    """The body as the SPA sent it, once it is known to be a JSON object of bounded size."""
    if media_type(request) != "application/json":
        raise BadRequest("expected an application/json body with the credentials")
    body = await read_body(request, MAX_LOGIN_BODY)
    try:
        parsed = json.loads(body)
    except ValueError:  # also bytes that are not UTF-8
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise BadRequest('the body must be a JSON object, e.g. {"username": "...", "password": "..."}')
    return body


def build_token_api_routes(parts: Parts, client: TokenAPIClient) -> list[BaseRoute]:
    endpoints = TokenAPIEndpoints(parts, client)
    return [Route(f"{parts.settings.prefix}/login", endpoints.login, methods=["POST"])]
