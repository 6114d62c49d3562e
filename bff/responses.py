"""Streaming an upstream's answer back to the browser, for `ProxyApp`.

One `http.response.start`, then the body as it arrives: in one message when it arrived whole, else
chunk by chunk with a `DisconnectWatch` noticing a browser that leaves. An SSE response
(`text/event-stream`) of a signed-in session is registered in `OpenStreams` while it runs, so
that it ends cleanly when its session ends or the BFF shuts down (`bff.streams`). An upstream
that fails after the response started raises `UpstreamAborted`: the server then drops the
browser's connection rather than faking a clean end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from starlette.types import Receive, Send

from bff.http1 import Answer, UpstreamError
from bff.request_body import DisconnectWatch, RequestBody
from bff.routes import ProxyRoute
from bff.session import Session
from bff.streams import OpenStreams, Stream
from bff.websocket import CLIENT_CLOSED

__all__ = ["EVENT_STREAM", "UpstreamAborted", "respond"]

logger = logging.getLogger("bff.proxy")

EVENT_STREAM = "text/event-stream"


class UpstreamAborted(Exception):
    """The upstream failed after the response started: the server drops the browser's connection."""

    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.status = status


async def respond(
    route: ProxyRoute,
    response: Answer,
    receive: Receive,
    send: Send,
    body: RequestBody,
    set_cookies: Sequence[str],
    *,
    streams: OpenStreams | None = None,
    session: Session | None = None,
) -> int:
    """Send `response` to the browser; return its status (499 when the browser left)."""
    status = response.status
    body.response_started = True
    headers = route.response_filter.apply(response.raw_headers)
    if set_cookies:
        # The session changed on the way (cookie mode: refreshed): its cookie rides on this answer.
        headers.extend((b"set-cookie", cookie.encode("latin-1")) for cookie in set_cookies)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    try:
        chunk = await response.readany()
        if response.at_eof():  # the whole body arrived at once: no disconnect watcher needed
            await send({"type": "http.response.body", "body": chunk, "more_body": False})
            return status
        return await _stream_rest(response, chunk, receive, send, body, streams, session)
    except (TimeoutError, UpstreamError) as exc:
        logger.warning("Upstream failed mid-response. route: %r, error: %s", route.path, type(exc).__name__)
        raise UpstreamAborted(f"route {route.path!r}: the upstream failed mid-response", status) from None
    finally:
        if response.at_eof():
            response.release()
        else:
            response.close()  # unread body: the connection cannot go back to the pool


async def _stream_rest(
    response: Answer,
    chunk: bytes,
    receive: Receive,
    send: Send,
    body: RequestBody,
    streams: OpenStreams | None,
    session: Session | None,
) -> int:
    """Send the body from `chunk` on as it arrives; return the status (499 when the browser left).
    A failing upstream raises, unless `OpenStreams` ended the stream on purpose."""
    with contextlib.ExitStack() as tracking:
        stream: Stream | None = None
        if streams is not None and session is not None and response.content_type == EVENT_STREAM:
            # Ending it closes the upstream response: the read below fails, the body ends cleanly.
            stream = tracking.enter_context(streams.open("sse", session.key, session.expires_at, on_end=response.close))
        # Watch for the browser leaving only once its request body is read (else the body
        # stream is the one receiving, and it notices).
        watch = DisconnectWatch(receive) if body.done else None
        try:
            while chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                chunk = await response.readany()
        except asyncio.CancelledError:
            if watch is not None and watch.gone:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                return CLIENT_CLOSED
            raise
        except (TimeoutError, UpstreamError):
            if stream is None or not stream.ended:
                raise
        finally:
            if watch is not None:
                watch.stop()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return response.status
