"""A Flask test API with `flask-jwt-extended`: JSON login, refresh tokens that do not rotate,
logout that revokes the refresh token through the library's blocklist check.

- `POST /auth/login` `{"username", "password"}` -> `{"access_token", "refresh_token"}`;
  401 `{"msg": "bad credentials"}` when they do not match.
- `POST /auth/refresh` with the refresh token as `Authorization: Bearer` -> `{"access_token"}`.
- `DELETE /auth/logout` with the refresh token as `Authorization: Bearer`: revokes it (its
  `jti` joins the blocklist that `token_in_blocklist_loader` reads), so the API refuses it (401).
- `GET|POST /api/me` with an access token -> `{"sub", "method", "body"}`.
- `GET /test/counts`, `POST /test/reset`: requests per path (except `/test/...`), for the tests.

An expired token gets 401 with `WWW-Authenticate: Bearer error="invalid_token"` (the one loader
configured here); the other refusals are the library's defaults: 401 for a missing or revoked
token, 422 for an invalid one (bad signature, malformed, an access token where a refresh token
is required). Configured through the environment: `TOKEN_API_ACCESS_LIFETIME`,
`TOKEN_API_REFRESH_LIFETIME` (seconds, default 4 and 3600), `TOKEN_API_PASSWORD` (default
`TEST_PASSWORD`), `TOKEN_API_EXTRA_CLAIM_BYTES` (a padding claim that long in every token),
and for `main()` (waitress) `TOKEN_API_PORT` and `TOKEN_API_THREADS` (default 64).

    TOKEN_API_PORT=8001 python -m tests.token_apis.flask_jwt_app
"""

from __future__ import annotations

import hmac
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from flask import Flask, Response, jsonify, request
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    get_jwt,
    get_jwt_identity,
    jwt_required,
)

USERNAME = "alice"
USER_ID = "1"
# Test fixtures, not secrets.
TEST_PASSWORD = "alice-test-password"
SIGNING_KEY = "bff-tests-flask-jwt-fixture-key-not-a-secret-0123456789"
PADDING_CLAIM = "bff_test_padding"

View = TypeVar("View", bound=Callable[..., Any])


def requires_jwt(*, refresh: bool = False) -> Callable[[View], View]:
    """`flask_jwt_extended.jwt_required(refresh=...)`, typed (the library declares it `-> Any`)."""
    decorator: Callable[[View], View] = jwt_required(refresh=refresh)
    return decorator


@dataclass
class ApiState:
    """What the routes of one app share: the password, the claims every token gets, and (under
    `lock`, waitress serves from many threads) the revoked `jti`s and the request counts."""

    password: str
    extra_claims: dict[str, str]
    revoked: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def create_app(environ: Mapping[str, str] = os.environ) -> Flask:
    app = Flask(__name__)
    app.config.update(
        JWT_SECRET_KEY=SIGNING_KEY,
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=int(environ.get("TOKEN_API_ACCESS_LIFETIME", "4"))),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=int(environ.get("TOKEN_API_REFRESH_LIFETIME", "3600"))),
    )
    state = ApiState(password=environ.get("TOKEN_API_PASSWORD", TEST_PASSWORD), extra_claims=padding_claims(environ))
    add_token_checks(JWTManager(app), state)
    add_auth_routes(app, state)
    add_api_and_test_routes(app, state)
    return app


def padding_claims(environ: Mapping[str, str]) -> dict[str, str]:
    """The padding claim of `TOKEN_API_EXTRA_CLAIM_BYTES` bytes, or none."""
    padding = int(environ.get("TOKEN_API_EXTRA_CLAIM_BYTES", "0"))
    return {PADDING_CLAIM: "x" * padding} if padding > 0 else {}


def add_token_checks(jwt: JWTManager, state: ApiState) -> None:
    """The blocklist check that refuses a revoked token, and the `invalid_token` challenge of an
    expired one (the library calls both with the token's header and payload)."""

    @jwt.token_in_blocklist_loader
    def is_revoked(_jwt_header: dict[str, Any], jwt_payload: dict[str, Any]) -> bool:
        with state.lock:
            return jwt_payload["jti"] in state.revoked

    @jwt.expired_token_loader
    def expired(_jwt_header: dict[str, Any], _jwt_payload: dict[str, Any]) -> tuple[Response, int, dict[str, str]]:
        return jsonify(msg="Token has expired"), 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def add_auth_routes(app: Flask, state: ApiState) -> None:
    """`POST /auth/login`, `POST /auth/refresh`, `DELETE /auth/logout`."""

    @app.post("/auth/login")
    def login() -> tuple[Response, int]:
        credentials = request.get_json(silent=True)
        if not isinstance(credentials, dict) or not {"username", "password"} <= credentials.keys():
            return jsonify(msg="username and password required"), 400
        if credentials["username"] != USERNAME or not hmac.compare_digest(str(credentials["password"]), state.password):
            return jsonify(msg="bad credentials"), 401
        return jsonify(
            access_token=create_access_token(identity=USER_ID, additional_claims=state.extra_claims),
            refresh_token=create_refresh_token(identity=USER_ID, additional_claims=state.extra_claims),
        ), 200

    @app.post("/auth/refresh")
    @requires_jwt(refresh=True)
    def refresh() -> Response:
        identity = get_jwt_identity()
        return jsonify(access_token=create_access_token(identity=identity, additional_claims=state.extra_claims))

    @app.delete("/auth/logout")
    @requires_jwt(refresh=True)
    def logout() -> Response:
        with state.lock:
            state.revoked.add(get_jwt()["jti"])
        return jsonify(msg="refresh token revoked")


def add_api_and_test_routes(app: Flask, state: ApiState) -> None:
    """`/api/me`, and the request counting the tests read through `/test/counts` and `/test/reset`."""

    @app.before_request
    def count() -> None:
        if not request.path.startswith("/test/"):
            with state.lock:
                state.counts[request.path] += 1

    @app.route("/api/me", methods=["GET", "POST"])
    @requires_jwt()
    def me() -> Response:
        return jsonify(sub=get_jwt_identity(), method=request.method, body=request.get_data(as_text=True))

    @app.get("/test/counts")
    def test_counts() -> Response:
        with state.lock:
            return jsonify(dict(state.counts))

    @app.post("/test/reset")
    def test_reset() -> Response:
        with state.lock:
            state.counts.clear()
        return jsonify({})


def main() -> None:
    from waitress import serve

    serve(
        create_app(),
        host="127.0.0.1",
        port=int(os.environ["TOKEN_API_PORT"]),
        threads=int(os.environ.get("TOKEN_API_THREADS", "64")),
        ident="flask-jwt-test-api",
    )


if __name__ == "__main__":
    main()
