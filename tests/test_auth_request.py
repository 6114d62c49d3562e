"""`GET /bff/auth` (auth-request mode) in-process against the fake provider: each answer the edge
(nginx `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`) can get."""

from __future__ import annotations

from dataclasses import dataclass

import jwt
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bff.auth_request import build_auth_request_routes
from bff.config import RouteSettings, Settings
from bff.dpop import DPoPKey, access_token_hash
from bff.errors import ConfigError
from tests.fakes import Clock, FakeBearer, FakeIdP, settings_for
from tests.support.upstreams import make_settings
from tests.test_endpoints import CSRF, as_user, log_in, make_client

# TestClient's peer address is "testclient": trusting it stands in for the edge's address.
EDGE = {"AUTH_REQUEST": "true", "TRUSTED_PROXIES": "testclient"}
ROUTES = {
    "ROUTES__0__PATH": "/api",
    "ROUTES__0__UPSTREAM": "http://127.0.0.1:9/v1",
    "ROUTES__0__TOKEN": "user",
    "ROUTES__0__STRIP_PREFIX": "true",
    "ROUTES__1__PATH": "/public",
    "ROUTES__1__UPSTREAM": "http://127.0.0.1:9",
    "ROUTES__1__TOKEN": "none",
}


def edge_client(idp: FakeIdP, clock: Clock, **environ: str) -> TestClient:
    return make_client(idp, clock, None, **{**EDGE, **ROUTES, **environ})


def asked(uri: str, method: str = "GET", **headers: str) -> dict[str, str]:
    return {"x-forwarded-uri": uri, "x-forwarded-method": method, **headers}


def test_signed_in_call_gets_the_sessions_bearer_token(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock) as client:
        cookie = log_in(client, idp)
        response = client.get("/bff/auth", headers=as_user(cookie, **asked("/api/items?x=1", "POST"), **CSRF))
    assert response.status_code == 200, response.text
    assert response.headers["authorization"].startswith("Bearer at-")
    assert response.headers["cache-control"] == "no-store"
    assert response.content == b""


def test_nginx_header_names_work_too(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock) as client:
        cookie = log_in(client, idp)
        headers = as_user(cookie, **{"x-original-uri": "/api/items", "x-original-method": "GET"}, **CSRF)
        response = client.get("/bff/auth", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["authorization"].startswith("Bearer at-")


def test_without_a_session_is_401_json(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock) as client:
        response = client.get("/bff/auth", headers=asked("/api/items", **CSRF))
    assert response.status_code == 401
    assert response.json() == {"error": "not_authenticated", "detail": "this route needs a signed-in user"}
    assert response.headers["cache-control"] == "no-store"
    assert "authorization" not in response.headers


def test_without_the_anti_forgery_header_is_403(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock) as client:
        cookie = log_in(client, idp)
        response = client.get("/bff/auth", headers=as_user(cookie, **asked("/api/items")))
    assert response.status_code == 403
    assert response.json() == {"error": "csrf_rejected", "detail": "header 'X-CSRF' must be '1'"}
    assert "authorization" not in response.headers


def test_route_with_csrf_off_needs_no_header(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock, ROUTES__0__CSRF="false") as client:
        cookie = log_in(client, idp)
        response = client.get("/bff/auth", headers=as_user(cookie, **asked("/api/items")))
    assert response.status_code == 200, response.text
    assert response.headers["authorization"].startswith("Bearer at-")


def test_token_none_route_is_200_without_authorization(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock) as client:
        response = client.get("/bff/auth", headers=asked("/public/page", **CSRF))
    assert response.status_code == 200
    assert "authorization" not in response.headers
    assert response.headers["cache-control"] == "no-store"


def test_no_matching_route_is_404(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock) as client:
        response = client.get("/bff/auth", headers=asked("/apiary", **CSRF))
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "no route matches '/apiary'"}


