"""Client authentication at the provider: every request to its token, PAR and revocation endpoints.

`ClientAuthentication.request` turns a form into an authenticated `httpx.Request` by one of
`client_secret_basic` (RFC 6749 §2.3.1), `client_secret_post`, or `private_key_jwt` (RFC 7523
§2.2 and §3, OIDC Core §9): a short-lived JWT signed with the BFF's key, `iss` = `sub` =
`client_id`, `aud` = the token endpoint (or the issuer, as FAPI 2.0 wants), a fresh `jti`
each time. Pure: the clock and the `jti` source are injected.

Owns the wire format of client authentication; leaves the keys to `bff.client_keys` and what
each endpoint's form holds to `bff.oidc_messages` and `bff.par`.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote

import httpx
import jwt
from starlette.datastructures import Secret

from bff.client_keys import ClientAuthMethod, ClientKey
from bff.discovery import ProviderMetadata
from bff.oidc_settings import OIDCSettings

__all__ = [
    "ASSERTION_LIFETIME",
    "CLIENT_ASSERTION_TYPE",
    "AssertionAudience",
    "ClientAuthentication",
    "build_client_assertion",
    "client_authentication",
]

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60  # seconds: long enough for clock skew, short enough to be useless if seen
AssertionAudience = Literal["token_endpoint", "issuer"]


def build_client_assertion(client_id: str, audience: str, key: ClientKey, *, now: float, jti: str) -> str:
    """RFC 7523 §3 client assertion, signed with `key`."""
    issued_at = int(now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": jti,
        "iat": issued_at,
        "exp": issued_at + ASSERTION_LIFETIME,
    }
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid, "typ": "JWT"})


def _random_jti() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class ClientAuthentication:
    """How this client proves who it is; `audience` chooses the assertion's `aud`."""

    client_id: str
    method: ClientAuthMethod
    client_secret: Secret = field(default_factory=lambda: Secret(""), repr=False)
    signing_key: ClientKey | None = field(default=None, repr=False)
    audience: AssertionAudience = "token_endpoint"
    clock: Callable[[], float] = field(default=time.time, repr=False)
    new_jti: Callable[[], str] = field(default=_random_jti, repr=False)

    def assertion_audience(self, provider: ProviderMetadata) -> str:
        return provider.issuer if self.audience == "issuer" else provider.token_endpoint

    def request(self, url: str, form: Mapping[str, str], provider: ProviderMetadata) -> httpx.Request:
        """POST `form` to `url`, authenticated; the same assertion audience for every endpoint
        (RFC 9126 §2 and RFC 7009 accept the token endpoint's or the issuer's)."""
        headers = {"accept": "application/json"}
        body = dict(form)
        if self.method == "client_secret_basic":
            # RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
            pair = f"{quote(self.client_id, safe='')}:{quote(str(self.client_secret), safe='')}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        elif self.method == "client_secret_post":
            body.update(client_id=self.client_id, client_secret=str(self.client_secret))
        else:
            assert self.signing_key is not None, "private_key_jwt without a key (config checks this)"
            assertion = build_client_assertion(
                self.client_id,
                self.assertion_audience(provider),
                self.signing_key,
                now=self.clock(),
                jti=self.new_jti(),
            )
            body.update(
                client_id=self.client_id, client_assertion_type=CLIENT_ASSERTION_TYPE, client_assertion=assertion
            )
        return httpx.Request("POST", url, data=body, headers=headers)


def client_authentication(
    oidc: OIDCSettings, keys: Sequence[ClientKey], *, clock: Callable[[], float] = time.time
) -> ClientAuthentication:
    """The configured authentication; with `private_key_jwt` the first of `keys` signs."""
    return ClientAuthentication(
        client_id=oidc.client_id,
        method=oidc.token_endpoint_auth_method,
        client_secret=oidc.client_secret,
        signing_key=keys[0] if keys else None,
        # FAPI 2.0 §5.3.2.1: the issuer identifier, as a string; elsewhere OIDC Core §9's token endpoint.
        audience="issuer" if oidc.profile == "fapi2" else "token_endpoint",
        clock=clock,
    )
