"""DPoP (RFC 9449) without a provider: keys, proofs, thumbprints, nonces (`bff.dpop`), the
token-endpoint send with its nonce retry (`bff.dpop_sending`), the login's `dpop_jkt` and the
token type of a token answer (`bff.oidc_messages`)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from bff.discovery import ProviderMetadata
from bff.dpop import (
    DPoPKey,
    NonceMemory,
    access_token_hash,
    asks_for_nonce,
    htu_of,
    jwk_thumbprint,
    nonce_of,
    origin_of,
)
from bff.dpop_sending import send_with_proof
from bff.errors import IdPError
from bff.oidc_messages import (
    LoginRequest,
    build_authorization_params,
    build_authorization_url,
    new_login_request,
    parse_token_response,
)
from bff.tokenset import TokenSet
from tests.fakes import ISSUER, settings_for

TOKEN_ENDPOINT = f"{ISSUER}/token"


def verified(proof: str) -> tuple[dict[str, object], dict[str, object]]:
    """The proof's header and claims, its signature checked against the `jwk` it embeds."""
    header = jwt.get_unverified_header(proof)
    key = jwt.PyJWK(header["jwk"], algorithm="ES256")
    return header, jwt.decode(proof, key.key, algorithms=["ES256"])


# -- keys and proofs ----------------------------------------------------------------------------


def test_a_proof_is_signed_by_the_embedded_public_key_and_carries_the_claims_of_section_4_2() -> None:
    key = DPoPKey.generate()
    proof = key.proof("POST", "https://api.example/v1/items?page=2#top", access_token="the-token", nonce="n-1")
    header, claims = verified(proof)
    assert header == {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk}
    assert set(key.public_jwk) == {"kty", "crv", "x", "y"}  # no "d"
    assert claims["htm"] == "POST"
    assert claims["htu"] == "https://api.example/v1/items"
    assert claims["ath"] == access_token_hash("the-token")
    assert claims["nonce"] == "n-1"
    assert isinstance(claims["iat"], int)
    assert isinstance(claims["jti"], str)
    assert len(claims["jti"]) >= 16


def test_proofs_without_token_or_nonce_have_no_ath_or_nonce_and_a_new_jti_each() -> None:
    key = DPoPKey.generate()
    first, second = (verified(key.proof("GET", TOKEN_ENDPOINT, now=1_000))[1] for _ in range(2))
    assert set(first) == {"jti", "htm", "htu", "iat"}
    assert first["iat"] == 1_000
    assert first["jti"] != second["jti"]


def test_ath_is_base64url_sha256_of_the_token() -> None:
    # RFC 9449 §7.1's example: the access token "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU".
    assert access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU") == (
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


def test_the_thumbprint_is_rfc_7638s_example_vector() -> None:
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjB"
        "ZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8K"
        "JZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_x"
        "BniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_key_survives_its_private_jwk_and_the_loaded_key_is_cached() -> None:
    key = DPoPKey.generate()
    private = key.private_jwk()
    assert set(json.loads(private)) == {"kty", "crv", "x", "y", "d"}
    loaded = DPoPKey.from_jwk(private)
    assert loaded.jkt == key.jkt
    assert loaded.public_jwk == key.public_jwk
    assert DPoPKey.from_jwk(private) is loaded  # one signature per proof, no key parsing
    assert verified(loaded.proof("GET", "https://a.example/"))[0]["jwk"] == key.public_jwk
    assert json.loads(private)["d"] not in repr(key)
    assert repr(key) == f"DPoPKey(jkt={key.jkt!r})"


@pytest.mark.parametrize(
    "jwk",
    [
        '{"kty": "RSA", "n": "x", "e": "AQAB", "d": "y"}',
        '{"kty": "EC", "crv": "P-384", "x": "a", "y": "b", "d": "c"}',
        '{"kty": "EC", "crv": "P-256", "x": 1, "y": 2, "d": 3}',
        "[]",
    ],
)
def test_a_key_that_is_not_a_p256_private_jwk_is_refused(jwk: str) -> None:
    with pytest.raises(ValueError, match="JWK"):
        DPoPKey.from_jwk(jwk)


