"""OIDCClient against the fake provider: discovery, PKCE, token requests, ID and logout tokens."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bff.errors import BadRequest, IdPError, LoginFailed, ProviderUnavailable, RefreshRejected
from bff.idtokens import JWKS_REFETCH_INTERVAL
from bff.oidc import OIDCClient
from bff.oidc_messages import new_login_request, parse_token_response, pkce_challenge
from tests.fakes import CLIENT_ID, CLIENT_SECRET, ISSUER, Clock, FakeIdP, holding, settings_for


def make_client(idp: FakeIdP, clock: Clock, **environ: str) -> OIDCClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(idp))
    return OIDCClient(http, settings_for(**environ), clock=clock)


def query_of(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


async def test_discovery_is_fetched_once_and_cached(idp: FakeIdP, clock: Clock) -> None:
    client = make_client(idp, clock)
    first = await client.discover()
    second = await client.discover()
    assert first is second
    assert first.token_endpoint == f"{ISSUER}/token"
    assert idp.calls["/.well-known/openid-configuration"] == 1


async def test_discovery_with_another_issuer_is_rejected(idp: FakeIdP, clock: Clock) -> None:
    idp.discovery_overrides["issuer"] = "https://evil.example"
    with pytest.raises(IdPError, match="issuer"):
        await make_client(idp, clock).discover()


async def test_an_issuer_with_a_trailing_slash_is_kept_exactly(idp: FakeIdP, clock: Clock) -> None:
    idp.discovery_overrides["issuer"] = ISSUER + "/"
    client = make_client(idp, clock)
    assert (await client.discover()).issuer == ISSUER + "/"
    with pytest.raises(LoginFailed, match="issuer"):  # the fake's tokens carry no slash
        await client.validate_id_token(idp.id_token(nonce="n"), nonce="n")


async def test_unreachable_provider_is_provider_unavailable(idp: FakeIdP, clock: Clock) -> None:
    idp.unreachable = True
    with pytest.raises(ProviderUnavailable) as info:
        await make_client(idp, clock, OIDC__RETRY_AFTER="7s").discover()
    assert ("retry-after", "7") in info.value.headers


def test_pkce_challenge_is_rfc7636_s256() -> None:
    # RFC 7636 Appendix B
    assert (
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


async def test_authorization_url_carries_pkce_state_nonce_and_extras(idp: FakeIdP, clock: Clock) -> None:
    client = make_client(
        idp,
        clock,
        OIDC__RESOURCE="https://api.example/",
        OIDC__AUDIENCE="api",
        OIDC__EXTRA_AUTHORIZE_PARAMS='{prompt = "login"}',
    )
    login = new_login_request("/after")
    query = query_of(await client.authorization_url(login))
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == "https://testserver/bff/callback"
    assert query["state"] == login.state
    assert query["nonce"] == login.nonce
    assert query["code_challenge_method"] == "S256"
    digest = hashlib.sha256(login.code_verifier.encode()).digest()
    assert query["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert query["scope"] == "openid profile offline_access"
    assert (query["resource"], query["audience"], query["prompt"]) == ("https://api.example/", "api", "login")
    assert login.code_verifier not in str(query)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_code_exchange_authenticates_and_validates_the_id_token(clock: Clock, method: str) -> None:
    idp = FakeIdP(clock=clock, auth_method=method)
    client = make_client(idp, clock, OIDC__TOKEN_ENDPOINT_AUTH_METHOD=method)
    login = new_login_request("/")
    params = idp.authorize(await client.authorization_url(login), sub="bob", sid="s-9")
    tokens, claims = await client.exchange_code(params["code"], login)
    assert claims["sub"] == "bob"
    assert claims["sid"] == "s-9"
    assert tokens.refresh_token in idp.refresh_tokens
    assert tokens.expires_at == clock() + idp.access_ttl
    token_request = next(r for r in idp.requests if r.url.path == "/token")
    assert (CLIENT_SECRET in token_request.content.decode()) == (method == "client_secret_post")
    assert ("authorization" in token_request.headers) == (method == "client_secret_basic")


async def test_code_cannot_be_exchanged_twice(idp: FakeIdP, clock: Clock) -> None:
    client = make_client(idp, clock)
    login = new_login_request("/")
    params = idp.authorize(await client.authorization_url(login))
    await client.exchange_code(params["code"], login)
    with pytest.raises(IdPError) as info:
        await client.exchange_code(params["code"], login)
    assert info.value.error == "invalid_grant"


def forged(idp: FakeIdP, clock: Clock, case: str, nonce: str) -> str:
    now = int(clock())
    good = {"iss": ISSUER, "sub": "alice", "aud": CLIENT_ID, "iat": now, "exp": now + 600, "nonce": nonce}
    if case == "alg none":
        return jwt.encode(good, "", algorithm="none", headers={"kid": idp.keys[0][0]})
    if case == "HS256 with the client secret":
        return jwt.encode(good, CLIENT_SECRET * 8, algorithm="HS256", headers={"kid": idp.keys[0][0]})
    if case == "foreign key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode(good, other, algorithm="RS256", headers={"kid": idp.keys[0][0]})
    if case == "tampered payload":
        header, _, signature = idp.sign(good).split(".")
        payload = base64.urlsafe_b64encode(b'{"sub":"mallory"}').rstrip(b"=").decode()
        return f"{header}.{payload}.{signature}"
    overrides: dict[str, dict[str, Any]] = {
        "wrong aud": {"aud": "someone-else"},
        "wrong iss": {"iss": "https://evil.example"},
        "wrong nonce": {"nonce": "n-other"},
        "no nonce": {"nonce": None},
        "expired": {"exp": now - 31, "iat": now - 700},
        "issued in the future": {"iat": now + 120},
        "several audiences without azp": {"aud": [CLIENT_ID, "other"]},
        "azp of another client": {"azp": "other"},
        "no exp": {"exp": None},
        "no sub": {"sub": None},
    }
    return idp.sign({key: value for key, value in {**good, **overrides[case]}.items() if value is not None})


@pytest.mark.parametrize(
    "case",
    [
        "alg none",
        "HS256 with the client secret",
        "foreign key",
        "tampered payload",
        "wrong aud",
        "wrong iss",
        "wrong nonce",
        "no nonce",
        "expired",
        "issued in the future",
        "several audiences without azp",
        "azp of another client",
        "no exp",
        "no sub",
    ],
)
async def test_bad_id_tokens_are_refused(idp: FakeIdP, clock: Clock, case: str) -> None:
    client = make_client(idp, clock)
    with pytest.raises(LoginFailed):
        await client.validate_id_token(forged(idp, clock, case, "n-1"), nonce="n-1")


async def test_id_token_within_leeway_and_with_azp_is_accepted(idp: FakeIdP, clock: Clock) -> None:
    client = make_client(idp, clock)
    now = int(clock())
    token = idp.id_token(nonce="n-1", exp=now - 20, aud=[CLIENT_ID, "api"], azp=CLIENT_ID)
    claims = await client.validate_id_token(token, nonce="n-1")
    assert claims["azp"] == CLIENT_ID


async def test_jwks_key_rotation_is_picked_up_and_refetch_is_rate_limited(idp: FakeIdP, clock: Clock) -> None:
    client = make_client(idp, clock)
    await client.validate_id_token(idp.id_token(nonce="n"), nonce="n")
    idp.rotate_keys()
    with pytest.raises(LoginFailed, match="unknown key"):  # too soon after the last fetch
        await client.validate_id_token(idp.id_token(nonce="n"), nonce="n")
    assert idp.calls["/jwks"] == 1
    clock.advance(JWKS_REFETCH_INTERVAL)
    await client.validate_id_token(idp.id_token(nonce="n"), nonce="n")
    assert idp.calls["/jwks"] == 2
    await client.validate_id_token(idp.id_token(nonce="n"), nonce="n")
    assert idp.calls["/jwks"] == 2


async def test_concurrent_validations_fetch_the_jwks_once(idp: FakeIdP, clock: Clock) -> None:
    client = make_client(idp, clock)
    tokens = [idp.id_token(nonce="n") for _ in range(5)]
    await asyncio.gather(*(client.validate_id_token(token, nonce="n") for token in tokens))
    assert idp.calls["/jwks"] == 1
    assert idp.calls["/.well-known/openid-configuration"] == 1


async def test_refresh_rotates_and_a_used_refresh_token_is_invalid_grant(idp: FakeIdP, clock: Clock) -> None:
    client = make_client(idp, clock)
    old = idp.issue_refresh_token()
    tokens = await client.refresh(holding(old))
    assert tokens.refresh_token
    assert tokens.refresh_token != old
    with pytest.raises(RefreshRejected) as info:
        await client.refresh(holding(old))
    assert info.value.error == "invalid_grant"
    assert info.value.status_code == 401


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_refresh_during_provider_5xx_is_provider_unavailable(idp: FakeIdP, clock: Clock, status: int) -> None:
    client = make_client(idp, clock)
    await client.discover()
    idp.token_status = status
    with pytest.raises(ProviderUnavailable) as info:
        await client.refresh(holding(idp.issue_refresh_token()))
    assert info.value.status_code == 503
    assert info.value.status == status


def test_a_token_answer_takes_its_expiry_from_expires_in_or_the_jwt_and_refuses_what_is_not_a_token() -> None:
    request = httpx.Request("POST", f"{ISSUER}/token")
    jwt_access = jwt.encode({"exp": 2_000}, "k" * 32, algorithm="HS256")
    parsed = parse_token_response(
        httpx.Response(200, json={"access_token": jwt_access, "token_type": "bearer"}, request=request),
        now=1_000,
        retry_after=5,
    )
    assert parsed.expires_at == 2_000  # from the JWT's exp when there is no expires_in
    parsed = parse_token_response(
        httpx.Response(200, json={"access_token": "opaque", "expires_in": "60"}, request=request),
        now=1_000,
        retry_after=5,
    )
    assert parsed.expires_at == 1_060
    assert parsed.refresh_token is None
    with pytest.raises(IdPError) as info:
        parse_token_response(
            httpx.Response(400, json={"error": "invalid_scope"}, request=request), now=0, retry_after=5
        )
    assert type(info.value) is IdPError
    assert info.value.error == "invalid_scope"
    with pytest.raises(IdPError, match="access_token"):
        parse_token_response(httpx.Response(200, json={"token_type": "Bearer"}, request=request), now=0, retry_after=5)
    with pytest.raises(IdPError, match="JSON"):
        parse_token_response(httpx.Response(200, text="<html>", request=request), now=0, retry_after=5)


async def test_revocation_posts_the_token_and_the_end_session_url_carries_client_id_and_return(
    idp: FakeIdP, clock: Clock
) -> None:
    client = make_client(idp, clock)
    token = idp.issue_refresh_token()
    assert await client.revoke(token) is True
    assert idp.revoked == [token]
    query = query_of(await client.end_session_url("the-id-token") or "")
    assert query == {
        "client_id": CLIENT_ID,
        "post_logout_redirect_uri": "https://testserver/",
        "id_token_hint": "the-id-token",
    }


async def test_without_revocation_or_end_session_endpoint(idp: FakeIdP, clock: Clock) -> None:
    idp.discovery_overrides.update(revocation_endpoint=None, end_session_endpoint=None)
    client = make_client(idp, clock)
    assert await client.revoke("x") is False
    assert await client.end_session_url("x") is None
    assert idp.calls["/revoke"] == 0


async def test_client_credentials_sends_client_scopes(idp: FakeIdP, clock: Clock) -> None:
    client = make_client(idp, clock, OIDC__CLIENT_SCOPES='["api.read"]')
    tokens = await client.client_credentials()
    assert tokens.access_token.startswith("cc-")
    assert parse_qs(idp.requests[-1].content.decode())["scope"] == ["api.read"]


async def test_valid_logout_token(idp: FakeIdP, clock: Clock) -> None:
    claims = await make_client(idp, clock).validate_logout_token(idp.logout_token(sub="alice", sid="s-1"))
    assert (claims["sub"], claims["sid"]) == ("alice", "s-1")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nonce": "n"}, "nonce"),
        ({"events": {"other": {}}}, "events"),
        ({"events": None}, "events"),
        ({"sub": None, "sid": None}, "neither"),
        ({"aud": "other"}, "rejected"),
        ({"iss": "https://evil.example"}, "rejected"),
        ({"jti": None}, "rejected"),
        ({"iat": 1_800_000_000 - 3600, "exp": None}, "too old"),
        ({"exp": 1_800_000_000 - 60}, "expired"),
    ],
)
async def test_bad_logout_tokens_are_refused(
    idp: FakeIdP, clock: Clock, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        await make_client(idp, clock).validate_logout_token(idp.logout_token(**overrides))


async def test_logout_token_with_a_bad_signature_is_refused(idp: FakeIdP, clock: Clock) -> None:
    client = make_client(idp, clock)
    token = idp.logout_token()
    header, payload, signature = token.split(".")
    bad = f"{header}.{payload}.{signature[:-4]}AAAA"
    with pytest.raises(BadRequest, match="rejected"):
        await client.validate_logout_token(bad)
