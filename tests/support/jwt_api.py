"""A real upstream API for the integration tests: it accepts only the provider's JWT access tokens.

Every request must carry `Authorization: Bearer <JWT>` signed by a key of the provider's JWKS, with
the provider's `iss`, the API's `aud` and an unexpired `exp` (no leeway). Otherwise it answers 401
with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750), which is what makes the BFF
refresh and replay. A valid request gets its own description back as JSON: method, path, query,
body (text), `sha256` of the body, and the token's `sub` and `jti`.

Every request, accepted or not, is recorded (`JwtApi.requests`), with the body's sha256 and the
bearer token, so that tests can compare what the upstream saw across a replay and collect every
access token that went by. It runs under real uvicorn in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.processes import free_port
from tests.support.server_thread import ServedApp


@dataclass
class Seen:
    method: str
    path: str
    status: int
    body_sha256: str
    body_length: int
    token: str | None
    sub: str | None = None
    jti: str | None = None
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class JwtApi(ServedApp):
    server_name = "the JWT API"

    def __init__(self, issuer: str, audience: str, *, port: int | None = None) -> None:
        self.issuer = issuer
        self.audience = audience
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._jwks = jwt.PyJWKClient(f"{issuer}/jwks", cache_keys=True, lifespan=3600)
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])]
        )

    # ------------------------------------------------------------------ what it saw

    @property
    def tokens_seen(self) -> set[str]:
        with self._lock:
            return {seen.token for seen in self.requests if seen.token}

    def seen_for(self, path: str) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.requests if seen.path == path]

    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    # ------------------------------------------------------------------ the endpoint

    def _verify(self, token: str) -> dict[str, Any]:
        key = self._jwks.get_signing_key_from_jwt(token)
        return dict(
            jwt.decode(
                token,
                key=key.key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "jti"]},
                leeway=0,
            )
        )

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        digest = hashlib.sha256(body).hexdigest()
        authorization = request.headers.get("authorization", "")
        token = authorization[7:] if authorization.lower().startswith("bearer ") else None
        seen = Seen(
            method=request.method,
            path=request.url.path,
            status=401,
            body_sha256=digest,
            body_length=len(body),
            token=token,
            headers={name: value for name, value in request.headers.items()},
        )
        with self._lock:
            self.requests.append(seen)
        if token is None:
            seen.error = "no bearer token"
            return _unauthorized("invalid_request", "no bearer token")
        try:
            # PyJWKClient uses urllib (blocking): keep it off the event loop.
            claims = await asyncio.to_thread(self._verify, token)
        except jwt.ExpiredSignatureError:
            seen.error = "expired"
            return _unauthorized("invalid_token", "the access token expired")
        except jwt.PyJWTError as exc:
            seen.error = f"{type(exc).__name__}: {exc}"
            return _unauthorized("invalid_token", "the access token is invalid")
        seen.status = 200
        seen.sub = claims.get("sub")
        seen.jti = claims.get("jti")
        return JSONResponse(
            {**echo(request, body, digest, claims), "length": len(body), "client_id": claims.get("client_id")}
        )


def echo(request: Request, body: bytes, digest: str, claims: dict[str, Any]) -> dict[str, Any]:
    """What a test API answers to an accepted request: the request as it arrived, and who the
    token said it was for."""
    return {
        "method": request.method,
        "path": request.url.path,
        "query": request.url.query,
        "body": body.decode("utf-8", errors="replace"),
        "sha256": digest,
        "sub": claims.get("sub"),
        "jti": claims.get("jti"),
        "exp": claims.get("exp"),
    }


def wait_for_expiry(exp: float, *, margin: float = 0.5) -> None:
    """Sleep until an access token with this `exp` (which the API echoes) has expired for the
    API, which allows no leeway, and `margin` seconds more."""
    time.sleep(max(0.0, exp + margin - time.time()))


def _unauthorized(error: str, description: str) -> Response:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=401,
        headers={"WWW-Authenticate": f'Bearer error="{error}", error_description="{description}"'},
    )


@contextlib.contextmanager
def running_api(issuer: str, audience: str) -> Iterator[JwtApi]:
    api = JwtApi(issuer, audience)
    api.start()
    try:
        yield api
    finally:
        api.stop()