@pytest.mark.parametrize(
    ("url", "htu"),
    [
        ("https://api.example/a/b?x=1&y=2#frag", "https://api.example/a/b"),
        ("https://api.example", "https://api.example/"),
        ("http://127.0.0.1:8080/p;x?q", "http://127.0.0.1:8080/p;x"),
        ("ws://127.0.0.1:9000/socket?t=1", "http://127.0.0.1:9000/socket"),
        ("wss://api.example/socket", "https://api.example/socket"),
    ],
)
def test_htu_is_the_url_without_query_and_fragment_and_a_websocket_url_in_its_http_form(url: str, htu: str) -> None:
    assert htu_of(url) == htu


def test_the_origin_of_a_url_is_where_its_nonce_belongs() -> None:
    assert origin_of("https://api.example:8443/a?b") == "https://api.example:8443"
    assert origin_of("wss://api.example/socket") == "https://api.example"


# -- nonces -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "nonce"),
    [
        ("eyJ7S_zG.eyJH0-Z.HX4w-7v", "eyJ7S_zG.eyJH0-Z.HX4w-7v"),
        ("  abc  ", "abc"),
        ("", None),
        (None, None),
        ('a"b', None),
        ("a b", None),
        ("a\\b", None),
    ],
)
def test_a_dpop_nonce_header_is_read_when_well_formed(header: str | None, nonce: str | None) -> None:
    assert nonce_of(header) == nonce


@pytest.mark.parametrize(
    ("challenge", "asks"),
    [
        ('DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"', True),
        ('dpop algs="ES256", error="use_dpop_nonce"', True),
        ("DPoP error=use_dpop_nonce", True),
        ('DPoP error="invalid_token"', False),
        ('Bearer error="use_dpop_nonce"', False),
        ('DPoP error="use_dpop_nonces"', False),
        ("", False),
        (None, False),
    ],
)
def test_a_resource_servers_use_dpop_nonce_challenge_is_recognised(challenge: str | None, *, asks: bool) -> None:
    assert asks_for_nonce(challenge) is asks


def test_the_nonce_memory_keeps_the_newest_nonce_per_origin_and_forgets_the_oldest_origin() -> None:
    memory = NonceMemory(capacity=2)
    assert memory.remember("https://a", "n1") == "n1"
    assert memory.remember("https://a", "n2") == "n2"
    assert memory.remember("https://a", "not a nonce") is None
    assert memory.get("https://a") == "n2"
    memory.remember("https://b", "m1")
    memory.remember("https://c", "o1")
    assert (memory.get("https://a"), memory.get("https://b"), memory.get("https://c")) == (None, "m1", "o1")


# -- the provider's token endpoint --------------------------------------------------------------


class TokenEndpoint:
    """Answers like oidc-provider with nonces required: 400 `use_dpop_nonce` to a proof without its
    current nonce, each answer with a `DPoP-Nonce` header."""

    def __init__(self, nonce: str = "nonce-1") -> None:
        self.nonce = nonce
        self.proofs: list[dict[str, object]] = []

    async def send(self, request: httpx.Request) -> httpx.Response:
        claims = verified(request.headers["dpop"])[1]
        self.proofs.append(claims)
        headers = {"DPoP-Nonce": self.nonce}
        if claims.get("nonce") != self.nonce:
            return httpx.Response(400, json={"error": "use_dpop_nonce"}, headers=headers, request=request)
        return httpx.Response(200, json={"access_token": "at", "token_type": "DPoP"}, headers=headers, request=request)


async def test_a_token_request_asked_for_a_nonce_is_retried_once_with_it_and_the_nonce_is_remembered() -> None:
    endpoint, memory, key = TokenEndpoint(), NonceMemory(), DPoPKey.generate()
    built: list[httpx.Request] = []

    def build() -> httpx.Request:
        built.append(httpx.Request("POST", TOKEN_ENDPOINT + "?x=1", data={"grant_type": "refresh_token"}))
        return built[-1]

    response = await send_with_proof(endpoint.send, build, key, memory)
    assert response.status_code == 200
    assert [proof.get("nonce") for proof in endpoint.proofs] == [None, "nonce-1"]
    assert {(proof["htm"], proof["htu"]) for proof in endpoint.proofs} == {("POST", TOKEN_ENDPOINT)}
    assert memory.get(ISSUER) == "nonce-1"
    # The retry is a new request (a private_key_jwt assertion in it may be used only once).
    assert len(built) == 2
    assert built[0] is not built[1]

    again = await send_with_proof(endpoint.send, lambda: httpx.Request("POST", TOKEN_ENDPOINT), key, memory)
    assert again.status_code == 200
    assert len(endpoint.proofs) == 3  # the remembered nonce: no second round trip


