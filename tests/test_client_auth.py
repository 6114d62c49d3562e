"""Client authentication: secret methods and `private_key_jwt` assertions, verified with PyJWT
against the public key; a fresh `jti` per request, the audience chosen by the seam."""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from starlette.datastructures import Secret

from bff.client_auth import (
    ASSERTION_LIFETIME,
    CLIENT_ASSERTION_TYPE,
    AssertionAudience,
    ClientAuthentication,
    build_client_assertion,
)
from bff.client_keys import ClientAssertionAlg, ClientKey, generate_private_jwk, load_client_keys
from bff.discovery import ProviderMetadata

PROVIDER = ProviderMetadata(
    issuer="https://op.example",
    authorization_endpoint="https://op.example/auth",
    token_endpoint="https://op.example/token",
    jwks_uri="https://op.example/jwks",
)
NOW = 1_800_000_000.0


def client_key(tmp_path: Path, alg: ClientAssertionAlg) -> ClientKey:
    path = tmp_path / f"{alg}.jwk"
    path.write_text(json.dumps(generate_private_jwk(alg)))
    (key,) = load_client_keys([str(path)])
    return key


def form_of(request: httpx.Request) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(request.content.decode()).items()}


def verified_claims(assertion: str, key: ClientKey, audience: str) -> dict[str, object]:
    public_key = jwt.PyJWK(dict(key.public_jwk)).key
    return dict(
        jwt.decode(
            assertion,
            public_key,
            algorithms=[key.alg],
            audience=audience,
            options={"verify_exp": False, "verify_iat": False},
        )
    )


@pytest.mark.parametrize("alg", ["ES256", "PS256", "RS256"])
def test_the_assertion_is_signed_and_carries_the_rfc7523_claims(tmp_path: Path, alg: ClientAssertionAlg) -> None:
    key = client_key(tmp_path, alg)
    assertion = build_client_assertion("bff", PROVIDER.token_endpoint, key, now=NOW + 0.7, jti="jti-1")
    assert jwt.get_unverified_header(assertion) == {"alg": alg, "kid": key.kid, "typ": "JWT"}
    assert verified_claims(assertion, key, PROVIDER.token_endpoint) == {
        "iss": "bff",
        "sub": "bff",
        "aud": PROVIDER.token_endpoint,
        "jti": "jti-1",
        "iat": int(NOW),
        "exp": int(NOW) + ASSERTION_LIFETIME,
    }


@pytest.mark.parametrize(
    ("audience", "expected"), [("token_endpoint", PROVIDER.token_endpoint), ("issuer", PROVIDER.issuer)]
)
def test_private_key_jwt_posts_a_fresh_assertion_each_time(
    tmp_path: Path, audience: AssertionAudience, expected: str
) -> None:
    key = client_key(tmp_path, "ES256")
    serial = itertools.count()
    auth = ClientAuthentication(
        client_id="bff",
        method="private_key_jwt",
        signing_key=key,
        audience=audience,
        clock=lambda: NOW,
        new_jti=lambda: f"jti-{next(serial)}",
    )
    first, second = (form_of(auth.request("https://op.example/par", {"a": "1"}, PROVIDER)) for _ in range(2))
    assert {name: value for name, value in first.items() if name != "client_assertion"} == {
        "a": "1",
        "client_id": "bff",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
    }
    claims = [verified_claims(form["client_assertion"], key, expected) for form in (first, second)]
    assert [claim["jti"] for claim in claims] == ["jti-0", "jti-1"]


def test_the_default_jti_is_random(tmp_path: Path) -> None:
    key = client_key(tmp_path, "ES256")
    auth = ClientAuthentication(client_id="bff", method="private_key_jwt", signing_key=key)
    jtis = {
        verified_claims(
            form_of(auth.request(PROVIDER.token_endpoint, {}, PROVIDER))["client_assertion"],
            key,
            PROVIDER.token_endpoint,
        )["jti"]
        for _ in range(5)
    }
    assert len(jtis) == 5


def test_client_secret_basic_form_encodes_id_and_secret() -> None:
    auth = ClientAuthentication(client_id="my client", method="client_secret_basic", client_secret=Secret("a:b/c"))
    request = auth.request(PROVIDER.token_endpoint, {"grant_type": "x"}, PROVIDER)
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"my%20client:a%3Ab%2Fc").decode()
    assert form_of(request) == {"grant_type": "x"}


def test_client_secret_post_puts_the_secret_in_the_form() -> None:
    auth = ClientAuthentication(client_id="bff", method="client_secret_post", client_secret=Secret("s3cret"))
    request = auth.request(PROVIDER.token_endpoint, {"grant_type": "x"}, PROVIDER)
    assert "authorization" not in request.headers
    assert form_of(request) == {"grant_type": "x", "client_id": "bff", "client_secret": "s3cret"}


def test_the_repr_shows_neither_secret_nor_key(tmp_path: Path) -> None:
    auth = ClientAuthentication(
        client_id="bff",
        method="private_key_jwt",
        client_secret=Secret("s3cret"),
        signing_key=client_key(tmp_path, "ES256"),
    )
    assert "s3cret" not in repr(auth)
    assert "signing_key" not in repr(auth)
