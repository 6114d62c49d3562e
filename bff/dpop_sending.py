"""DPoP on the provider's token-endpoint requests (RFC 9449 §5, §8): the proof added to a built
request, and the provider's nonce honoured.

Owns `send_with_proof`: one request, signed with the session's key and the newest nonce the
provider gave; a 400 `use_dpop_nonce` with a `DPoP-Nonce` header is answered by one retry with that
nonce, and every answer's `DPoP-Nonce` is remembered for the next proof. The retry is built anew:
a `private_key_jwt` assertion is accepted once (its `jti`), so resending the first would fail. Leaves building the
request and parsing the answer to `bff.oidc_messages`, the keys, proofs and nonce memory to
`bff.dpop`, the network (and its failures) to the `send` it is given (`bff.oidc.OIDCClient`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from bff.dpop import DPoPKey, NonceMemory, origin_of

__all__ = ["send_with_proof"]


async def send_with_proof(
    send: Callable[[httpx.Request], Awaitable[httpx.Response]],
    build: Callable[[], httpx.Request],
    key: DPoPKey,
    nonces: NonceMemory,
) -> httpx.Response:
    """The request `build` makes, with a `DPoP` proof of `key` (htm, htu from the request), sent
    by `send`; built and sent once more when the provider asks for a (new) nonce."""
    request = build()
    url = str(request.url)
    origin = origin_of(url)
    nonce = nonces.get(origin)
    request.headers["dpop"] = key.proof(request.method, url, nonce=nonce)
    response = await send(request)
    fresh = nonces.remember(origin, response.headers.get("dpop-nonce"))
    if fresh is None or fresh == nonce or not _asks_for_nonce(response):
        return response
    request = build()
    request.headers["dpop"] = key.proof(request.method, url, nonce=fresh)
    response = await send(request)
    nonces.remember(origin, response.headers.get("dpop-nonce"))
    return response


def _asks_for_nonce(response: httpx.Response) -> bool:
    """§8: the authorization server's 400 `{"error": "use_dpop_nonce"}`."""
    if response.status_code != 400:
        return False
    try:
        data = response.json()
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("error") == "use_dpop_nonce"
