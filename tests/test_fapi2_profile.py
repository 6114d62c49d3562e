"""`oidc.profile = "fapi2"` (README "FAPI 2.0 profile"): what it fills in, what it refuses, and what
it changes at run time (the assertion's audience, the ID-token algorithms, the `iss` parameter, a
Bearer answer to a DPoP request)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import httpx
import jwt
import pytest

from bff.client_auth import client_authentication
from bff.client_keys import ClientAssertionAlg, generate_private_jwk, load_client_keys
from bff.config import Settings, load_settings
from bff.discovery import ProviderMetadata
from bff.errors import ConfigError, IdPError, LoginFailed
from bff.oidc import OIDCClient
from bff.oidc_messages import check_issuer_parameter, new_login_request

KEY = "k" * 40
ISSUER = "https://idp.example"
PROVIDER = ProviderMetadata(
    issuer=ISSUER,
    authorization_endpoint=f"{ISSUER}/authorize",
    token_endpoint=f"{ISSUER}/token",
    jwks_uri=f"{ISSUER}/jwks",
)


def key_path(tmp_path: Path, alg: ClientAssertionAlg = "ES256") -> str:
    path = tmp_path / f"client-{alg}.jwk"
    path.write_text(json.dumps(generate_private_jwk(alg)))
    return str(path)


def load(tmp_path: Path, oidc: str, routes: str = "") -> Settings:
    text = f"""
secret_keys = ["{KEY}"]
public_url = "https://app.example.com"

