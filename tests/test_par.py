"""Pushed authorization requests (RFC 9126): when to push, the push, its answer, the redirect,
and `OIDCClient.authorization_url` against a fake provider that lists a PAR endpoint."""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.datastructures import Secret

from bff.client_auth import ClientAuthentication
from bff.discovery import ProviderMetadata
from bff.errors import IdPError, ProviderUnavailable
from bff.oidc import OIDCClient
from bff.oidc_messages import new_login_request
from bff.par import PushedAuthorization, build_par_request, parse_par_response, pushed_authorization_url, should_push
from tests.fakes import CLIENT_ID, CLIENT_SECRET, ISSUER, Clock, FakeIdP, settings_for

PROVIDER = ProviderMetadata(
    issuer=ISSUER,
    authorization_endpoint=f"{ISSUER}/authorize",
    token_endpoint=f"{ISSUER}/token",
    jwks_uri=f"{ISSUER}/jwks",
    pushed_authorization_request_endpoint=f"{ISSUER}/par",
)
UNLISTED = dataclasses.replace(PROVIDER, pushed_authorization_request_endpoint=None)
REQUIRING = dataclasses.replace(PROVIDER, require_pushed_authorization_requests=True)
REQUEST_URI = "urn:ietf:params:oauth:request_uri:abc"


def form_of(request: httpx.Request) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(request.content.decode()).items()}


@pytest.mark.parametrize(
    ("provider", "mode", "pushes"),
    [
        (PROVIDER, "auto", True),
        (UNLISTED, "auto", False),
        (PROVIDER, "required", True),
        (PROVIDER, "off", False),
        (REQUIRING, "auto", True),
    ],
)
def test_when_to_push(provider: ProviderMetadata, mode: PushedAuthorization, *, pushes: bool) -> None:
    assert should_push(provider, mode) is pushes


@pytest.mark.parametrize(
    ("provider", "mode", "detail"),
    [
        (
            UNLISTED,
            "required",
            'the provider lists no "pushed_authorization_request_endpoint" but pushed authorization requests'
            " are required (oidc.pushed_authorization)",
        ),
        (
            dataclasses.replace(UNLISTED, require_pushed_authorization_requests=True),
            "auto",
            'the provider lists no "pushed_authorization_request_endpoint" but pushed authorization requests'
            " are required (by the provider)",
        ),
        (
            REQUIRING,
            "off",
            'the provider requires pushed authorization requests ("require_pushed_authorization_requests")'
            ' but oidc.pushed_authorization is "off"',
        ),
    ],
)
def test_a_setting_the_provider_cannot_meet_is_a_502(
    provider: ProviderMetadata, mode: PushedAuthorization, detail: str
) -> None:
    with pytest.raises(IdPError) as info:
        should_push(provider, mode)
    assert (info.value.status_code, info.value.code, info.value.detail) == (502, "idp_error", detail)


def test_the_push_is_the_parameters_with_the_client_authentication() -> None:
    auth = ClientAuthentication(client_id="bff", method="client_secret_post", client_secret=Secret("s3cret"))
    request = build_par_request(PROVIDER, auth, {"state": "s", "scope": "openid"})
    assert (request.method, str(request.url)) == ("POST", f"{ISSUER}/par")
    assert form_of(request) == {"state": "s", "scope": "openid", "client_id": "bff", "client_secret": "s3cret"}


def test_the_redirect_carries_client_id_and_request_uri_only() -> None:
    url = pushed_authorization_url(PROVIDER, "bff", REQUEST_URI)
    assert url == f"{ISSUER}/authorize?client_id=bff&request_uri=urn%3Aietf%3Aparams%3Aoauth%3Arequest_uri%3Aabc"


def test_a_201_answer_gives_its_request_uri() -> None:
    response = httpx.Response(201, json={"request_uri": REQUEST_URI, "expires_in": 60})
    assert parse_par_response(response, retry_after=5) == REQUEST_URI


