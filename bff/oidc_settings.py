"""The `[oidc]` section: `OIDCSettings`, its own rules, and the FAPI 2.0 profile switch.

`oidc_problems` checks the client's credentials (the secret the secret methods need, the key files
`private_key_jwt` signs with). `apply_profile` is `profile = "fapi2"` (FAPI 2.0 Security Profile,
§5.3.2 and §5.4 for clients): it fills in what the profile requires where the configuration is
silent (PAR required, DPoP on, a 10 s leeway) and reports, one line each, every setting that
contradicts it; `FAPI2_ALGORITHMS` are the signing algorithms it allows. What the profile changes
at run time is read from `profile` where it happens: the assertion's `aud` (`bff.oidc`), the
callback's `iss` (`bff.oidc_endpoints`), the ID-token algorithms (`bff.idtokens`). Reading and
merging the file is `bff.config`'s business.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from starlette.datastructures import Secret

from bff.client_keys import ClientAssertionAlg, ClientAuthMethod, client_credential_problems, load_client_keys
from bff.errors import ConfigError
from bff.settings_reader import URL, Duration

__all__ = ["FAPI2_ALGORITHMS", "FAPI2_MAX_LEEWAY", "OIDCSettings", "apply_profile", "oidc_problems"]

FAPI2_ALGORITHMS = frozenset({"PS256", "ES256", "EdDSA"})
"""FAPI 2.0 §5.4.1: the only JWS algorithms, for ID tokens and the client's own assertions."""
FAPI2_MAX_LEEWAY = 10.0
"""FAPI 2.0 §5.3.2 asks for tight `iat`/`exp` checks: a few seconds of clock skew, not 30."""


@dataclass(frozen=True)
class OIDCSettings:
    """The OpenID provider and this BFF's client registration there."""

    issuer: URL
    """Issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`. Required."""
    client_id: str
    """Client id of the BFF at the provider. Required."""
    client_secret: Secret = field(default_factory=lambda: Secret(""))
    """Client secret (confidential client). Required, but with `private_key_jwt`."""
    token_endpoint_auth_method: ClientAuthMethod = "client_secret_basic"
    """How the client authenticates at the token, PAR and revocation endpoints. Default: `client_secret_basic`."""
    client_keys: tuple[str, ...] = ()
    """`private_key_jwt` key files (PEM, JWK, JWKS): the first signs, all are published. Default: none."""
    client_assertion_alg: ClientAssertionAlg | None = None
    """`RS256`, `PS256` or `ES256`. Default: the JWK's `alg`, else `RS256` (RSA), `ES256` (P-256)."""
    pushed_authorization: Literal["auto", "required", "off"] = "auto"
    """RFC 9126 pushed authorization requests: `auto` (when listed), `required`, `off`. Default:
    `auto` (`required` with `profile = "fapi2"`)."""
    scopes: tuple[str, ...] = ("openid", "profile", "offline_access")
    """Scopes asked for at login. Default: `openid profile offline_access`."""
    client_scopes: tuple[str, ...] = ()
    """Scopes asked for with the client-credentials grant (`token = "client"` routes). Default: none."""
    resource: str | None = None
    """RFC 8707 resource indicator sent at authorize, token and refresh. Default: none."""
    audience: str | None = None
    """`audience` parameter some providers (Auth0) want instead of `resource`. Default: none."""
    extra_authorize_params: Mapping[str, str] = field(default_factory=dict)
    """Extra query parameters for the authorization request. Default: none."""
    post_logout_redirect_uri: URL | None = None
    """Where the provider sends the browser after logout. Default: `public_url` + `/`."""
    logout_id_token_hint: bool = False
    """Put the ID token as `id_token_hint` into the end-session URL that logout hands the browser
    (some providers require it); otherwise the URL carries `client_id`. Default: `false`."""
    leeway: Duration = 30
    """Clock-skew allowance when checking ID-token and logout-token times. Default: `30s` (`10s`,
    and at most that, with `profile = "fapi2"`)."""
    refresh_skew: Duration = 30
    """Refresh an access token this long before it expires. `0` turns proactive refresh off. Default: `30s`."""
    timeout: Duration = 10
    """Timeout of each call to the provider. Default: `10s`."""
    retry_after: Duration = 5
    """`Retry-After` sent with the 503 when the provider cannot be reached. Default: `5s`."""
    dpop: bool = False
    """DPoP (RFC 9449): each session gets its own ES256 key; the token requests carry proofs, the
    access tokens are bound to the key, and `token = "user"` routes send `Authorization: DPoP`
    with a fresh proof per request. Default: `false` (`true` with `profile = "fapi2"`)."""
    profile: Literal["oidc", "fapi2"] = "oidc"
    """`fapi2`: the FAPI 2.0 Security Profile's client rules (see README "FAPI 2.0 profile"): turns
    on PAR, DPoP and the strict checks, and refuses settings that contradict it. Default: `oidc`."""


def oidc_problems(oidc: OIDCSettings) -> list[str]:
    """The section's own rules: the client's credentials."""
    method, secret = oidc.token_endpoint_auth_method, str(oidc.client_secret)
    return client_credential_problems(method, secret, oidc.client_keys, oidc.client_assertion_alg)


def apply_profile(oidc: OIDCSettings, said: Collection[str], problems: list[str]) -> OIDCSettings:
    """`oidc` under its profile: with `fapi2`, the settings not in `said` (the keys the
    configuration gave) take the profile's values, and each given one that contradicts it is a
    line in `problems`."""
    if oidc.profile != "fapi2":
        return oidc
    rule = 'contradicts profile = "fapi2"'
    if "pushed_authorization" in said and oidc.pushed_authorization != "required":
        problems.append(f"oidc.pushed_authorization: {oidc.pushed_authorization!r} {rule} (FAPI 2.0 requires PAR)")
    if "dpop" in said and not oidc.dpop:
        problems.append(f"oidc.dpop: false {rule} (FAPI 2.0 requires sender-constrained tokens: DPoP here)")
    if oidc.token_endpoint_auth_method != "private_key_jwt":
        problems.append(
            f"oidc.token_endpoint_auth_method: {oidc.token_endpoint_auth_method!r} {rule} (FAPI 2.0 allows "
            "private_key_jwt or mTLS; this BFF does private_key_jwt)"
        )
    if "leeway" in said and oidc.leeway > FAPI2_MAX_LEEWAY:
        problems.append(f"oidc.leeway: {oidc.leeway:g}s {rule} (at most {FAPI2_MAX_LEEWAY:g}s)")
    problems.extend(_assertion_algorithm_problems(oidc, rule))
    return dataclasses.replace(
        oidc,
        pushed_authorization="required",
        dpop=True,
        leeway=oidc.leeway if "leeway" in said else FAPI2_MAX_LEEWAY,
    )


def _assertion_algorithm_problems(oidc: OIDCSettings, rule: str) -> list[str]:
    if oidc.token_endpoint_auth_method != "private_key_jwt" or not oidc.client_keys:
        return []
    try:
        keys = load_client_keys(oidc.client_keys, oidc.client_assertion_alg)
    except ConfigError:
        return []  # the file itself is reported by oidc_problems
    return [
        f"oidc.client_keys[{i}]: signs with {key.alg} {rule} (use PS256 or ES256: oidc.client_assertion_alg, "
        'or the JWK\'s "alg")'
        for i, key in enumerate(keys)
        if key.alg not in FAPI2_ALGORITHMS
    ]
