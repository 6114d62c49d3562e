"""Back-channel logout from the development provider to its clients. DEVELOPMENT ONLY.

Owns the logout token (OpenID Connect Back-Channel Logout 1.0 §2.4: `typ: logout+jwt`, `events`,
`sid`, no `nonce`) and its delivery by POST; a client that cannot be reached is logged, not
retried. Which sessions end, and which clients hear of it, is `idp.py`'s and `grants.py`'s.
"""

from __future__ import annotations

import logging
import secrets

import httpx

from bff.demo.grants import LoginSession
from bff.demo.keys import SigningKey
from bff.demo.oauth import DemoClient

__all__ = ["BACKCHANNEL_EVENT", "send_backchannel_logout"]

log = logging.getLogger("bff.demo.idp")

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


async def send_backchannel_logout(
    client: DemoClient,
    session: LoginSession,
    *,
    issuer: str,
    key: SigningKey,
    now: float,
    transport: httpx.AsyncBaseTransport | None,
) -> None:
    assert client.backchannel_logout_uri is not None
    issued_at = int(now)
    token = key.sign(
        {
            "iss": issuer,
            "aud": client.client_id,
            "iat": issued_at,
            "exp": issued_at + 120,
            "jti": secrets.token_urlsafe(12),
            "sub": session.sub,
            "sid": session.sid,
            "events": {BACKCHANNEL_EVENT: {}},
        },
        typ="logout+jwt",
    )
    try:
        async with httpx.AsyncClient(transport=transport, timeout=5) as http:
            response = await http.post(client.backchannel_logout_uri, data={"logout_token": token})
    except httpx.HTTPError as exc:
        log.warning("Back-channel logout failed. client: '%s', error: %s", client.client_id, type(exc).__name__)
        return
    log.info("Back-channel logout sent. client: '%s', status: %d", client.client_id, response.status_code)
