"""The development provider's authorization requests: what a valid one holds, and the checks.

Pure: `check_authorization_request` reads the query of `GET /authorize` (after the client and
its redirect URI were found, which decides whether an error may be redirected at all) and
either returns what the login form needs to finish it, or raises `AuthorizationRefused` with the
RFC 6749 §4.1.2.1 error code to send back. Serving the form and issuing the code is
`demo.idp`'s business.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PKCE_VALUE", "AuthorizationRefused", "AuthorizationRequest", "Transaction", "check_authorization_request"]

PKCE_VALUE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 §4.1: unreserved characters


class AuthorizationRefused(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


@dataclass(frozen=True)
class AuthorizationRequest:
    scope: str
    state: str
    nonce: str
    code_challenge: str


@dataclass
class Transaction:
    """An authorization request waiting for the login form."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str
    nonce: str
    code_challenge: str
    expires_at: float


def check_authorization_request(params: Mapping[str, str]) -> AuthorizationRequest:
    """What this provider demands: the code flow, `openid`, PKCE S256, `state` and `nonce`, and
    no `prompt=none` (it keeps no login session to answer one with)."""
    if params.get("response_type") != "code":
        raise AuthorizationRefused("unsupported_response_type", "only response_type=code is supported")
    scope = params.get("scope", "")
    if "openid" not in scope.split():
        raise AuthorizationRefused("invalid_scope", "scope must include openid")
    challenge = params.get("code_challenge", "")
    if params.get("code_challenge_method") != "S256" or not PKCE_VALUE.match(challenge):
        raise AuthorizationRefused(
            "invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256"
        )
    state = params.get("state", "")
    if not state:
        raise AuthorizationRefused("invalid_request", "state is required")
    nonce = params.get("nonce", "")
    if not nonce:
        raise AuthorizationRefused("invalid_request", "nonce is required")
    if params.get("prompt") == "none":
        raise AuthorizationRefused("login_required", "this provider keeps no login session between sign-ins")
    return AuthorizationRequest(scope=scope, state=state, nonce=nonce, code_challenge=challenge)
