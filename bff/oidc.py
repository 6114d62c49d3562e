"""OIDCClient: everything the BFF says to the OpenID provider, and the checks on what it answers.

Each call is a pure *build* step (an `httpx.Request`), one `send`, and a pure *parse* step, so the
protocol logic is testable without sockets. Discovery and the JWKS are cached; an unknown `kid`
refetches the JWKS once (key rotation), at most every `JWKS_REFETCH_INTERVAL` seconds.

Owns: discovery, PKCE/state/nonce, the authorization URL, code exchange, refresh, client
credentials, revocation (RFC 7009), the end-session URL, ID-token and logout-token validation.
Leaves to others: where tokens are kept (`session`), when to refresh (`tokens`), replay of
logout-token `jti`s (`endpoints`, through the store).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import jwt

from bff.config import OIDCSettings, Settings
from bff.errors import BadRequest, IdPError, LoginFailed, ProviderUnavailable, RefreshRejected
from bff.tokenset import TokenSet

DISCOVERY_TTL = 3600.0
JWKS_REFETCH_INTERVAL = 10.0
LOGOUT_TOKEN_MAX_AGE = 300.0
"""Logout tokens issued longer ago than this (plus leeway) are refused, so remembering each `jti`
for this long is enough to refuse every replay."""
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
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

    @property
    def algorithms(self) -> list[str]:
        """The provider's signing algorithms that this client accepts."""
        return [alg for alg in self.id_token_signing_alg_values_supported if alg in ASYMMETRIC_ALGORITHMS]


@dataclasses.dataclass(frozen=True)
class LoginRequest:
    """What the callback needs to finish a login; sealed into the login-state cookie."""

    state: str
    nonce: str
    code_verifier: str
    return_to: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoginRequest:
        return cls(**{f.name: str(data[f.name]) for f in dataclasses.fields(cls)})


def random_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2: S256 code challenge of `verifier`."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_login_request(return_to: str) -> LoginRequest:
    return LoginRequest(state=random_token(), nonce=random_token(), code_verifier=random_token(), return_to=return_to)


def redirect_uri(settings: Settings) -> str:
    return settings.public_url.rstrip("/") + settings.prefix + "/callback"


def parse_discovery(response: httpx.Response, expected_issuer: str, *, retry_after: float) -> ProviderMetadata:
    """Discovery document → metadata; refuses one whose `issuer` is not the configured one."""
    data = _json_or_unavailable(response, "discovery", retry_after=retry_after)
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
    )


def build_authorization_url(
    provider: ProviderMetadata, settings: Settings, oidc: OIDCSettings, login: LoginRequest
) -> str:
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
    separator = "&" if "?" in provider.authorization_endpoint else "?"
    return provider.authorization_endpoint + separator + urlencode(params, quote_via=quote)


def build_code_exchange_request(
    provider: ProviderMetadata, settings: Settings, oidc: OIDCSettings, *, code: str, code_verifier: str
) -> httpx.Request:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri(settings),
        "code_verifier": code_verifier,
    }
    return _token_request(provider.token_endpoint, oidc, form)


def build_refresh_request(provider: ProviderMetadata, oidc: OIDCSettings, refresh_token: str) -> httpx.Request:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    _add_resource(form, oidc)
    return _token_request(provider.token_endpoint, oidc, form)


def build_client_credentials_request(provider: ProviderMetadata, oidc: OIDCSettings) -> httpx.Request:
    form = {"grant_type": "client_credentials"}
    if oidc.client_scopes:
        form["scope"] = " ".join(oidc.client_scopes)
    _add_resource(form, oidc)
    return _token_request(provider.token_endpoint, oidc, form)


def build_revocation_request(
    provider: ProviderMetadata, oidc: OIDCSettings, token: str, token_type_hint: str
) -> httpx.Request | None:
    if not provider.revocation_endpoint:
        return None
    form = {"token": token, "token_type_hint": token_type_hint}
    return _token_request(provider.revocation_endpoint, oidc, form)


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


