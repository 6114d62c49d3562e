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


def create_app(environ: Mapping[str, str] = os.environ) -> Flask:
    app = Flask(__name__)
    app.config.update(
        JWT_SECRET_KEY=SIGNING_KEY,
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=int(environ.get("TOKEN_API_ACCESS_LIFETIME", "4"))),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(seconds=int(environ.get("TOKEN_API_REFRESH_LIFETIME", "3600"))),
    )
    password = environ.get("TOKEN_API_PASSWORD", TEST_PASSWORD)
    extra_claims = {}
    if (padding := int(environ.get("TOKEN_API_EXTRA_CLAIM_BYTES", "0"))) > 0:
        extra_claims[PADDING_CLAIM] = "x" * padding
    jwt = JWTManager(app)
    revoked: set[str] = set()
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    @jwt.token_in_blocklist_loader
    def is_revoked(jwt_header: dict[str, Any], jwt_payload: dict[str, Any]) -> bool:
        with lock:
            return jwt_payload["jti"] in revoked

    @jwt.expired_token_loader
    def expired(jwt_header: dict[str, Any], jwt_payload: dict[str, Any]) -> tuple[Response, int, dict[str, str]]:
        return jsonify(msg="Token has expired"), 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}

    @app.before_request
    def count() -> None:
        if not request.path.startswith("/test/"):
            with lock:
                counts[request.path] += 1

    @app.post("/auth/login")
    def login() -> tuple[Response, int]:
        credentials = request.get_json(silent=True)
        if not isinstance(credentials, dict) or not {"username", "password"} <= credentials.keys():
            return jsonify(msg="username and password required"), 400
        if credentials["username"] != USERNAME or not hmac.compare_digest(str(credentials["password"]), password):
            return jsonify(msg="bad credentials"), 401
        return jsonify(
            access_token=create_access_token(identity=USER_ID, additional_claims=extra_claims),
            refresh_token=create_refresh_token(identity=USER_ID, additional_claims=extra_claims),
        ), 200

    @app.post("/auth/refresh")
    @requires_jwt(refresh=True)
    def refresh() -> Response:
        return jsonify(access_token=create_access_token(identity=get_jwt_identity(), additional_claims=extra_claims))

    @app.delete("/auth/logout")
    @requires_jwt(refresh=True)
    def logout() -> Response:
        with lock:
            revoked.add(get_jwt()["jti"])
        return jsonify(msg="refresh token revoked")

    @app.route("/api/me", methods=["GET", "POST"])
    @requires_jwt()
    def me() -> Response:
        return jsonify(sub=get_jwt_identity(), method=request.method, body=request.get_data(as_text=True))

    @app.get("/test/counts")
    def test_counts() -> Response:
        with lock:
            return jsonify(dict(counts))

    @app.post("/test/reset")
    def test_reset() -> Response:
        with lock:
            counts.clear()
        return jsonify({})

    return app


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
