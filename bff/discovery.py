"""The provider's discovery document: `ProviderMetadata` and `parse_discovery`.

Owns what the BFF reads from `/.well-known/openid-configuration` and the check that its `issuer`
is the configured one, and the shared reading of a provider's JSON documents (discovery, JWKS).
Fetching and caching them is `OIDCClient`'s business (`bff.oidc`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx

from bff.errors import IdPError, ProviderUnavailable

__all__ = ["ASYMMETRIC_ALGORITHMS", "ProviderMetadata", "json_or_unavailable", "parse_discovery"]

# Asymmetric algorithms only: HS* would verify with the client secret, `none` with nothing.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclasses.dataclass(frozen=True)
class ProviderMetadata:
    """The parts of the discovery document the BFF uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None = None
    revocation_endpoint: str | None = None
    id_token_signing_alg_values_supported: tuple[str, ...] = ("RS256",)
    authorization_response_iss_parameter_supported: bool = False
    pushed_authorization_request_endpoint: str | None = None
    require_pushed_authorization_requests: bool = False

    @property
    def algorithms(self) -> list[str]:
        """The provider's signing algorithms that this client accepts."""
        return [alg for alg in self.id_token_signing_alg_values_supported if alg in ASYMMETRIC_ALGORITHMS]


def parse_discovery(response: httpx.Response, expected_issuer: str, *, retry_after: float) -> ProviderMetadata:
    """Discovery document → metadata; refuses one whose `issuer` is not the configured one."""
    data = json_or_unavailable(response, "discovery", retry_after=retry_after)
    issuer = data.get("issuer")
    # The configured URL loses a bare trailing slash (config `_check_url`); some providers
    # (Auth0) keep one in their issuer, which their tokens then carry exactly.
    if not isinstance(issuer, str) or issuer.rstrip("/") != expected_issuer.rstrip("/"):
        raise IdPError(f'discovery "issuer" is {issuer!r}, expected {expected_issuer!r}', status=response.status_code)
    missing = [name for name in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not data.get(name)]
    if missing:
        raise IdPError(f"discovery document lacks {', '.join(missing)}", status=response.status_code)
    algorithms = data.get("id_token_signing_alg_values_supported") or ["RS256"]
    return ProviderMetadata(
        issuer=issuer,
        authorization_endpoint=data["authorization_endpoint"],
        token_endpoint=data["token_endpoint"],
        jwks_uri=data["jwks_uri"],
        end_session_endpoint=data.get("end_session_endpoint"),
        revocation_endpoint=data.get("revocation_endpoint"),
        id_token_signing_alg_values_supported=tuple(str(alg) for alg in algorithms),
        authorization_response_iss_parameter_supported=data.get("authorization_response_iss_parameter_supported")
        is True,
        pushed_authorization_request_endpoint=data.get("pushed_authorization_request_endpoint") or None,
        require_pushed_authorization_requests=data.get("require_pushed_authorization_requests") is True,
    )


def json_or_unavailable(response: httpx.Response, what: str, *, retry_after: float) -> dict[str, Any]:
    """The JSON object of a provider document; ProviderUnavailable on 5xx, IdPError otherwise."""
    if response.status_code >= 500:
        raise ProviderUnavailable(f"{what} answered {response.status_code}", retry_after=retry_after)
    if response.status_code != 200:
        raise IdPError(f"{what} answered {response.status_code}", status=response.status_code)
    try:
        data = json.loads(response.content)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise IdPError(f"{what} is not a JSON object", status=response.status_code)
    return data