def parse_token_response(response: httpx.Response, *, now: float, retry_after: float) -> TokenSet:
    """Token endpoint answer → TokenSet. Raises RefreshRejected on `invalid_grant` (the grant is
    gone for good), ProviderUnavailable on 5xx, IdPError on anything else that is not a token."""
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
        error = str(data.get("error", ""))
        description = str(data.get("error_description", ""))
        kind = RefreshRejected if error == "invalid_grant" else IdPError
        raise kind(
            f"token endpoint answered {response.status_code} {error!r}",
            error=error,
            error_description=description,
            status=response.status_code,
        )
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise IdPError('token response has no "access_token"', status=response.status_code)
    token_type = str(data.get("token_type", "Bearer"))
    if token_type.lower() not in ("bearer", "dpop"):
        raise IdPError(f'token response "token_type" is {token_type!r}, expected "Bearer"')
    expires_in = data.get("expires_in")
    if isinstance(expires_in, str) and expires_in.isdigit():
        expires_in = int(expires_in)  # some providers send a string
    expires_at: float | None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        expires_at = now + float(expires_in)
    else:
        expires_at = _jwt_exp(access_token)
    return TokenSet(
        access_token=access_token,
        refresh_token=data.get("refresh_token") or None,
        id_token=data.get("id_token") or None,
        expires_at=expires_at,
        token_type="Bearer",  # noqa: S106 (a token type, not a secret)
        scope=data.get("scope"),
    )


def check_id_token_claims(claims: Mapping[str, Any], oidc: OIDCSettings, *, nonce: str, now: float) -> None:
    """OIDC Core §3.1.3.7, the checks PyJWT leaves to the caller (times against the injected clock)."""
    _check_times(claims, oidc.leeway, now, what="ID token", require_exp=True)
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    # §3.1.3.7 items 4 and 5: with several audiences azp must be present and be this client.
    if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != oidc.client_id:
        raise LoginFailed(f'ID token "azp" is {claims.get("azp")!r}, expected {oidc.client_id!r}')
    # §3.1.3.7 item 11: nonce must match the one sent with this login.
    if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], nonce):
        raise LoginFailed('ID token "nonce" does not match the login request')


def check_logout_token_claims(claims: Mapping[str, Any], oidc: OIDCSettings, *, now: float) -> None:
    """Back-Channel Logout 1.0 §2.6, items 3 to 6 (signature, iss and aud were checked by PyJWT)."""
    _check_times(claims, oidc.leeway, now, what="logout token", require_exp=False)
    if claims["iat"] < now - LOGOUT_TOKEN_MAX_AGE - oidc.leeway:
        raise BadRequest('logout token "iat" is too old')
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise BadRequest(f'logout token "events" lacks {BACKCHANNEL_LOGOUT_EVENT!r}')
    if "nonce" in claims:
        raise BadRequest('logout token must not contain "nonce"')
    if not isinstance(claims.get("sub"), str) and not isinstance(claims.get("sid"), str):
        raise BadRequest('logout token has neither "sub" nor "sid"')
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise BadRequest('logout token has no "jti"')


