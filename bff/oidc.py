"""OIDCClient: everything the BFF says to the OpenID provider, and the checks on what it answers.

Each call is a pure *build* step (an `httpx.Request`, from `bff.oidc_messages`), one `send`, and a
pure *parse* step (there too), so the protocol logic is testable without sockets. Discovery is
cached for `DISCOVERY_TTL` seconds.

Owns: talking to the provider: fetching discovery, the authorization URL (pushed first when PAR is
on), code exchange, refresh, client credentials, revocation (RFC 7009), the end-session URL, and
the client's keys and authentication, loaded once. Leaves to others: how each of those messages
is built and parsed, PKCE/state/nonce (`oidc_messages`, `par`, `client_auth`), the discovery document
itself (`discovery`), the JWKS and ID- and logout-token validation (`idtokens`, reached through
`validate_id_token` and `validate_logout_token`), where tokens are kept (`session`), when to
refresh (`tokens`), replay of logout-token `jti`s (`endpoints`, through the store), DPoP proofs
and the provider's nonce on the token requests of a session with a key (`dpop_sending`, `dpop`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from bff.client_auth import ClientAuthentication, client_authentication
from bff.client_keys import ClientKey, load_client_keys
from bff.config import Settings
from bff.discovery import ProviderMetadata, parse_discovery
from bff.dpop import DPoPKey, nonces
from bff.dpop_sending import send_with_proof
from bff.errors import BffError, IdPError, ProviderUnavailable
from bff.idtokens import TokenValidator
from bff.login import send_to_source
from bff.oidc_messages import (
    LoginRequest,
    build_authorization_params,
    build_authorization_url,
    build_client_credentials_request,
    build_code_exchange_request,
    build_end_session_url,
    build_refresh_request,
    build_revocation_request,
    parse_token_response,
)
from bff.oidc_settings import OIDCSettings
from bff.par import build_par_request, parse_par_response, pushed_authorization_url, should_push
from bff.tokenset import TokenSet

__all__ = ["DISCOVERY_TTL", "OIDCClient"]

log = logging.getLogger("bff.oidc")

DISCOVERY_TTL = 3600.0


class OIDCClient:
    """The provider as seen from this BFF. Holds the discovery and JWKS caches of one process."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        assert settings.oidc is not None
        self.settings = settings
        self.config: OIDCSettings = settings.oidc
        self.refresh_skew = self.config.refresh_skew
        self.timeout = self.config.timeout
        self._http = http
        self._clock = clock
        self._provider: ProviderMetadata | None = None
        self._provider_fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._validator = TokenValidator(self.config, discover=self.discover, send=self._send, clock=clock)
        self.client_keys: tuple[ClientKey, ...] = ()
        if self.config.token_endpoint_auth_method == "private_key_jwt":
            self.client_keys = load_client_keys(self.config.client_keys, self.config.client_assertion_alg)
        self.client_auth: ClientAuthentication = client_authentication(self.config, self.client_keys, clock=clock)

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
        """Where /bff/login sends the browser; pushes the request first when PAR is on (RFC 9126)."""
        provider = await self.discover()
        params = build_authorization_params(self.settings, self.config, login)
        if not should_push(provider, self.config.pushed_authorization):
            return build_authorization_url(provider, params)
        response = await self._send(build_par_request(provider, self.client_auth, params))
        request_uri = parse_par_response(response, retry_after=self.config.retry_after)
        return pushed_authorization_url(provider, self.config.client_id, request_uri)

    async def exchange_code(self, code: str, login: LoginRequest) -> tuple[TokenSet, dict[str, Any]]:
        """Code → tokens, and the validated ID-token claims."""
        provider = await self.discover()
        tokens = await self._token_call(
            lambda: build_code_exchange_request(
                provider, self.settings, self.client_auth, code=code, code_verifier=login.code_verifier
            ),
            login.dpop_key,
        )
        if not tokens.id_token:
            raise IdPError('token response has no "id_token" (is the "openid" scope configured?)')
        claims = await self.validate_id_token(tokens.id_token, nonce=login.nonce)
        return tokens, claims

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        """New tokens for `tokens`' refresh token, with a proof of its DPoP key when it has one.
        Raises RefreshRejected on `invalid_grant`, ProviderUnavailable when unreachable or 5xx."""
        provider = await self.discover()
        refresh_token = tokens.refresh_token or ""
        return await self._token_call(
            lambda: build_refresh_request(provider, self.config, self.client_auth, refresh_token), tokens.dpop_key
        )

    async def client_credentials(self) -> TokenSet:
        provider = await self.discover()
        return await self._token_call(
            lambda: build_client_credentials_request(provider, self.config, self.client_auth), None
        )

    async def revoke(self, token: str, token_type_hint: str = "refresh_token") -> bool:  # noqa: S107
        """RFC 7009; False when the provider has no revocation endpoint."""
        request = build_revocation_request(await self.discover(), self.client_auth, token, token_type_hint)
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

    async def end(self, tokens: TokenSet) -> str | None:
        """Logout: revoke the refresh token (RFC 7009) and hand back the end-session URL. Neither
        failing stops the local logout; the grant then ends at its own expiry."""
        if tokens.refresh_token:
            try:
                await self.revoke(tokens.refresh_token, "refresh_token")
            except BffError as exc:
                log.warning("Revocation failed at logout: %s", exc.detail)
        try:
            return await self.end_session_url(tokens.id_token if self.config.logout_id_token_hint else None)
        except BffError:
            return None

    async def ready(self) -> None:
        """The provider answers discovery, and can do what the configuration asks of it."""
        should_push(await self.discover(force=True), self.config.pushed_authorization)

    async def validate_id_token(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        return await self._validator.validate_id_token(id_token, nonce=nonce)

    async def validate_logout_token(self, logout_token: str) -> dict[str, Any]:
        """Back-Channel Logout 1.0 §2.6, but for `jti` replay, which needs the store."""
        return await self._validator.validate_logout_token(logout_token)

    async def _token_call(self, build: Callable[[], httpx.Request], dpop_key: str | None) -> TokenSet:
        """Send the token-endpoint request `build` makes (with a DPoP proof of `dpop_key`, if any)
        and parse the answer."""
        if dpop_key is None:
            response = await self._send(build())
        else:
            response = await send_with_proof(self._send, build, DPoPKey.from_jwk(dpop_key), nonces)
        tokens = parse_token_response(
            response, now=self._clock(), retry_after=self.config.retry_after, dpop_key=dpop_key
        )
        if dpop_key is not None and tokens.token_type != "DPoP" and self.config.profile == "fapi2":
            raise IdPError('the provider issued a Bearer token; profile "fapi2" requires DPoP-bound tokens')
        return tokens

    async def _send(self, request: httpx.Request) -> httpx.Response:
        return await send_to_source(self._http, request, who="provider", retry_after=self.config.retry_after)
