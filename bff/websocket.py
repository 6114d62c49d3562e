"""WebSocket relay: one upstream WebSocket (aiohttp) per accepted browser WebSocket.

`ProxyApp` decides whether an upgrade may go through (route, `Origin` allowlist, bearer token) and
opens nothing itself; this module connects the upstream, accepts the browser with the
subprotocol the upstream chose, and copies text and binary messages both ways until one side
closes, passing its close code and reason on. Close codes that cannot travel in a close frame
(1005, 1006, 1015) become 1000 from the upstream and 1001 ("going away") from the browser; an
upstream that drops the connection closes the browser's with 1011.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp
from starlette.types import Message, Receive, Scope, Send
from yarl import URL

from bff.errors import BffError, UpstreamTimeout, UpstreamUnavailable
from bff.session import Session
from bff.streams import GOING_AWAY, REASONS, OpenStreams, Stream

__all__ = ["CLIENT_CLOSED", "MAX_MESSAGE", "deny", "relay"]

logger = logging.getLogger("bff.websocket")

# Status recorded when the browser went away before it could be answered (nginx's convention).
CLIENT_CLOSED = 499
_UNSENDABLE = frozenset({1005, 1006, 1015})
# Largest message relayed; uvicorn's own default limit for browser messages.
MAX_MESSAGE = 16 * 1024 * 1024


async def deny(scope: Scope, receive: Receive, send: Send, error: BffError) -> None:
    """Refuse an upgrade before accepting it: the JSON error when the server supports the
    WebSocket Denial Response extension, else a close (the server answers 403)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {"type": "websocket.http.response.start", "status": error.status_code, "headers": error.raw_headers()}
        )
        await send({"type": "websocket.http.response.body", "body": error.body()})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def relay(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    session: aiohttp.ClientSession,
    url: URL,
    headers: Sequence[tuple[str, str]],
    route_path: str,
    set_cookies: Sequence[str] = (),
    streams: OpenStreams | None = None,
    owner: Session | None = None,
) -> int:
    """Connect to `url` with `headers`, then relay until either side closes. Returns the status
    of the handshake answered to the browser (101, or the error's). `set_cookies` ride on the
    101 (cookie mode: a session refreshed for this upgrade). With `streams` and the `owner`
    session, the relay is registered there, and closes the browser's side with the code it is
    ended with (`bff.streams`)."""
    try:
        upstream = await session.ws_connect(
            url,
            headers=headers,
            protocols=tuple(scope.get("subprotocols", ())),
            autoclose=True,
            autoping=True,
            max_msg_size=MAX_MESSAGE,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
        )
    except aiohttp.WSServerHandshakeError as exc:
        await deny(
            scope,
            receive,
            send,
            UpstreamUnavailable(f"route {route_path!r}: upstream refused the upgrade ({exc.status})"),
        )
        return UpstreamUnavailable.status_code
    except (TimeoutError, aiohttp.ServerTimeoutError):
        await deny(
            scope, receive, send, UpstreamTimeout(f"route {route_path!r}: upstream did not answer the upgrade in time")
        )
        return UpstreamTimeout.status_code
    except aiohttp.ClientError as exc:
        logger.warning("WebSocket upstream unavailable. route: %r, error: %s", route_path, type(exc).__name__)
        await deny(scope, receive, send, UpstreamUnavailable(f"route {route_path!r}: cannot connect to the upstream"))
        return UpstreamUnavailable.status_code

    try:
        message = await receive()
        if message["type"] != "websocket.connect":
            return CLIENT_CLOSED
        accept: dict[str, Any] = {"type": "websocket.accept", "subprotocol": upstream.protocol}
        if set_cookies:
            accept["headers"] = [(b"set-cookie", cookie.encode("latin-1")) for cookie in set_cookies]
        await send(accept)
        tracking: contextlib.AbstractContextManager[Stream | None] = contextlib.nullcontext()
        if streams is not None and owner is not None:
            tracking = streams.open("websocket", owner.key, owner.expires_at)
        with tracking as stream:
            await _relay_messages(upstream, receive, send, stream)
        return 101
    finally:
        await upstream.close()


async def _relay_messages(
    upstream: aiohttp.ClientWebSocketResponse, receive: Receive, send: Send, stream: Stream | None
) -> None:
    """Copy messages both ways until either side closes, or until `stream` is ended: then close
    both sides, the browser's with the code it was ended with."""
    to_client = asyncio.ensure_future(_upstream_to_client(upstream, send))
    to_upstream = asyncio.ensure_future(_client_to_upstream(receive, upstream))
    waiting: list[asyncio.Future[Any]] = [to_client, to_upstream]
    if stream is not None:
        waiting.append(stream.ending)
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_client, to_upstream):
            if not task.done():
                task.cancel()
        # Collect both (their errors only end the relay); a cancellation of this task still
        # propagates out of gather.
        await asyncio.gather(to_client, to_upstream, return_exceptions=True)
    if stream is not None and stream.ended and to_client.cancelled() and to_upstream.cancelled():
        code = stream.ending.result()
        await send({"type": "websocket.close", "code": code, "reason": REASONS.get(code, "")})
        await upstream.close(code=GOING_AWAY)


async def _upstream_to_client(upstream: aiohttp.ClientWebSocketResponse, send: Send) -> None:
    while True:
        msg = await upstream.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            await send({"type": "websocket.send", "text": msg.data})
        elif msg.type is aiohttp.WSMsgType.BINARY:
            await send({"type": "websocket.send", "bytes": msg.data})
        elif msg.type is aiohttp.WSMsgType.CLOSE:
            reason = msg.extra if isinstance(msg.extra, str) else ""
            await send({"type": "websocket.close", "code": _sendable(upstream.close_code, 1000), "reason": reason})
            return
        elif msg.type is aiohttp.WSMsgType.CLOSING:
            return  # our side is closing the upstream: the browser is gone already
        elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            await send({"type": "websocket.close", "code": 1011, "reason": ""})  # upstream dropped
            return


async def _client_to_upstream(receive: Receive, upstream: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        message: Message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                await upstream.send_str(text)
            else:
                await upstream.send_bytes(message.get("bytes") or b"")
        elif kind == "websocket.disconnect":
            reason = message.get("reason") or ""
            # The browser went away without a close frame: 1001 "going away".
            await upstream.close(code=_sendable(message.get("code"), 1001), message=reason.encode())
            return


def _sendable(code: int | None, otherwise: int) -> int:
    if code is None or code in _UNSENDABLE:
        return otherwise
    return code
