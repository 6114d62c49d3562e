"""The OpenID provider's messages, pure: the login request (state, nonce, PKCE verifier, DPoP
key), the authorization and end-session URLs, each token-endpoint request as an `httpx.Request`,
and the parse of a token-endpoint answer into a `TokenSet`. No sockets, no clock: `bff.oidc.OIDCClient`
sends what these build and parses with `parse_token_response` (build → send → parse, after
oauth4webapi), so the protocol logic is tested without a provider.

Owns the wire format of authorization, code exchange, refresh, client credentials, revocation
(RFC 7009) and RP-initiated logout; leaves client authentication to `bff.client_auth`, pushing
the authorization request to `bff.par`, discovery to `bff.discovery`, ID tokens to
`bff.idtokens`, DPoP keys and proofs to `bff.dpop` and all sending to `bff.oidc`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from bff.client_auth import ClientAuthentication
from bff.config import Settings
from bff.discovery import ProviderMetadata
from bff.dpop import DPoPKey
from bff.errors import IdPError, LoginFailed, ProviderUnavailable, RefreshRejected
from bff.oidc_settings import OIDCSettings
from bff.tokenset import TokenSet, jwt_exp

__all__ = [
    "LoginRequest",
    "build_authorization_params",
    "build_authorization_url",
    "build_client_credentials_request",
    "build_code_exchange_request",
    "build_end_session_url",
    "build_refresh_request",
    "build_revocation_request",
    "check_issuer_parameter",
    "error_answer",
    "new_login_request",
    "parse_token_response",
    "pkce_challenge",
    "random_token",
    "redirect_uri",
]


@dataclasses.dataclass(frozen=True)
class LoginRequest:
    """What the callback needs to finish a login; sealed into the login-state cookie."""

    state: str
    nonce: str
    code_verifier: str
    return_to: str
    dpop_key: str | None = dataclasses.field(default=None, repr=False)
    """The session's DPoP private JWK (`oidc.dpop`), made at login so that `dpop_jkt` binds the code to it."""

    def to_dict(self) -> dict[str, str]:
        return {name: value for name, value in dataclasses.asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoginRequest:
        """Optional fields (those with a default) only when `data` has them."""
        return cls(
            **{
                f.name: str(data[f.name])
                for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING or data.get(f.name) is not None
            }
        )


def random_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2: S256 code challenge of `verifier`."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_login_request(return_to: str, *, dpop: bool = False) -> LoginRequest:
    """A login's secrets; with `dpop`, the new session's DPoP key too."""
    return LoginRequest(
        state=random_token(),
        nonce=random_token(),
        code_verifier=random_token(),
        return_to=return_to,
        dpop_key=DPoPKey.generate().private_jwk() if dpop else None,
    )


def redirect_uri(settings: Settings) -> str:
    return settings.public_url.rstrip("/") + settings.prefix + "/callback"


def build_authorization_params(settings: Settings, oidc: OIDCSettings, login: LoginRequest) -> dict[str, str]:
    """The authorization request's parameters, the same whether pushed (RFC 9126) or in the URL."""
    params: dict[str, str] = {
        **oidc.extra_authorize_params,
        "response_type": "code",
        "client_id": oidc.client_id,
        "redirect_uri": redirect_uri(settings),
        "scope": " ".join(oidc.scopes),
        "state": login.state,
        "nonce": login.nonce,
        "code_challenge": pkce_challenge(login.code_verifier),
        "code_challenge_method": "S256",
    }
    # OIDC Core §11: some providers ignore offline_access without prompt=consent; that is a
    # choice for `extra_authorize_params`, since it makes others ask for consent at every login.
    _add_resource(params, oidc)
    _add_dpop_jkt(params, login)
    return params


def build_authorization_url(provider: ProviderMetadata, params: Mapping[str, str]) -> str:
    """The authorization endpoint with `params` in its query."""
    separator = "&" if "?" in provider.authorization_endpoint else "?"
    return provider.authorization_endpoint + separator + urlencode(params, quote_via=quote)


def build_code_exchange_request(
    provider: ProviderMetadata, settings: Settings, auth: ClientAuthentication, *, code: str, code_verifier: str
) -> httpx.Request:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri(settings),
        "code_verifier": code_verifier,
    }
    return auth.request(provider.token_endpoint, form, provider)


def build_refresh_request(
    provider: ProviderMetadata, oidc: OIDCSettings, auth: ClientAuthentication, refresh_token: str
) -> httpx.Request:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    _add_resource(form, oidc)
    return auth.request(provider.token_endpoint, form, provider)


def build_client_credentials_request(
    provider: ProviderMetadata, oidc: OIDCSettings, auth: ClientAuthentication
) -> httpx.Request:
    form = {"grant_type": "client_credentials"}
    if oidc.client_scopes:
        form["scope"] = " ".join(oidc.client_scopes)
    _add_resource(form, oidc)
    return auth.request(provider.token_endpoint, form, provider)


