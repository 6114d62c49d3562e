"""How a proxied request presents its access token to the upstream: `Authorization: Bearer`
(RFC 6750), or `Authorization: DPoP` with a fresh proof (RFC 9449 §7), and the resource server's
`use_dpop_nonce` challenge (§9).

Owns `authorized` (the forwarded headers plus the token's) and `replacement` (what to replay a
401 with: the same token with a new proof when the upstream asks for its nonce, else a refreshed
one). Leaves choosing and refreshing the token to the `BearerSource` (`bff.tokens`), keys, proofs
and the process's nonce memory to `bff.dpop`, whether a body can be replayed to `bff.proxy`. A
Bearer token costs what it did before: one branch.
"""

from __future__ import annotations

from collections.abc import Mapping

from bff.config import RouteSettings
from bff.dpop import DPoPKey, asks_for_nonce, nonces, origin_of
from bff.tokens import Bearer, BearerSource

__all__ = ["authorized", "replacement"]


def authorized(
    forwarded: list[tuple[bytes, bytes]], bearer: Bearer, method: str, url: str
) -> list[tuple[bytes, bytes]]:
    """`forwarded` plus the token's headers, for `method` to `url` (a WebSocket upgrade is a GET
    to the http(s) form of its URL)."""
    if bearer.dpop_key is None or bearer.token_type != "DPoP":
        return [*forwarded, (b"authorization", b"Bearer " + bearer.token.encode("latin-1"))]
    proof = DPoPKey.from_jwk(bearer.dpop_key).proof(
        method, url, access_token=bearer.token, nonce=nonces.get(origin_of(url))
    )
    return [*forwarded, (b"authorization", b"DPoP " + bearer.token.encode("latin-1")), (b"dpop", proof.encode("ascii"))]


def _nonce_challenge(bearer: Bearer, url: str, headers: Mapping[str, str]) -> bool:
    """Whether the upstream's 401 (with these headers) to a DPoP request asks for a nonce it sent
    along; the nonce is remembered for the upstream's origin, so the next proof carries it."""
    if bearer.token_type != "DPoP" or not asks_for_nonce(headers.get("www-authenticate")):
        return False
    return nonces.remember(origin_of(url), headers.get("dpop-nonce")) is not None


async def replacement(
    source: BearerSource | None, route: RouteSettings, rejected: Bearer, url: str, headers: Mapping[str, str]
) -> Bearer | None:
    """What to replay a request with after the upstream's 401 (with `headers`) to `rejected`: the
    same token with a new proof when a DPoP upstream asks for its nonce (§9), else a refreshed
    token from `source`; None when there is nothing better to try."""
    if _nonce_challenge(rejected, url, headers):
        return rejected
    return None if source is None else await source.bearer_after_rejection(route, rejected)
