"""DemoAPI: the small API behind the demo's `token = "user"` route. Development only.

It trusts nothing but a valid access token: every request needs `Authorization: Bearer <JWT>`,
checked with PyJWT against the provider's JWKS (fetched over HTTP, refetched when an unknown
`kid` appears), with explicit algorithm, issuer and audience. A missing, expired or otherwise
invalid token gets 401 with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 §3),
which is what makes the BFF refresh and replay.

    GET    /me            who am I: sub, name, the token's exp
    GET    /todos         this user's to-dos
    POST   /todos         {"text": "..."} → 201 the new to-do
    DELETE /todos/{id}    204, or 404 when it is not this user's
    GET    /clock         server-sent events, one a second with the server time; the stream ends
                          when the access token that opened it expires, so a client reconnects
                          through the BFF and the refresh shows
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from bff.demo.keys import ALGORITHM

__all__ = ["MAX_TODOS", "MAX_TODO_TEXT", "DemoAPI", "InvalidToken"]

log = logging.getLogger("bff.demo.api")

MAX_TODOS = 100
MAX_TODO_TEXT = 200


class InvalidToken(Exception):
    """The request carries no usable access token; `description` goes into `WWW-Authenticate`."""

    def __init__(self, description: str, *, missing: bool = False) -> None:
        super().__init__(description)
        self.description = description
        self.missing = missing

    def response(self) -> Response:
        if self.missing:
            # RFC 6750 §3.1: no error code when the request had no credentials at all.
            challenge = 'Bearer realm="demo-api"'
        else:
            challenge = f'Bearer realm="demo-api", error="invalid_token", error_description="{self.description}"'
        body = {"error": "invalid_token", "detail": self.description}
        return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": challenge})


class DemoAPI:
    """The API's state (to-dos per `sub`) and its JWT check. `app()` is the Starlette app.

    `transport` reaches the JWKS in tests; `tick` and `max_ticks` shorten the SSE clock in tests.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
        leeway: float = 0,
        tick: float = 1.0,
        max_ticks: int | None = None,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._jwks_url = jwks_url
        self._transport = transport
        self._leeway = leeway
        self._tick = tick
        self._max_ticks = max_ticks
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_fetched_at = float("-inf")
        self._keys_lock = asyncio.Lock()
        self._todos: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/me", self._me, methods=["GET"]),
            Route("/todos", self._list_todos, methods=["GET"]),
            Route("/todos", self._add_todo, methods=["POST"]),
            Route("/todos/{todo_id}", self._delete_todo, methods=["DELETE"]),
            Route("/clock", self._clock, methods=["GET"]),
        ]

    def app(self) -> Starlette:
        # Handlers raise InvalidToken from `authenticate`; this turns it into the RFC 6750 answer.
        return Starlette(routes=self.routes(), exception_handlers={InvalidToken: _invalid_token})

    async def authenticate(self, request: Request) -> dict[str, Any]:
        """The verified claims of the request's bearer token; raises `InvalidToken`."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise InvalidToken("no bearer token", missing=True)
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = await self._key(kid if isinstance(kid, str) else "")
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the access token expired") from None
        except jwt.PyJWTError as exc:  # InvalidTokenError, and InvalidKeyError for an unknown kid
            raise InvalidToken(f"the access token is not valid ({type(exc).__name__})") from None
        return claims

    async def _key(self, kid: str) -> jwt.PyJWK:
        if kid not in self._keys:
            async with self._keys_lock:
                # Refetch for an unknown kid (a provider key rotation), at most every 10 s.
                if kid not in self._keys and time.monotonic() - self._keys_fetched_at > 10:
                    await self._fetch_keys()
        try:
            return self._keys[kid]
        except KeyError:
            raise jwt.InvalidKeyError("unknown kid") from None

    async def _fetch_keys(self) -> None:
        self._keys_fetched_at = time.monotonic()
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=5) as http:
                response = await http.get(self._jwks_url)
                response.raise_for_status()
                keyset = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("JWKS fetch failed. url: '%s', error: %s", self._jwks_url, type(exc).__name__)
            return
        self._keys = {key.key_id: key for key in keyset.keys if key.key_id}

    async def _me(self, request: Request) -> Response:
        claims = await self.authenticate(request)
        return JSONResponse(
            {
                "sub": claims["sub"],
                "name": claims.get("name"),
                "scope": claims.get("scope"),
                "tokenExpiresAt": claims["exp"],
                "tokenExpiresIn": round(claims["exp"] - time.time(), 1),
            }
        )

    async def _list_todos(self, request: Request) -> Response:
        claims = await self.authenticate(request)
        return JSONResponse(self._todos.get(claims["sub"], []))

    async def _add_todo(self, request: Request) -> Response:
        claims = await self.authenticate(request)
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TODO_TEXT:
            detail = f'expected JSON {{"text": "..."}} with 1 to {MAX_TODO_TEXT} characters'
            return JSONResponse({"error": "bad_request", "detail": detail}, status_code=400)
        todos = self._todos.setdefault(claims["sub"], [])
        if len(todos) >= MAX_TODOS:
            detail = f"at most {MAX_TODOS} to-dos per user"
            return JSONResponse({"error": "too_many", "detail": detail}, status_code=409)
        todo = {"id": str(next(self._ids)), "text": text.strip(), "createdAt": _iso(time.time())}
        todos.append(todo)
        return JSONResponse(todo, status_code=201)

    async def _delete_todo(self, request: Request) -> Response:
        claims = await self.authenticate(request)
        todos = self._todos.get(claims["sub"], [])
        for index, todo in enumerate(todos):
            if todo["id"] == request.path_params["todo_id"]:
                del todos[index]
                return Response(status_code=204)
        return JSONResponse({"error": "not_found", "detail": "no such to-do"}, status_code=404)

    async def _clock(self, request: Request) -> Response:
        claims = await self.authenticate(request)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(self._ticks(float(claims["exp"])), media_type="text/event-stream", headers=headers)

    async def _ticks(self, token_expires_at: float) -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        for number in itertools.count(1):
            now = time.time()
            if now >= token_expires_at:
                yield b"event: token-expired\ndata: {}\n\n"
                return
            data = json.dumps({"time": _iso(now), "epoch": round(now, 3)})
            yield f"id: {number}\nevent: tick\ndata: {data}\n\n".encode()
            if self._max_ticks is not None and number >= self._max_ticks:
                return
            await asyncio.sleep(self._tick)


async def _invalid_token(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidToken)
    return exc.response()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
