"""The discovery document: which fields the BFF reads, the issuer check, and the errors for a
provider document that is unavailable, not JSON, or incomplete."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from bff.discovery import ProviderMetadata, json_or_unavailable, parse_discovery
from bff.errors import IdPError, ProviderUnavailable

ISSUER = "https://idp.example.com/realm"
COMPLETE = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/authorize",
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
}


def answer(body: Any, status: int = 200) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content)


def test_a_minimal_document_gets_the_defaults() -> None:
    metadata = parse_discovery(answer(COMPLETE), ISSUER, retry_after=5)
    assert metadata == ProviderMetadata(
        issuer=ISSUER,
        authorization_endpoint=f"{ISSUER}/authorize",
        token_endpoint=f"{ISSUER}/token",
        jwks_uri=f"{ISSUER}/jwks",
    )
    assert metadata.algorithms == ["RS256"]
    assert metadata.authorization_response_iss_parameter_supported is False


def test_optional_fields_are_read_and_symmetric_algorithms_dropped() -> None:
    document = {
        **COMPLETE,
        "end_session_endpoint": f"{ISSUER}/logout",
        "revocation_endpoint": f"{ISSUER}/revoke",
        "id_token_signing_alg_values_supported": ["HS256", "ES256", "none", "EdDSA"],
        "authorization_response_iss_parameter_supported": True,
    }
    metadata = parse_discovery(answer(document), ISSUER, retry_after=5)
    assert metadata.end_session_endpoint == f"{ISSUER}/logout"
    assert metadata.revocation_endpoint == f"{ISSUER}/revoke"
    assert metadata.id_token_signing_alg_values_supported == ("HS256", "ES256", "none", "EdDSA")
    assert metadata.algorithms == ["ES256", "EdDSA"]
    assert metadata.authorization_response_iss_parameter_supported is True


def test_iss_parameter_support_must_be_the_boolean_true() -> None:
    document = {**COMPLETE, "authorization_response_iss_parameter_supported": "true"}
    assert (
        parse_discovery(answer(document), ISSUER, retry_after=5).authorization_response_iss_parameter_supported is False
    )


def test_an_issuer_with_a_trailing_slash_matches_and_is_kept() -> None:
    document = {**COMPLETE, "issuer": ISSUER + "/"}
    assert parse_discovery(answer(document), ISSUER, retry_after=5).issuer == ISSUER + "/"


@pytest.mark.parametrize(
    ("issuer", "shown"),
    [("https://evil.example.com/realm", "'https://evil.example.com/realm'"), (None, "None"), (42, "42")],
)
def test_a_wrong_or_missing_issuer_is_refused(issuer: Any, shown: str) -> None:
    document = {**COMPLETE, "issuer": issuer}
    with pytest.raises(IdPError) as caught:
        parse_discovery(answer(document), ISSUER, retry_after=5)
    assert caught.value.detail == f'discovery "issuer" is {shown}, expected {ISSUER!r}'
    assert caught.value.status == 200
    assert caught.value.status_code == 502


def test_missing_endpoints_are_listed() -> None:
    document = {"issuer": ISSUER, "token_endpoint": "", "jwks_uri": f"{ISSUER}/jwks"}
    with pytest.raises(IdPError) as caught:
        parse_discovery(answer(document), ISSUER, retry_after=5)
    assert caught.value.detail == "discovery document lacks authorization_endpoint, token_endpoint"
    assert type(caught.value) is IdPError


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_is_provider_unavailable_with_retry_after(status: int) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        parse_discovery(answer(b"down", status), ISSUER, retry_after=7.4)
    assert caught.value.detail == f"discovery answered {status}"
    assert caught.value.status_code == 503
    assert (b"retry-after", b"7") in caught.value.raw_headers()


def test_another_status_is_an_idp_error() -> None:
    with pytest.raises(IdPError) as caught:
        json_or_unavailable(answer(b"gone", 404), "jwks", retry_after=5)
    assert type(caught.value) is IdPError
    assert caught.value.detail == "jwks answered 404"
    assert caught.value.status == 404


@pytest.mark.parametrize("body", [b"<html>", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_an_idp_error(body: bytes) -> None:
    with pytest.raises(IdPError) as caught:
        json_or_unavailable(answer(body), "discovery", retry_after=5)
    assert caught.value.detail == "discovery is not a JSON object"
    assert caught.value.status == 200


def test_a_json_object_is_returned() -> None:
    assert json_or_unavailable(answer({"keys": []}), "jwks", retry_after=5) == {"keys": []}
