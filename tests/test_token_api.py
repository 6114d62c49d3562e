"""The token-API login source: its pure builders and parsers, then TokenAPIClient against the fake API."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

import httpx
import jwt
import pytest

from bff.config import TokenAPISettings
from bff.errors import IdPError, InvalidCredentials, ProviderUnavailable, RefreshRejected, TooManyRequests
from bff.login import LoginSource
from bff.token_api import (
    TokenAPIClient,
    build_login_request,
    build_logout_request,
    build_refresh_request,
    build_userinfo_request,
    field,
    login_claims,
    parse_login_response,
    parse_refresh_response,
    parse_userinfo_response,
)
from bff.tokenset import TokenSet
from tests.fakes import TOKEN_API, TOKEN_API_KEY, Clock, FakeTokenAPI, holding, token_api_settings

NOW = 1_000_000.0
# What a careless API might put into an error body; it must never reach a message.
LEAKED = "eyJleGFtcGxl.leaked-token.c2lnbmF0dXJl"


def default_settings(**overrides: Any) -> TokenAPISettings:
    """The `[token_api]` defaults: `access_token`, `refresh_token`, `expires_in`, `sub`."""
    base: dict[str, Any] = {"login_url": f"{TOKEN_API}/login", "refresh_url": f"{TOKEN_API}/refresh"}
    return TokenAPISettings(**{**base, **overrides})


def answer(status: int, body: Any = None, *, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("POST", f"{TOKEN_API}/any")
    if body is None:
        return httpx.Response(status, headers=headers, request=request)
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


def a_jwt(**claims: Any) -> str:
    return jwt.encode(claims, TOKEN_API_KEY, algorithm="HS256")


def form_of(request: httpx.Request) -> dict[str, list[str]]:
    return parse_qs(request.content.decode())


def login(response: httpx.Response, config: TokenAPISettings | None = None) -> TokenSet:
    return parse_login_response(response, config or default_settings(), now=NOW, retry_after=7)


def refresh(response: httpx.Response, config: TokenAPISettings | None = None) -> TokenSet:
    return parse_refresh_response(response, config or default_settings(), now=NOW, retry_after=7)


# -- field ----------------------------------------------------------------------------------------


def test_field_follows_dotted_paths_and_is_none_when_a_step_is_missing() -> None:
    data = {"access_token": "a", "data": {"tokens": {"access": "b"}, "list": [1]}, "n": None}
    assert field(data, "access_token") == "a"
    assert field(data, "data.tokens.access") == "b"
    assert field(data, "data.tokens") == {"access": "b"}
    assert field(data, "data.missing") is None
    assert field(data, "data.list.0") is None
    assert field(data, "access_token.deeper") is None
    assert field(data, "n") is None
    assert field(["not", "an", "object"], "access_token") is None


# -- login ----------------------------------------------------------------------------------------


def test_login_request_posts_the_spa_body_as_is_with_the_client_address() -> None:
    body = b'{"username": "alice",  "password": "p\\u00e4ss", "otp": 123}'
    request = build_login_request(default_settings(), body, client_ip="203.0.113.9")
    assert (request.method, str(request.url)) == ("POST", f"{TOKEN_API}/login")
    assert request.content == body
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/json"
    assert request.headers["x-forwarded-for"] == "203.0.113.9"
    assert "authorization" not in request.headers


def test_login_request_without_a_client_address_has_no_forwarded_for() -> None:
    request = build_login_request(default_settings(), b"{}", client_ip=None)
    assert "x-forwarded-for" not in request.headers


def test_login_answer_with_expires_in_sets_the_expiry_from_now() -> None:
    tokens = login(answer(200, {"access_token": "opaque-at", "refresh_token": "rt-1", "expires_in": 60}))
    assert tokens == TokenSet(access_token="opaque-at", refresh_token="rt-1", expires_at=NOW + 60)


def test_login_answer_with_expires_in_as_a_digit_string() -> None:
    tokens = login(answer(201, {"access_token": "opaque-at", "expires_in": "90"}))
    assert tokens.expires_at == NOW + 90
    assert tokens.refresh_token is None


def test_login_answer_without_expires_in_takes_the_jwt_exp() -> None:
    tokens = login(answer(200, {"access_token": a_jwt(exp=1_000_500), "refresh_token": "rt"}))
    assert tokens.expires_at == 1_000_500


@pytest.mark.parametrize("expires_in", ["soon", "-5", "²", True, None, [60]])
def test_login_answer_with_an_unusable_expires_in_falls_back_to_the_jwt_exp(expires_in: Any) -> None:
    tokens = login(answer(200, {"access_token": a_jwt(exp=1_000_500), "expires_in": expires_in}))
    assert tokens.expires_at == 1_000_500


def test_login_answer_with_an_opaque_token_and_no_expires_in_has_no_expiry() -> None:
    assert login(answer(200, {"access_token": "opaque"})).expires_at is None


def test_login_answer_at_configured_dotted_paths() -> None:
    config = default_settings(
        access_token_field="data.access",
        refresh_token_field="data.refresh",
        expires_in_field="data.ttl",
    )
    body = {"data": {"access": "at-9", "refresh": "rt-9", "ttl": 30}, "access_token": "not-this-one"}
    assert login(answer(200, body), config) == TokenSet(access_token="at-9", refresh_token="rt-9", expires_at=NOW + 30)


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_refused_credentials_are_invalid_credentials_without_the_upstream_body(status: int) -> None:
    body = {"detail": "wrong password 'hunter2'", "access_token": LEAKED, "token": LEAKED}
    with pytest.raises(InvalidCredentials) as info:
        login(answer(status, body))
    assert type(info.value) is InvalidCredentials
    assert (info.value.status_code, info.value.code) == (401, "invalid_credentials")
    assert str(info.value) == "the login API refused the credentials"
    assert LEAKED not in str(info.value)
    assert LEAKED.encode() not in info.value.body()
    assert b"hunter2" not in info.value.body()


def test_throttled_login_is_too_many_requests_with_the_api_retry_after() -> None:
    with pytest.raises(TooManyRequests) as info:
        login(answer(429, {"detail": f"slow down {LEAKED}"}, headers={"retry-after": "30"}))
    assert type(info.value) is TooManyRequests
    assert (info.value.status_code, info.value.code) == (429, "too_many_requests")
    assert info.value.headers == [("retry-after", "30")]
    assert LEAKED.encode() not in info.value.body()


@pytest.mark.parametrize("retry_after", [None, "Wed, 21 Oct 2015 07:28:00 GMT", "soon"])
def test_throttled_login_without_a_seconds_retry_after_has_none(retry_after: str | None) -> None:
    headers = None if retry_after is None else {"retry-after": retry_after}
    with pytest.raises(TooManyRequests) as info:
        login(answer(429, headers=headers))
    assert info.value.headers == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_login_during_api_5xx_is_provider_unavailable(status: int) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        login(answer(status, f"<html>{LEAKED}</html>"))
    assert (info.value.status_code, info.value.code, info.value.status) == (503, "provider_unavailable", status)
    assert info.value.headers == [("retry-after", "7")]
    assert str(info.value) == f"token_api.login_url answered {status}"


def test_login_during_api_503_keeps_the_api_retry_after() -> None:
    with pytest.raises(ProviderUnavailable) as info:
        login(answer(503, headers={"retry-after": "120"}))
    assert info.value.headers == [("retry-after", "120")]


@pytest.mark.parametrize("status", [202, 204, 302, 404, 405, 418])
def test_login_with_another_status_is_idp_error(status: int) -> None:
    with pytest.raises(IdPError) as info:
        login(answer(status, {"access_token": LEAKED}))
    assert type(info.value) is IdPError
    assert (info.value.status_code, info.value.code, info.value.status) == (502, "idp_error", status)
    assert str(info.value) == f"token_api.login_url answered {status}, expected 200 or 201"


@pytest.mark.parametrize(
    "body", [{}, {"access_token": ""}, {"access_token": 42}, {"access_token": None}, {"access": LEAKED}]
)
def test_login_answer_without_a_usable_access_token_is_idp_error_naming_the_field(body: dict[str, Any]) -> None:
    with pytest.raises(IdPError) as info:
        login(answer(200, body))
    assert type(info.value) is IdPError
    assert str(info.value) == 'the login answer has no "access_token" (token_api.access_token_field)'
    assert info.value.status == 200


@pytest.mark.parametrize("body", [f"<html>{LEAKED}</html>", [LEAKED], "null"])
def test_login_answer_that_is_not_a_json_object_is_idp_error(body: Any) -> None:
    with pytest.raises(IdPError) as info:
        login(answer(200, body))
    assert type(info.value) is IdPError
    assert str(info.value) == "token_api.login_url answered 200 without a JSON object"


# -- refresh --------------------------------------------------------------------------------------


def test_refresh_request_with_the_token_in_a_json_field() -> None:
    request = build_refresh_request(default_settings(refresh_token_param="refresh"), "rt-1")
    assert (request.method, str(request.url)) == ("POST", f"{TOKEN_API}/refresh")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"refresh": "rt-1"}
    assert "authorization" not in request.headers


def test_refresh_request_with_the_token_in_a_form_field() -> None:
    request = build_refresh_request(default_settings(refresh_token_in="form"), "rt-1")
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert form_of(request) == {"refresh_token": ["rt-1"]}


def test_refresh_request_with_the_token_as_bearer_has_no_body() -> None:
    request = build_refresh_request(default_settings(refresh_token_in="bearer"), "rt-1")
    assert request.method == "POST"
    assert request.headers["authorization"] == "Bearer rt-1"
    assert request.content == b""
    assert "content-type" not in request.headers


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_refused_refresh_token_is_refresh_rejected_without_the_upstream_body(status: int) -> None:
    with pytest.raises(RefreshRejected) as info:
        refresh(answer(status, {"detail": "Token is blacklisted", "token": LEAKED}))
    assert type(info.value) is RefreshRejected
    assert (info.value.status_code, info.value.code) == (401, "session_expired")
    assert (info.value.error, info.value.status) == ("invalid_grant", status)
    assert str(info.value) == "the refresh API refused the refresh token"
    assert LEAKED.encode() not in info.value.body()
    assert info.value.error_description == ""


def test_throttled_refresh_is_provider_unavailable_with_the_api_retry_after() -> None:
    with pytest.raises(ProviderUnavailable) as info:
        refresh(answer(429, {"token": LEAKED}, headers={"retry-after": "42"}))
    assert type(info.value) is ProviderUnavailable
    assert (info.value.status_code, info.value.status) == (503, 429)
    assert info.value.headers == [("retry-after", "42")]
    assert LEAKED.encode() not in info.value.body()


def test_throttled_refresh_without_retry_after_uses_the_configured_one() -> None:
    with pytest.raises(ProviderUnavailable) as info:
        refresh(answer(429))
    assert info.value.headers == [("retry-after", "7")]


@pytest.mark.parametrize("status", [500, 503])
def test_refresh_during_api_5xx_is_provider_unavailable(status: int) -> None:
    with pytest.raises(ProviderUnavailable) as info:
        refresh(answer(status, LEAKED))
    assert (info.value.status_code, info.value.status) == (503, status)
    assert info.value.headers == [("retry-after", "7")]
    assert str(info.value) == f"token_api.refresh_url answered {status}"


def test_refresh_with_another_status_or_no_access_token_is_idp_error() -> None:
    with pytest.raises(IdPError) as info:
        refresh(answer(404))
    assert type(info.value) is IdPError
    assert str(info.value) == "token_api.refresh_url answered 404, expected 200 or 201"
    with pytest.raises(IdPError) as info:
        refresh(answer(200, {"refresh_token": LEAKED}))
    assert type(info.value) is IdPError
    assert str(info.value) == 'the refresh answer has no "access_token" (token_api.access_token_field)'


def test_refresh_answer_takes_expires_in_or_the_jwt_exp() -> None:
    assert refresh(answer(200, {"access_token": "at", "expires_in": 15})).expires_at == NOW + 15
    assert refresh(answer(200, {"access_token": a_jwt(exp=1_000_777)})).expires_at == 1_000_777


def test_rotation_auto_takes_a_new_refresh_token_when_there_is_one() -> None:
    config = default_settings(rotation="auto")
    assert refresh(answer(200, {"access_token": "at", "refresh_token": "rt-2"}), config).refresh_token == "rt-2"
    # None: TokenSet.merged_with keeps the old refresh token.
    assert refresh(answer(200, {"access_token": "at"}), config).refresh_token is None
    assert refresh(answer(200, {"access_token": "at", "refresh_token": ""}), config).refresh_token is None


def test_rotation_always_refuses_an_answer_without_a_refresh_token() -> None:
    config = default_settings(rotation="always", refresh_token_field="refresh")
    assert refresh(answer(200, {"access_token": "at", "refresh": "rt-2"}), config).refresh_token == "rt-2"
    with pytest.raises(IdPError) as info:
        refresh(answer(200, {"access_token": "at"}), config)
    assert type(info.value) is IdPError
    assert str(info.value) == 'the refresh answer has no "refresh" (token_api.rotation is "always")'


def test_rotation_never_ignores_a_refresh_token_in_the_answer() -> None:
    config = default_settings(rotation="never")
    assert refresh(answer(200, {"access_token": "at", "refresh_token": "rt-2"}), config).refresh_token is None


# -- logout ---------------------------------------------------------------------------------------


def test_no_logout_request_without_a_logout_url_or_a_refresh_token() -> None:
    tokens = TokenSet(access_token="at", refresh_token="rt")
    assert build_logout_request(default_settings(), tokens) is None
    config = default_settings(logout_url=f"{TOKEN_API}/logout")
    assert build_logout_request(config, TokenSet(access_token="at")) is None


def test_logout_request_with_the_token_in_a_json_field() -> None:
    config = default_settings(logout_url=f"{TOKEN_API}/logout", refresh_token_param="refresh")
    request = build_logout_request(config, TokenSet(access_token="at", refresh_token="rt-1"))
    assert request is not None
    assert (request.method, str(request.url)) == ("POST", f"{TOKEN_API}/logout")
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"refresh": "rt-1"}


def test_logout_request_with_delete_and_a_form_field() -> None:
    config = default_settings(logout_url=f"{TOKEN_API}/logout", logout_method="DELETE", logout_token_in="form")
    request = build_logout_request(config, TokenSet(access_token="at", refresh_token="rt-1"))
    assert request is not None
    assert request.method == "DELETE"
    assert form_of(request) == {"refresh_token": ["rt-1"]}


def test_logout_request_with_the_refresh_token_as_bearer() -> None:
    config = default_settings(logout_url=f"{TOKEN_API}/logout", logout_token_in="bearer", refresh_token_in="json")
    request = build_logout_request(config, TokenSet(access_token="at", refresh_token="rt-1"))
    assert request is not None
    assert request.headers["authorization"] == "Bearer rt-1"
    assert request.content == b""


# -- userinfo and claims --------------------------------------------------------------------------


def test_userinfo_request_only_with_a_userinfo_url() -> None:
    assert build_userinfo_request(default_settings(), "at") is None
    request = build_userinfo_request(default_settings(userinfo_url=f"{TOKEN_API}/me"), "at-1")
    assert request is not None
    assert (request.method, str(request.url)) == ("GET", f"{TOKEN_API}/me")
    assert request.headers["authorization"] == "Bearer at-1"
    assert request.content == b""


def test_userinfo_answer_is_its_json_object() -> None:
    assert parse_userinfo_response(answer(200, {"id": 7, "email": "a@example.com"})) == {
        "id": 7,
        "email": "a@example.com",
    }


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (answer(200, [1, 2]), "token_api.userinfo_url answered without a JSON object"),
        (answer(200, "<html>"), "token_api.userinfo_url answered without a JSON object"),
        (answer(401, {"token": LEAKED}), "token_api.userinfo_url answered 401, expected 200"),
    ],
)
def test_userinfo_answer_that_is_no_object_is_idp_error(response: httpx.Response, message: str) -> None:
    with pytest.raises(IdPError) as info:
        parse_userinfo_response(response)
    assert type(info.value) is IdPError
    assert str(info.value) == message


def test_userinfo_during_api_5xx_is_provider_unavailable() -> None:
    with pytest.raises(ProviderUnavailable) as info:
        parse_userinfo_response(answer(502, LEAKED), retry_after=9)
    assert (info.value.status_code, info.value.status) == (503, 502)
    assert info.value.headers == [("retry-after", "9")]


def test_login_claims_from_the_access_token_without_its_bookkeeping() -> None:
    token = a_jwt(token_type="access", exp=1, iat=0, nbf=0, jti="j-1", user_id=42, username="alice", roles=["a"])
    user_id, claims = login_claims(default_settings(user_id_claim="user_id"), TokenSet(access_token=token), None)
    assert user_id == "42"
    assert claims == {"user_id": 42, "username": "alice", "roles": ["a"]}


def test_login_claims_from_userinfo_take_the_id_from_it() -> None:
    tokens = TokenSet(access_token=a_jwt(sub="from-the-token"))
    user_id, claims = login_claims(default_settings(), tokens, {"sub": "u-7", "exp": 5, "name": "Alice"})
    assert (user_id, claims) == ("u-7", {"sub": "u-7", "exp": 5, "name": "Alice"})


@pytest.mark.parametrize("value", [None, "", True, 1.5, {"id": 1}])
def test_login_claims_without_a_usable_user_id_is_idp_error_naming_the_claim(value: Any) -> None:
    claims = {} if value is None else {"user_id": value}
    config = default_settings(user_id_claim="user_id")
    with pytest.raises(IdPError) as info:
        login_claims(config, TokenSet(access_token=a_jwt(**claims)), None)
    assert str(info.value) == 'the access token has no "user_id" claim (token_api.user_id_claim)'
    with pytest.raises(IdPError) as info:
        login_claims(config, TokenSet(access_token="opaque"), claims)
    assert str(info.value) == 'the userinfo answer has no "user_id" claim (token_api.user_id_claim)'


def test_login_claims_of_an_opaque_token_need_a_userinfo_url() -> None:
    with pytest.raises(IdPError) as info:
        login_claims(default_settings(), TokenSet(access_token="opaque"), None)
    assert str(info.value) == "the access token is not a JWT: set token_api.userinfo_url to learn who logged in"


# -- TokenAPIClient against the fake API ----------------------------------------------------------


@pytest.fixture
def api(clock: Clock) -> FakeTokenAPI:
    return FakeTokenAPI(clock=clock)


def make_client(api: FakeTokenAPI, clock: Clock, **overrides: Any) -> TokenAPIClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(api))
    return TokenAPIClient(http, token_api_settings(**overrides), clock=clock)


CREDENTIALS = b'{"username": "alice", "password": "wonderland"}'


def test_client_is_a_login_source_with_the_configured_skew_and_timeout(api: FakeTokenAPI, clock: Clock) -> None:
    source: LoginSource = make_client(api, clock, refresh_skew=12, timeout=3)
    assert (source.refresh_skew, source.timeout) == (12, 3)


async def test_login_returns_the_user_and_tokens(api: FakeTokenAPI, clock: Clock) -> None:
    result = await make_client(api, clock).login(CREDENTIALS, client_ip="198.51.100.4")
    assert (result.sub, result.provider_sid) == ("42", None)
    assert result.claims == {"user_id": 42, "username": "alice"}
    assert result.tokens.refresh_token in api.refresh_tokens
    assert result.tokens.expires_at == clock() + api.access_ttl
    assert api.calls == {"/api/token/": 1}
    assert api.requests[0].content == CREDENTIALS
    assert api.requests[0].headers["x-forwarded-for"] == "198.51.100.4"


async def test_login_with_a_userinfo_url_shows_its_claims(api: FakeTokenAPI, clock: Clock) -> None:
    client = make_client(api, clock, userinfo_url=f"{TOKEN_API}/api/me/", user_id_claim="id")
    result = await client.login(CREDENTIALS, client_ip=None)
    assert (result.sub, result.claims) == ("42", {"id": 42, "username": "alice"})
    assert api.calls == {"/api/token/": 1, "/api/me/": 1}


async def test_login_with_a_wrong_password_is_invalid_credentials(api: FakeTokenAPI, clock: Clock) -> None:
    with pytest.raises(InvalidCredentials) as info:
        await make_client(api, clock).login(b'{"username": "alice", "password": "guess"}', client_ip=None)
    assert info.value.status_code == 401
    assert api.refresh_tokens == {}


async def test_throttled_login_passes_the_api_retry_after_on(api: FakeTokenAPI, clock: Clock) -> None:
    api.status["/api/token/"] = 429
    api.status_headers["retry-after"] = "60"
    with pytest.raises(TooManyRequests) as info:
        await make_client(api, clock).login(CREDENTIALS, client_ip=None)
    assert info.value.headers == [("retry-after", "60")]


async def test_unreachable_api_at_login_is_provider_unavailable(api: FakeTokenAPI, clock: Clock) -> None:
    api.unreachable = True
    with pytest.raises(ProviderUnavailable) as info:
        await make_client(api, clock, retry_after=4).login(CREDENTIALS, client_ip=None)
    assert (info.value.status_code, info.value.code) == (503, "provider_unavailable")
    assert str(info.value) == "token API unreachable at api.example: ConnectError"
    assert info.value.headers == [("retry-after", "4")]


async def test_refresh_rotates_and_a_used_refresh_token_is_rejected(api: FakeTokenAPI, clock: Clock) -> None:
    client = make_client(api, clock)
    old = api.issue_refresh_token()
    clock.advance(100)
    tokens = await client.refresh(holding(old))
    assert tokens.refresh_token in api.refresh_tokens
    assert tokens.expires_at == clock() + api.access_ttl
    with pytest.raises(RefreshRejected) as info:
        await client.refresh(holding(old))
    assert (info.value.error, info.value.status) == ("invalid_grant", 401)
    assert api.calls["/api/token/refresh/"] == 2


async def test_refresh_without_rotation_keeps_the_old_refresh_token(clock: Clock) -> None:
    api = FakeTokenAPI(clock=clock, rotate_refresh_tokens=False)
    client = make_client(api, clock)
    first = TokenSet(access_token="at-0", refresh_token=api.issue_refresh_token())
    newer = await client.refresh(first)
    assert newer.refresh_token is None
    merged = first.merged_with(newer)
    assert merged.refresh_token == first.refresh_token
    assert (await client.refresh(merged)).refresh_token is None


async def test_rotation_always_against_an_api_that_does_not_rotate_is_idp_error(clock: Clock) -> None:
    api = FakeTokenAPI(clock=clock, rotate_refresh_tokens=False)
    with pytest.raises(IdPError) as info:
        await make_client(api, clock, rotation="always").refresh(holding(api.issue_refresh_token()))
    assert type(info.value) is IdPError


@pytest.mark.parametrize("placement", ["json", "form", "bearer"])
async def test_refresh_and_logout_reach_the_api_with_each_placement(
    api: FakeTokenAPI, clock: Clock, placement: str
) -> None:
    client = make_client(api, clock, refresh_token_in=placement, logout_token_in=placement)
    tokens = await client.refresh(holding(api.issue_refresh_token()))
    assert tokens.refresh_token is not None
    assert await client.end(tokens) is None
    assert api.blacklisted == [tokens.refresh_token]


async def test_logout_blacklists_the_refresh_token_so_it_cannot_refresh(api: FakeTokenAPI, clock: Clock) -> None:
    client = make_client(api, clock)
    result = await client.login(CREDENTIALS, client_ip=None)
    assert await client.end(result.tokens) is None
    assert api.calls["/api/token/blacklist/"] == 1
    with pytest.raises(RefreshRejected):
        await client.refresh(result.tokens)


async def test_logout_without_a_logout_url_calls_nothing(api: FakeTokenAPI, clock: Clock) -> None:
    client = make_client(api, clock, logout_url=None)
    assert await client.end(TokenSet(access_token="at", refresh_token=api.issue_refresh_token())) is None
    assert api.calls == {}


async def test_failed_logout_is_logged_without_the_token_and_not_raised(
    api: FakeTokenAPI, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(api, clock)
    token = api.issue_refresh_token()
    api.status["/api/token/blacklist/"] = 500
    with caplog.at_level(logging.WARNING, logger="bff.token_api"):
        assert await client.end(TokenSet(access_token="at", refresh_token=token)) is None
    assert [record.getMessage() for record in caplog.records] == ["Token-API logout failed. status: 500"]
    assert token not in caplog.text


async def test_logout_with_an_unreachable_api_is_logged_and_not_raised(
    api: FakeTokenAPI, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    api.unreachable = True
    with caplog.at_level(logging.WARNING, logger="bff.token_api"):
        tokens = TokenSet(access_token="at", refresh_token="rt-secret")
        assert await make_client(api, clock).end(tokens) is None
    assert [record.getMessage() for record in caplog.records] == [
        "Token-API logout failed. error: 'token API unreachable at api.example: ConnectError'"
    ]
    assert "rt-secret" not in caplog.text


async def test_ready_sends_options_to_the_refresh_url(api: FakeTokenAPI, clock: Clock) -> None:
    await make_client(api, clock).ready()
    assert api.calls == {"/api/token/refresh/": 1}
    assert api.requests[0].method == "OPTIONS"


async def test_ready_accepts_any_answer_below_500(api: FakeTokenAPI, clock: Clock) -> None:
    api.status["/api/token/refresh/"] = 405
    await make_client(api, clock).ready()


async def test_ready_with_an_api_5xx_or_unreachable_is_provider_unavailable(api: FakeTokenAPI, clock: Clock) -> None:
    client = make_client(api, clock)
    api.status["/api/token/refresh/"] = 502
    with pytest.raises(ProviderUnavailable) as info:
        await client.ready()
    assert (str(info.value), info.value.status) == ("token API at api.example answered 502", 502)
    api.unreachable = True
    with pytest.raises(ProviderUnavailable) as info:
        await client.ready()
    assert str(info.value) == "token API unreachable at api.example: ConnectError"