def test_no_forwarded_uri_is_404(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock) as client:
        response = client.get("/bff/auth", headers={"x-forwarded-method": "GET", **CSRF})
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "detail": "no X-Forwarded-Uri or X-Original-URI: which route is asked for?",
    }


def test_no_forwarded_method_is_400(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock) as client:
        response = client.get("/bff/auth", headers={"x-forwarded-uri": "/api/items", **CSRF})
    assert response.status_code == 400
    assert response.json() == {
        "error": "bad_request",
        "detail": "no X-Forwarded-Method or X-Original-Method: the original method is needed",
    }


def test_dot_segments_in_the_forwarded_uri_are_refused(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock) as client:
        response = client.get("/bff/auth", headers=asked("/public/../api/items", **CSRF))
    assert response.status_code == 400
    assert response.json() == {"error": "bad_request", "detail": "'.' or '..' segment in path"}


def test_off_by_default(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock, AUTH_REQUEST="false") as client:
        cookie = log_in(client, idp)
        response = client.get("/bff/auth", headers=as_user(cookie, **asked("/api/items"), **CSRF))
    assert response.status_code == 404
    assert response.json() == {
        "error": "not_available",
        "detail": "the auth-request endpoint needs auth_request = true",
    }
    assert "authorization" not in response.headers


def test_untrusted_peer_is_refused(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock, TRUSTED_PROXIES="127.0.0.1") as client:
        cookie = log_in(client, idp)
        response = client.get("/bff/auth", headers=as_user(cookie, **asked("/api/items"), **CSRF))
    assert response.status_code == 403
    assert response.json() == {
        "error": "peer_rejected",
        "detail": "the auth-request endpoint answers only trusted_proxies",
    }
    assert "authorization" not in response.headers


def test_due_token_is_refreshed_before_the_answer(idp: FakeIdP, clock: Clock) -> None:
    with edge_client(idp, clock) as client:
        cookie = log_in(client, idp)
        headers = as_user(cookie, **asked("/api/items"), **CSRF)
        first = client.get("/bff/auth", headers=headers).headers["authorization"]
        clock.advance(idp.access_ttl)
        second = client.get("/bff/auth", headers=headers)
    assert second.status_code == 200
    assert second.headers["authorization"] != first
    assert idp.calls["/token"] == 2  # the code exchange, one refresh


def test_cookie_mode_is_refused_at_start() -> None:
    """Caddy's forward_auth drops a 200 answer's Set-Cookie (tests/deployment/test_auth_request_edges.py
    shows it) and nginx keeps only the first: a refresh's resealed cookie would be lost."""
    with pytest.raises(ConfigError) as refused:
        settings_for(**EDGE, **ROUTES, TOKEN_STORAGE="cookie")
    assert refused.value.problems == [
        'auth_request: needs token_storage = "server" (edges drop the auth answer\'s Set-Cookie)'
    ]


@dataclass(frozen=True)
class EdgeParts:
    settings: Settings
    tokens: FakeBearer


def test_dpop_token_comes_with_a_proof_for_the_original_method_and_upstream_url() -> None:
    key = DPoPKey.generate()
    route = RouteSettings(path="/api", upstream="http://127.0.0.1:9/v1", token="user", strip_prefix=True)
    settings = make_settings(route, auth_request=True, trusted_proxies=("testclient",))
    tokens = FakeBearer(first="at-dpop", dpop_key=key.private_jwk())
    app = Starlette(routes=build_auth_request_routes(EdgeParts(settings, tokens)))
    with TestClient(app) as client:
        response = client.get("/bff/auth", headers=asked("/api/items?page=2", "put", **CSRF))
    assert response.status_code == 200, response.text
    assert response.headers["authorization"] == "DPoP at-dpop"
    assert response.headers.get_list("set-cookie") == []  # server mode: the cookie only names the record
    claims = jwt.decode(response.headers["dpop"], options={"verify_signature": False})
    assert (claims["htm"], claims["htu"], claims["ath"]) == (
        "PUT",
        "http://127.0.0.1:9/v1/items",
        access_token_hash("at-dpop"),
    )
