"""The OAuth 2.0 wire format of the development provider. DEVELOPMENT ONLY.

Owns the client registrations (`DemoClient`) and their authentication at the token and revocation
endpoints (RFC 6749 §2.3), reading urlencoded form bodies (§3.2), error responses (§5.2) and
redirects with a query. What the endpoints do with them is `idp.py`'s business.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = [
    "NO_STORE",
    "DemoClient",
    "Form",
    "OAuthError",
    "authenticate_client",
    "discovery_document",
    "error_response",
    "first_value",
    "form_field",
    "read_form",
    "required_field",
    "with_query",
]


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: `error` code and a description for `error_description`."""

    def __init__(self, error: str, description: str, status_code: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status_code = status_code


NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
Form = Mapping[str, list[str]]  # a parsed urlencoded body: name → values


@dataclass(frozen=True)
class DemoClient:
    """A client registration. The BFF is one; tests may add others."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    backchannel_logout_uri: str | None = None


def authenticate_client(clients: Mapping[str, DemoClient], request: Request, form: Form) -> DemoClient:
    """client_secret_basic or client_secret_post, exactly one of them (RFC 6749 §2.3)."""
    authorization = request.headers.get("authorization", "")
    if authorization[:6].lower() == "basic ":
        if "client_secret" in form:
            raise OAuthError("invalid_request", "use one client authentication method, not two")
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
        raw_id, _, raw_secret = decoded.partition(":")
        # RFC 6749 §2.3.1: both parts are form-urlencoded before the Basic encoding.
        client_id, secret = unquote(raw_id.replace("+", " ")), unquote(raw_secret.replace("+", " "))
    else:
        client_id, secret = form_field(form, "client_id") or "", form_field(form, "client_secret") or ""
    client = clients.get(client_id)
    if client is None or not secret or not hmac.compare_digest(secret.encode(), client.client_secret.encode()):
        raise OAuthError("invalid_client", "client authentication failed", 401)
    return client


def error_response(exc: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if exc.error == "invalid_client":
        headers["WWW-Authenticate"] = 'Basic realm="dev-idp"'
    body = {"error": exc.error, "error_description": exc.description}
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


async def read_form(request: Request) -> Form:
    """An `application/x-www-form-urlencoded` body (RFC 6749 §3.2); anything else reads as empty.
    Parsed here rather than by `request.form()`, which needs python-multipart."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return {}
    try:
        return parse_qs((await request.body()).decode(), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        return {}


def form_field(form: Form, name: str) -> str | None:
    values = form.get(name, [])
    if len(values) > 1:
        raise OAuthError("invalid_request", f"parameter {name!r} appears more than once")
    return values[0] if values else None


def first_value(form: Form, name: str) -> str:
    values = form.get(name, [])
    return values[0] if values else ""


def required_field(form: Form, name: str) -> str:
    value = form_field(form, name)
    if not value:
        raise OAuthError("invalid_request", f"parameter {name!r} is required")
    return value


def with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, urlencode(params)) if part)
    return urlunsplit(parts._replace(query=query))


def discovery_document(issuer: str, *, algorithm: str) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 §3: what the development provider offers, at `issuer`."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "revocation_endpoint": f"{issuer}/revoke",
        "end_session_endpoint": f"{issuer}/end-session",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": [algorithm],
        "subject_types_supported": ["public"],
        "scopes_supported": ["openid", "profile", "offline_access"],
        "claims_supported": ["sub", "name", "preferred_username", "sid", "auth_time", "nonce"],
        "authorization_response_iss_parameter_supported": True,
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }
