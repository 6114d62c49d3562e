"""The browser's side of one proxied exchange: its request body and its going away.

Owns reading the ASGI `receive` channel during an exchange: the body buffered up to the replay
limit (`read_up_to`) or streamed on (`RequestBody.stream`), both under the size limit, and after
the body, noticing a disconnect while the response streams (`DisconnectWatch`). What to do with
the body (send it, replay it) is `bff.proxy`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.types import Message, Receive

from bff.errors import PayloadTooLarge

__all__ = ["ClientGone", "DisconnectWatch", "RequestBody", "read_up_to"]


class ClientGone(Exception):
    """The browser disconnected while its request body was being read."""


class RequestBody:
    """State of one exchange's request body (read by the error mapping after the upstream exchange gives up)
    and whether the response has started."""

    __slots__ = ("client_gone", "done", "limit", "response_started", "too_large")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.response_started = False  # errors can no longer be answered
        self.client_gone = False
        self.too_large = False
        self.done = False

    async def stream(self, receive: Receive, *, first: bytes = b"", more: bool = True) -> AsyncIterator[bytes]:
        received = len(first)
        if first:
            yield first
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                raise ConnectionResetError("client disconnected")
            chunk: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            if chunk:
                received += len(chunk)
                if self.limit is not None and received > self.limit:
                    self.too_large = True
                    raise PayloadTooLarge(f"request body is larger than {self.limit} bytes")
                yield chunk
        self.done = True


async def read_up_to(receive: Receive, limit: int, body: RequestBody) -> tuple[bytes, bool]:
    """Read the request body while it fits in `limit`; return it and whether more is coming."""
    parts: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            body.client_gone = True
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    if body.limit is not None and size > body.limit:
        raise PayloadTooLarge(f"request body is larger than {body.limit} bytes")
    if not more:
        body.done = True
    return b"".join(parts), more


class DisconnectWatch:
    """Cancels the streaming task when the browser goes away (uvicorn's `send` would silently
    drop the rest, and the upstream would be read to the end for nobody)."""

    __slots__ = ("_future", "_stopped", "_task", "gone")

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._stopped = False
        self._task = asyncio.current_task()
        self._future = asyncio.ensure_future(_disconnected(receive))
        self._future.add_done_callback(self._on_message)

    def _on_message(self, future: asyncio.Future[Message]) -> None:
        if self._stopped or future.cancelled() or future.exception() is not None:
            return
        self.gone = True
        if self._task is not None:
            self._task.cancel()

    def stop(self) -> None:
        self._stopped = True
        self._future.remove_done_callback(self._on_message)
        self._future.cancel()


async def _disconnected(receive: Receive) -> Message:
    while True:  # a request without a body still has its one empty `http.request` to take
        message = await receive()
        if message["type"] == "http.disconnect":
            return message