class OIDCClient:
    """The provider as seen from this BFF. Holds the discovery and JWKS caches of one process."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        assert settings.oidc is not None
        self.settings = settings
        self.config: OIDCSettings = settings.oidc
        self._http = http
        self._clock = clock
        self._provider: ProviderMetadata | None = None
        self._provider_fetched_at = 0.0
        self._jwks: dict[str, dict[str, Any]] = {}
        self._jwks_fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self._jwks_lock = asyncio.Lock()

    async def discover(self, *, force: bool = False) -> ProviderMetadata:
        """The provider's metadata, fetched at most every `DISCOVERY_TTL` seconds; a failed
        refetch keeps using the cached copy."""
        now = self._clock()
        if not force and self._provider is not None and now - self._provider_fetched_at < DISCOVERY_TTL:
            return self._provider
        async with self._lock:
            if not force and self._provider is not None and now - self._provider_fetched_at < DISCOVERY_TTL:
                return self._provider
            url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                response = await self._send(httpx.Request("GET", url, headers={"accept": "application/json"}))
                provider = parse_discovery(response, self.config.issuer, retry_after=self.config.retry_after)
            except ProviderUnavailable:
                if self._provider is None or force:
                    raise
                return self._provider
            self._provider, self._provider_fetched_at = provider, now
            return provider

    async def authorization_url(self, login: LoginRequest) -> str:
        return build_authorization_url(await self.discover(), self.settings, self.config, login)

    async def exchange_code(self, code: str, login: LoginRequest) -> tuple[TokenSet, dict[str, Any]]:
        """Code → tokens, and the validated ID-token claims."""
        provider = await self.discover()
        request = build_code_exchange_request(
            provider, self.settings, self.config, code=code, code_verifier=login.code_verifier
        )
        tokens = self._parse_tokens(await self._send(request))
        if not tokens.id_token:
            raise IdPError('token response has no "id_token" (is the "openid" scope configured?)')
        claims = await self.validate_id_token(tokens.id_token, nonce=login.nonce)
        return tokens, claims

    async def refresh(self, refresh_token: str) -> TokenSet:
        """Raises RefreshRejected on `invalid_grant`, ProviderUnavailable when unreachable or 5xx."""
        provider = await self.discover()
        return self._parse_tokens(await self._send(build_refresh_request(provider, self.config, refresh_token)))

    async def client_credentials(self) -> TokenSet:
        provider = await self.discover()
        return self._parse_tokens(await self._send(build_client_credentials_request(provider, self.config)))

    async def revoke(self, token: str, token_type_hint: str = "refresh_token") -> bool:  # noqa: S107
        """RFC 7009; False when the provider has no revocation endpoint."""
        request = build_revocation_request(await self.discover(), self.config, token, token_type_hint)
        if request is None:
            return False
        response = await self._send(request)
        if response.status_code >= 500:
            raise ProviderUnavailable(
                f"revocation endpoint answered {response.status_code}", status=response.status_code
            )
        if response.status_code != 200:
            raise IdPError(f"revocation endpoint answered {response.status_code}", status=response.status_code)
        return True

    async def end_session_url(self, id_token: str | None) -> str | None:
        return build_end_session_url(await self.discover(), self.settings, self.config, id_token)

    async def validate_id_token(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        claims = await self._decode(id_token, require=["iss", "sub", "aud", "exp", "iat"], error=LoginFailed)
        check_id_token_claims(claims, self.config, nonce=nonce, now=self._clock())
        return claims

    async def validate_logout_token(self, logout_token: str) -> dict[str, Any]:
        """Back-Channel Logout 1.0 §2.6, but for `jti` replay, which needs the store."""
        claims = await self._decode(logout_token, require=["iss", "aud", "iat", "jti", "events"], error=BadRequest)
        check_logout_token_claims(claims, self.config, now=self._clock())
        return claims

    async def _decode(
        self, token: str, *, require: Sequence[str], error: type[BadRequest | LoginFailed]
    ) -> dict[str, Any]:
        what = "ID token" if error is LoginFailed else "logout token"
        provider = await self.discover()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise error(f"{what} is not a JWT") from None
        alg = header.get("alg")
        if alg not in provider.algorithms:
            raise error(f"{what} algorithm {alg!r} is not one of {provider.algorithms}")
        jwk = await self._signing_key(header.get("kid"), alg)
        if jwk is None:
            raise error(f"{what} is signed with an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=jwt.PyJWK(jwk, algorithm=alg),
                algorithms=[alg],
                audience=self.config.client_id,
                issuer=provider.issuer,
                # exp, iat and nbf are checked against the injected clock in check_*_claims.
                options={"require": list(require), "verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError as exc:
            raise error(f"{what} rejected: {exc}") from None
        return claims

    async def _signing_key(self, kid: str | None, alg: str) -> dict[str, Any] | None:
        key = self._find_key(kid, alg)
        if key is not None:
            return key
        async with self._jwks_lock:  # concurrent validations with an unknown kid fetch once
            fetched_at = self._jwks_fetched_at
            if fetched_at is None or self._clock() - fetched_at >= JWKS_REFETCH_INTERVAL:
                await self._fetch_jwks()  # first use, or the provider may have rotated its keys
            return self._find_key(kid, alg)

    def _find_key(self, kid: str | None, alg: str) -> dict[str, Any] | None:
        kty = {"R": "RSA", "P": "RSA", "E": "EC"}.get(alg[0], "OKP")
        candidates = [
            key
            for key in self._jwks.values()
            if key.get("kty") == kty and key.get("alg", alg) == alg and (kid is None or key.get("kid") == kid)
        ]
        # Without a kid the key must be unambiguous (OIDC Core §10.1).
        return candidates[0] if len(candidates) == 1 or (kid is not None and candidates) else None

    async def _fetch_jwks(self) -> None:
        provider = await self.discover()
        response = await self._send(httpx.Request("GET", provider.jwks_uri, headers={"accept": "application/json"}))
        data = _json_or_unavailable(response, "JWKS", retry_after=self.config.retry_after)
        try:
            jwt.PyJWKSet.from_dict(data)  # refuses a set without one usable key
        except jwt.PyJWTError as exc:
            raise IdPError(f"JWKS unusable: {exc}") from None
        keys = [key for key in data["keys"] if isinstance(key, dict) and key.get("use", "sig") == "sig"]
        self._jwks = {str(key.get("kid", i)): key for i, key in enumerate(keys)}
        self._jwks_fetched_at = self._clock()

    def _parse_tokens(self, response: httpx.Response) -> TokenSet:
        return parse_token_response(response, now=self._clock(), retry_after=self.config.retry_after)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._http.send(request)
            await response.aread()
        except httpx.TransportError as exc:
            raise ProviderUnavailable(
                f"provider unreachable at {request.url.host}: {type(exc).__name__}", retry_after=self.config.retry_after
            ) from None
        return response


def _token_request(url: str, oidc: OIDCSettings, form: dict[str, str]) -> httpx.Request:
    headers = {"accept": "application/json"}
    secret = str(oidc.client_secret)
    if oidc.token_endpoint_auth_method == "client_secret_basic":
        # RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
        pair = f"{quote(oidc.client_id, safe='')}:{quote(secret, safe='')}"
        headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    else:
        form = {**form, "client_id": oidc.client_id, "client_secret": secret}
    return httpx.Request("POST", url, data=form, headers=headers)


def _add_resource(params: dict[str, str], oidc: OIDCSettings) -> None:
    if oidc.resource:
        params["resource"] = oidc.resource
    if oidc.audience:
        params["audience"] = oidc.audience


def _check_times(claims: Mapping[str, Any], leeway: float, now: float, *, what: str, require_exp: bool) -> None:
    error = LoginFailed if what == "ID token" else BadRequest
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name)
        if (value is not None or (name == "exp" and require_exp) or name == "iat") and (
            not isinstance(value, int | float) or isinstance(value, bool)
        ):
            raise error(f'{what} "{name}" must be a number')
    if "exp" in claims and claims["exp"] <= now - leeway:
        raise error(f"{what} has expired")
    if claims["iat"] > now + leeway or claims.get("nbf", 0) > now + leeway:
        raise error(f"{what} is not valid yet")


def _json_or_unavailable(response: httpx.Response, what: str, *, retry_after: float) -> dict[str, Any]:
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


def _jwt_exp(token: str) -> float | None:
    """The `exp` of a JWT access token, unverified (only used to know when to refresh)."""
    if token.count(".") != 2:
        return None
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.PyJWTError:
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
