"""The development provider's OAuth wire format in-process: client authentication errors, form
bodies that are not forms, repeated parameters, error responses, redirects with a query, and a
back-channel logout whose client cannot be reached or answers."""

from __future__ import annotations

import base64
import json
import logging
import time
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from starlette.requests import Request

from bff.demo.backchannel import BACKCHANNEL_EVENT, send_backchannel_logout
from bff.demo.grants import LoginSession
from bff.demo.keys import SigningKey
from bff.demo.oauth import (
    DemoClient,
    OAuthError,
    authenticate_client,
    error_response,
    form_field,
    read_form,
    required_field,
    with_query,
)

CLIENT = DemoClient("bff app", "s3cret:with colon", backchannel_logout_uri="http://app.test/bff/backchannel")
CLIENTS = {CLIENT.client_id: CLIENT}


def request(headers: dict[str, str] | None = None, body: bytes = b"") -> Request:
    raw = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": "POST", "path": "/token", "headers": raw}, receive)


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def refused(headers: dict[str, str], form: dict[str, list[str]]) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        authenticate_client(CLIENTS, request(headers), form)
    return caught.value


def test_basic_credentials_are_form_urlencoded_inside() -> None:
    assert authenticate_client(CLIENTS, request(basic("bff+app", "s3cret%3Awith+colon")), {}) is CLIENT


def test_post_credentials() -> None:
    form = {"client_id": ["bff app"], "client_secret": ["s3cret:with colon"]}
    assert authenticate_client(CLIENTS, request(), form) is CLIENT


def test_two_authentication_methods_are_an_invalid_request() -> None:
    error = refused(basic("bff+app", "x"), {"client_secret": ["x"]})
    assert (error.error, error.description, error.status_code) == (
        "invalid_request",
        "use one client authentication method, not two",
        400,
    )


@pytest.mark.parametrize("credentials", ["not base64!", base64.b64encode(b"\xff\xfe").decode()])
def test_malformed_basic_credentials_are_invalid_client(credentials: str) -> None:
    error = refused({"authorization": "basic " + credentials}, {})
    assert (error.error, error.description, error.status_code) == ("invalid_client", "malformed Basic credentials", 401)


@pytest.mark.parametrize(
    ("headers", "form"),
    [
        (basic("bff+app", "wrong"), {}),
        (basic("nobody", "s3cret"), {}),
        ({}, {"client_id": ["bff app"]}),  # no secret at all
        ({}, {}),
    ],
)
def test_wrong_credentials_are_invalid_client(headers: dict[str, str], form: dict[str, list[str]]) -> None:
    error = refused(headers, form)
    assert (error.error, error.description, error.status_code) == (
        "invalid_client",
        "client authentication failed",
        401,
    )


def test_error_responses_are_not_cached_and_invalid_client_asks_for_basic() -> None:
    response = error_response(OAuthError("invalid_client", "client authentication failed", 401))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="dev-idp"'
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    assert json.loads(bytes(response.body)) == {
        "error": "invalid_client",
        "error_description": "client authentication failed",
    }
    other = error_response(OAuthError("invalid_grant", "code expired"))
    assert other.status_code == 400
    assert "www-authenticate" not in other.headers


async def test_only_urlencoded_utf8_bodies_are_forms() -> None:
    urlencoded = {"content-type": "Application/X-WWW-Form-Urlencoded; charset=utf-8"}
    assert await read_form(request(urlencoded, b"a=1&a=2&b=")) == {"a": ["1", "2"], "b": [""]}
    assert await read_form(request({"content-type": "application/json"}, b'{"a": 1}')) == {}
    assert await read_form(request({}, b"a=1")) == {}
    assert await read_form(request(urlencoded, b"a=\xff")) == {}
    assert await read_form(request(urlencoded, "&".join(f"p{i}=1" for i in range(101)).encode())) == {}


def test_repeated_and_missing_parameters() -> None:
    with pytest.raises(OAuthError, match="invalid_request: parameter 'code' appears more than once"):
        form_field({"code": ["a", "b"]}, "code")
    assert form_field({}, "code") is None
    with pytest.raises(OAuthError, match="invalid_request: parameter 'code' is required"):
        required_field({"code": [""]}, "code")
    assert required_field({"code": ["c"]}, "code") == "c"


def test_with_query_keeps_an_existing_query() -> None:
    assert (
        with_query("http://app.test/cb?x=1", {"code": "a b", "state": "s"}) == "http://app.test/cb?x=1&code=a+b&state=s"
    )
    assert with_query("http://app.test/cb", {"error": "access_denied"}) == "http://app.test/cb?error=access_denied"


SESSION = LoginSession(sid="sid-1", sub="alice", name="Alice", auth_time=1)


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


async def test_a_backchannel_logout_token_is_posted(key: SigningKey, caplog: pytest.LogCaptureFixture) -> None:
    posted: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(204)

    now = time.time()
    with caplog.at_level(logging.INFO, logger="bff.demo.idp"):
        await send_backchannel_logout(
            CLIENT, SESSION, issuer="http://idp.test", key=key, now=now, transport=httpx.MockTransport(answer)
        )
    assert [str(request.url) for request in posted] == ["http://app.test/bff/backchannel"]
    token = parse_qs(posted[0].content.decode())["logout_token"][0]
    assert jwt.get_unverified_header(token)["typ"] == "logout+jwt"
    claims = jwt.decode(token, jwt.PyJWK(key.public_jwk()).key, algorithms=["RS256"], audience="bff app")
    assert claims["aud"] == "bff app"
    assert claims["sid"] == "sid-1"
    assert claims["sub"] == "alice"
    assert claims["events"] == {BACKCHANNEL_EVENT: {}}
    assert claims["exp"] - claims["iat"] == 120
    assert "nonce" not in claims
    assert "Back-channel logout sent. client: 'bff app', status: 204" in caplog.text


async def test_an_unreachable_client_is_logged_not_raised(key: SigningKey, caplog: pytest.LogCaptureFixture) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with caplog.at_level(logging.WARNING, logger="bff.demo.idp"):
        await send_backchannel_logout(
            CLIENT, SESSION, issuer="http://idp.test", key=key, now=time.time(), transport=httpx.MockTransport(refuse)
        )
    assert "Back-channel logout failed. client: 'bff app', error: ConnectError" in caplog.text