def test_a_4xx_answer_is_a_502_naming_the_providers_error() -> None:
    response = httpx.Response(
        401, json={"error": "invalid_client", "error_description": "client authentication failed"}
    )
    with pytest.raises(IdPError) as info:
        parse_par_response(response, retry_after=5)
    assert (info.value.status_code, info.value.error, info.value.detail) == (
        502,
        "invalid_client",
        "pushed authorization request endpoint answered 401 'invalid_client'",
    )


@pytest.mark.parametrize(
    "response",
    [httpx.Response(201, json={"expires_in": 60}), httpx.Response(201, text="<html>"), httpx.Response(200, json={})],
)
def test_an_answer_without_request_uri_is_a_502(response: httpx.Response) -> None:
    with pytest.raises(IdPError) as info:
        parse_par_response(response, retry_after=5)
    assert info.value.status_code == 502


def test_a_5xx_answer_is_provider_unavailable_with_retry_after() -> None:
    with pytest.raises(ProviderUnavailable) as info:
        parse_par_response(httpx.Response(503, text="down"), retry_after=7)
    assert (info.value.status_code, info.value.headers) == (503, [("retry-after", "7")])


class ParIdP:
    """The fake provider, plus a PAR endpoint that keeps what was pushed."""

    def __init__(self, idp: FakeIdP, par_status: int = 201) -> None:
        self.idp = idp
        self.par_status = par_status
        self.pushed: list[dict[str, str]] = []
        idp.discovery_overrides["pushed_authorization_request_endpoint"] = f"{ISSUER}/par"

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/par":
            return await self.idp(request)
        self.pushed.append(form_of(request))
        if self.par_status != 201:
            return httpx.Response(self.par_status, json={"error": "invalid_request"})
        return httpx.Response(201, json={"request_uri": REQUEST_URI, "expires_in": 60})


def client_for(par: ParIdP, clock: Clock, **environ: str) -> OIDCClient:
    return OIDCClient(httpx.AsyncClient(transport=httpx.MockTransport(par)), settings_for(**environ), clock=clock)


async def test_auto_pushes_exactly_the_parameters_the_url_would_carry(idp: FakeIdP, clock: Clock) -> None:
    par = ParIdP(idp)
    login = new_login_request("/after")
    pushed_url = await client_for(par, clock, OIDC__TOKEN_ENDPOINT_AUTH_METHOD="client_secret_post").authorization_url(
        login
    )
    plain_url = await client_for(par, clock, OIDC__PUSHED_AUTHORIZATION="off").authorization_url(login)
    plain = {name: values[0] for name, values in parse_qs(urlsplit(plain_url).query).items()}
    assert par.pushed == [{**plain, "client_secret": CLIENT_SECRET}]
    assert pushed_url == pushed_authorization_url(PROVIDER, CLIENT_ID, REQUEST_URI)


async def test_a_refused_push_is_a_502_and_an_unavailable_one_a_503(idp: FakeIdP, clock: Clock) -> None:
    with pytest.raises(IdPError) as refused:
        await client_for(ParIdP(idp, par_status=400), clock).authorization_url(new_login_request("/"))
    with pytest.raises(ProviderUnavailable) as unavailable:
        await client_for(ParIdP(idp, par_status=500), clock).authorization_url(new_login_request("/"))
    assert (refused.value.status_code, refused.value.error) == (502, "invalid_request")
    assert unavailable.value.status_code == 503


async def test_required_without_an_endpoint_fails_at_login_and_at_ready(idp: FakeIdP, clock: Clock) -> None:
    client = OIDCClient(
        httpx.AsyncClient(transport=httpx.MockTransport(idp)),
        settings_for(OIDC__PUSHED_AUTHORIZATION="required"),
        clock=clock,
    )
    with pytest.raises(IdPError, match="pushed_authorization_request_endpoint"):
        await client.authorization_url(new_login_request("/"))
    with pytest.raises(IdPError, match="pushed_authorization_request_endpoint"):
        await client.ready()