[oidc]
issuer = "{ISSUER}"
client_id = "bff"
profile = "fapi2"
{oidc}
{routes}
"""
    path = tmp_path / "bff.toml"
    path.write_text(text)
    return load_settings({}, path)


def problems_of(tmp_path: Path, oidc: str, routes: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, oidc, routes)
    return caught.value.problems


def pkjwt(tmp_path: Path, alg: ClientAssertionAlg = "ES256") -> str:
    return f'token_endpoint_auth_method = "private_key_jwt"\nclient_keys = ["{key_path(tmp_path, alg)}"]'


def test_the_profile_turns_on_par_dpop_and_a_ten_second_leeway(tmp_path: Path) -> None:
    oidc = load(tmp_path, pkjwt(tmp_path)).oidc
    assert oidc is not None
    assert (oidc.pushed_authorization, oidc.dpop, oidc.leeway) == ("required", True, 10)


def test_what_the_profile_allows_may_be_said_explicitly(tmp_path: Path) -> None:
    said = pkjwt(tmp_path) + '\npushed_authorization = "required"\ndpop = true\nleeway = "5s"'
    oidc = load(tmp_path, said).oidc
    assert oidc is not None
    assert (oidc.pushed_authorization, oidc.dpop, oidc.leeway) == ("required", True, 5)


CONTRADICTIONS = [
    (
        'pushed_authorization = "auto"',
        "oidc.pushed_authorization: 'auto' contradicts profile = \"fapi2\" (FAPI 2.0 requires PAR)",
    ),
    (
        'pushed_authorization = "off"',
        "oidc.pushed_authorization: 'off' contradicts profile = \"fapi2\" (FAPI 2.0 requires PAR)",
    ),
    (
        "dpop = false",
        'oidc.dpop: false contradicts profile = "fapi2" (FAPI 2.0 requires sender-constrained tokens: DPoP here)',
    ),
    ('leeway = "30s"', 'oidc.leeway: 30s contradicts profile = "fapi2" (at most 10s)'),
]


@pytest.mark.parametrize(("said", "problem"), CONTRADICTIONS, ids=[said for said, _ in CONTRADICTIONS])
def test_a_setting_that_contradicts_the_profile_is_one_line(tmp_path: Path, said: str, problem: str) -> None:
    assert problems_of(tmp_path, pkjwt(tmp_path) + "\n" + said) == [problem]


def test_a_client_secret_is_refused(tmp_path: Path) -> None:
    assert problems_of(tmp_path, 'client_secret = "s3cret-not-shown"') == [
        "oidc.token_endpoint_auth_method: 'client_secret_basic' contradicts profile = \"fapi2\" (FAPI 2.0 allows "
        "private_key_jwt or mTLS; this BFF does private_key_jwt)"
    ]


def test_an_rs256_client_key_is_refused_and_ps256_is_taken(tmp_path: Path) -> None:
    assert problems_of(tmp_path, pkjwt(tmp_path, "RS256")) == [
        'oidc.client_keys[0]: signs with RS256 contradicts profile = "fapi2" (use PS256 or ES256: '
        'oidc.client_assertion_alg, or the JWK\'s "alg")'
    ]
    assert load(tmp_path, pkjwt(tmp_path, "RS256") + '\nclient_assertion_alg = "PS256"').oidc is not None


def test_client_credentials_routes_are_refused(tmp_path: Path) -> None:
    route = '[[routes]]\npath = "/partner"\nupstream = "http://127.0.0.1:9000"\ntoken = "client"'
    assert problems_of(tmp_path, pkjwt(tmp_path), route) == [
        "routes[0].token: 'client' contradicts profile = \"fapi2\" (client-credentials tokens stay Bearer)"
    ]


def test_every_contradiction_is_listed_at_once(tmp_path: Path) -> None:
    said = 'client_secret = "x"\npushed_authorization = "off"\ndpop = false\nleeway = "1m"'
    assert len(problems_of(tmp_path, said)) == 4


def test_the_assertion_audience_is_the_issuer_under_the_profile(tmp_path: Path) -> None:
    oidc = load(tmp_path, pkjwt(tmp_path)).oidc
    assert oidc is not None
    auth = client_authentication(oidc, load_client_keys(oidc.client_keys))
    request = auth.request(PROVIDER.token_endpoint, {"grant_type": "refresh_token"}, PROVIDER)
    form = dict(httpx.QueryParams(request.content.decode()))
    assert jwt.decode(form["client_assertion"], options={"verify_signature": False})["aud"] == ISSUER


async def test_a_bearer_answer_to_a_dpop_request_is_refused_under_the_profile(tmp_path: Path) -> None:
    settings = load(tmp_path, pkjwt(tmp_path))

    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "authorization_endpoint": PROVIDER.authorization_endpoint,
                    "token_endpoint": PROVIDER.token_endpoint,
                    "jwks_uri": PROVIDER.jwks_uri,
                },
            )
        return httpx.Response(200, json={"access_token": "at", "token_type": "Bearer", "expires_in": 60})

    async with httpx.AsyncClient(transport=httpx.MockTransport(provider)) as http:
        client = OIDCClient(http, settings)
        login = new_login_request("/", dpop=True)
        with pytest.raises(IdPError) as caught:
            await client.exchange_code("code", login)
    assert caught.value.detail == 'the provider issued a Bearer token; profile "fapi2" requires DPoP-bound tokens'


@pytest.mark.parametrize(
    ("profile", "promised", "refused"),
    [("oidc", False, False), ("oidc", True, True), ("fapi2", False, True), ("fapi2", True, True)],
)
def test_a_missing_iss_is_refused_when_promised_and_always_under_the_profile(
    profile: str, *, promised: bool, refused: bool
) -> None:
    provider = dataclasses.replace(PROVIDER, authorization_response_iss_parameter_supported=promised)
    if refused:
        with pytest.raises(LoginFailed, match='callback parameter "iss" is missing'):
            check_issuer_parameter(None, provider, profile=profile)
    else:
        check_issuer_parameter(None, provider, profile=profile)
    check_issuer_parameter(ISSUER, provider, profile=profile)
    with pytest.raises(LoginFailed) as caught:
        check_issuer_parameter("https://evil.example", provider, profile=profile)
    assert caught.value.detail == "callback parameter \"iss\" is 'https://evil.example', expected 'https://idp.example'"
