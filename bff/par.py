"""Pushed authorization requests (RFC 9126): whether to push, the push, its answer, the redirect.

With `oidc.pushed_authorization` `auto` (the default) the BFF pushes when discovery lists a
`pushed_authorization_request_endpoint`; `required` pushes always and refuses a provider
without one; `off` never pushes, and refuses a provider that says
`require_pushed_authorization_requests` rather than send the browser to its error page. The
pushed parameters are `oidc_messages.build_authorization_params`, exactly what the plain URL
would carry; the browser then sees only `client_id` and `request_uri`.

Owns the PAR wire format, pure (build → send → parse); leaves sending to `bff.oidc` and the
client's authentication to `bff.client_auth`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal
from urllib.parse import quote, urlencode

import httpx

from bff.client_auth import ClientAuthentication
from bff.discovery import ProviderMetadata
from bff.errors import IdPError, ProviderUnavailable
from bff.oidc_messages import error_answer

__all__ = ["PushedAuthorization", "build_par_request", "parse_par_response", "pushed_authorization_url", "should_push"]

PushedAuthorization = Literal["auto", "required", "off"]


def should_push(provider: ProviderMetadata, mode: PushedAuthorization) -> bool:
    """Whether this login pushes its request; IdPError (502) when the setting and the provider
    cannot agree."""
    listed = provider.pushed_authorization_request_endpoint is not None
    if mode == "off":
        if provider.require_pushed_authorization_requests:
            raise IdPError(
                'the provider requires pushed authorization requests ("require_pushed_authorization_requests")'
                ' but oidc.pushed_authorization is "off"'
            )
        return False
    if not listed and (mode == "required" or provider.require_pushed_authorization_requests):
        raise IdPError(
            'the provider lists no "pushed_authorization_request_endpoint" but pushed authorization'
            f" requests are required ({'oidc.pushed_authorization' if mode == 'required' else 'by the provider'})"
        )
    return listed


def build_par_request(
    provider: ProviderMetadata, auth: ClientAuthentication, params: Mapping[str, str]
) -> httpx.Request:
    """RFC 9126 §2.1: the authorization parameters as a form, with the client's authentication."""
    assert provider.pushed_authorization_request_endpoint is not None, "should_push said yes"
    return auth.request(provider.pushed_authorization_request_endpoint, params, provider)


def parse_par_response(response: httpx.Response, *, retry_after: float) -> str:
    """RFC 9126 §2.2-2.3: the `request_uri` of a 201 answer. ProviderUnavailable on 5xx,
    IdPError naming the provider's `error` code otherwise (its description stays out of the
    detail, as at the token endpoint)."""
    if response.status_code >= 500:
        raise ProviderUnavailable(
            f"pushed authorization request endpoint answered {response.status_code}",
            retry_after=retry_after,
            status=response.status_code,
        )
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {}
    if response.status_code != 201:
        raise error_answer("pushed authorization request endpoint", response, data)
    request_uri = data.get("request_uri")
    if not isinstance(request_uri, str) or not request_uri:
        raise IdPError('pushed authorization response has no "request_uri"', status=response.status_code)
    return request_uri


def pushed_authorization_url(provider: ProviderMetadata, client_id: str, request_uri: str) -> str:
    """RFC 9126 §4: the authorization endpoint with `client_id` and `request_uri` only."""
    separator = "&" if "?" in provider.authorization_endpoint else "?"
    query = urlencode({"client_id": client_id, "request_uri": request_uri}, quote_via=quote)
    return provider.authorization_endpoint + separator + query