async def test_a_nonce_refused_twice_is_the_providers_answer_not_a_loop() -> None:
    endpoint, memory = TokenEndpoint(), NonceMemory()

    async def rotating(request: httpx.Request) -> httpx.Response:
        endpoint.nonce += "x"  # a new nonce every time: never satisfied
        return await endpoint.send(request)

    response = await send_with_proof(
        rotating, lambda: httpx.Request("POST", TOKEN_ENDPOINT), DPoPKey.generate(), memory
    )
    assert response.status_code == 400
    assert len(endpoint.proofs) == 2
    assert memory.get(ISSUER) == endpoint.nonce


async def test_an_error_that_is_not_use_dpop_nonce_is_not_retried() -> None:
    calls: list[httpx.Request] = []

    async def refusing(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json={"error": "invalid_dpop_proof"}, headers={"DPoP-Nonce": "n"}, request=request)

    token_request = httpx.Request("POST", TOKEN_ENDPOINT)
    response = await send_with_proof(refusing, lambda: token_request, DPoPKey.generate(), NonceMemory())
    assert response.status_code == 400
    assert len(calls) == 1


# -- login and token answers --------------------------------------------------------------------


def test_a_dpop_login_carries_its_key_through_the_login_state_and_sends_dpop_jkt() -> None:
    login = new_login_request("/app", dpop=True)
    assert login.dpop_key is not None
    assert login.dpop_key not in repr(login)
    assert LoginRequest.from_dict(json.loads(json.dumps(login.to_dict()))) == login
    settings = settings_for()
    assert settings.oidc is not None
    provider = ProviderMetadata(ISSUER, f"{ISSUER}/auth", TOKEN_ENDPOINT, f"{ISSUER}/jwks")
    query = parse_qs(
        urlsplit(build_authorization_url(provider, build_authorization_params(settings, settings.oidc, login))).query
    )
    assert query["dpop_jkt"] == [DPoPKey.from_jwk(login.dpop_key).jkt]

    plain = new_login_request("/app")
    assert plain.dpop_key is None
    assert "dpop_key" not in plain.to_dict()
    assert LoginRequest.from_dict(plain.to_dict()) == plain
    assert "dpop_jkt" not in build_authorization_url(
        provider, build_authorization_params(settings, settings.oidc, plain)
    )


def answer(token_type: str) -> httpx.Response:
    request = httpx.Request("POST", TOKEN_ENDPOINT)
    return httpx.Response(200, json={"access_token": "at", "token_type": token_type}, request=request)


@pytest.mark.parametrize(
    ("sent", "kept"), [("Bearer", "Bearer"), ("bearer", "Bearer"), ("DPoP", "DPoP"), ("dpop", "DPoP")]
)
def test_the_token_type_of_the_answer_is_kept_normalised_with_the_key_the_proof_was_made_with(
    sent: str, kept: str
) -> None:
    key = DPoPKey.generate().private_jwk()
    tokens = parse_token_response(answer(sent), now=0, retry_after=5, dpop_key=key)
    assert (tokens.token_type, tokens.dpop_key) == (kept, key)
    assert key not in repr(tokens)


def test_a_dpop_token_to_a_request_without_proof_and_an_unknown_token_type_are_provider_errors() -> None:
    with pytest.raises(IdPError, match="no DPoP proof"):
        parse_token_response(answer("DPoP"), now=0, retry_after=5)
    with pytest.raises(IdPError, match="MAC"):
        parse_token_response(answer("MAC"), now=0, retry_after=5, dpop_key="{}")


def test_a_refresh_keeps_the_key_the_tokens_are_bound_to() -> None:
    old = TokenSet(access_token="a1", refresh_token="r1", token_type="DPoP", dpop_key="the-key")
    merged = old.merged_with(TokenSet(access_token="a2", token_type="DPoP"))
    assert (merged.access_token, merged.refresh_token, merged.dpop_key) == ("a2", "r1", "the-key")
    assert TokenSet.from_dict(merged.to_dict()) == merged