def build_revocation_request(
    provider: ProviderMetadata, auth: ClientAuthentication, token: str, token_type_hint: str
) -> httpx.Request | None:
    if not provider.revocation_endpoint:
        return None
    form = {"token": token, "token_type_hint": token_type_hint}
    return auth.request(provider.revocation_endpoint, form, provider)


def build_end_session_url(
    provider: ProviderMetadata, settings: Settings, oidc: OIDCSettings, id_token: str | None
) -> str | None:
    """OIDC RP-Initiated Logout 1.0 §2; None when the provider has no end-session endpoint."""
    if not provider.end_session_endpoint:
        return None
    params = {
        "client_id": oidc.client_id,
        "post_logout_redirect_uri": oidc.post_logout_redirect_uri or settings.public_url.rstrip("/") + "/",
    }
    if id_token:
        params["id_token_hint"] = id_token
    separator = "&" if "?" in provider.end_session_endpoint else "?"
    return provider.end_session_endpoint + separator + urlencode(params, quote_via=quote)


def parse_token_response(
    response: httpx.Response, *, now: float, retry_after: float, dpop_key: str | None = None
) -> TokenSet:
    """Token endpoint answer → TokenSet. Raises RefreshRejected on `invalid_grant` (the grant is
    gone for good), ProviderUnavailable on 5xx, IdPError on anything else that is not a token.
    `dpop_key` is the key whose proof the request carried: a DPoP-bound token needs one."""
    if response.status_code >= 500:
        raise ProviderUnavailable(
            f"token endpoint answered {response.status_code}", retry_after=retry_after, status=response.status_code
        )
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise IdPError(
            f"token endpoint answered {response.status_code} without a JSON object", status=response.status_code
        )
    if response.status_code != 200 or "error" in data:
        kind = RefreshRejected if data.get("error") == "invalid_grant" else IdPError
        raise error_answer("token endpoint", response, data, kind)
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise IdPError('token response has no "access_token"', status=response.status_code)
    token_type = _token_type(data.get("token_type", "Bearer"), dpop=dpop_key is not None)
    expires_in = data.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)  # some providers send a string
    expires_at: float | None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        expires_at = now + float(expires_in)
    else:
        expires_at = jwt_exp(access_token)
    return TokenSet(
        access_token=access_token,
        refresh_token=data.get("refresh_token") or None,
        id_token=data.get("id_token") or None,
        expires_at=expires_at,
        token_type=token_type,
        scope=data.get("scope"),
        dpop_key=dpop_key,
    )


def error_answer(
    what: str, response: httpx.Response, data: Mapping[str, Any], kind: type[IdPError] = IdPError
) -> IdPError:
    """A provider's OAuth error answer (RFC 6749 §5.2) as the error to raise, naming its code."""
    error = str(data.get("error", ""))
    return kind(
        f"{what} answered {response.status_code} {error!r}",
        error=error,
        error_description=str(data.get("error_description", "")),
        status=response.status_code,
    )


def _token_type(value: object, *, dpop: bool) -> str:
    """RFC 6749 §5.1's `token_type`, case-insensitive, as "Bearer" or "DPoP" (RFC 9449 §5)."""
    token_type = {"bearer": "Bearer", "dpop": "DPoP"}.get(str(value).lower())
    if token_type is None:
        raise IdPError(f'token response "token_type" is {value!r}, expected "Bearer" or "DPoP"')
    if token_type == "DPoP" and not dpop:
        raise IdPError('token response "token_type" is "DPoP", but the request carried no DPoP proof')
    return token_type


def _add_dpop_jkt(params: dict[str, str], login: LoginRequest) -> None:
    """RFC 9449 §10: bind the authorization code to the session's DPoP key."""
    if login.dpop_key is not None:
        params["dpop_jkt"] = DPoPKey.from_jwk(login.dpop_key).jkt


def _add_resource(params: dict[str, str], oidc: OIDCSettings) -> None:
    if oidc.resource:
        params["resource"] = oidc.resource
    if oidc.audience:
        params["audience"] = oidc.audience


def check_issuer_parameter(issuer: str | None, provider: ProviderMetadata, *, profile: str) -> None:
    """RFC 9207 (mix-up attacks): the callback's `iss`, when sent, must be our provider's; it must be
    sent when the provider promises it, and always under FAPI 2.0 (§5.3.2.2). Raises LoginFailed."""
    if issuer is not None and issuer != provider.issuer:
        raise LoginFailed(f'callback parameter "iss" is {issuer[:200]!r}, expected {provider.issuer!r}')
    if issuer is None and (provider.authorization_response_iss_parameter_supported or profile == "fapi2"):
        raise LoginFailed('callback parameter "iss" is missing')
