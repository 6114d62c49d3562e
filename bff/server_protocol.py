"""The HTTP protocol `bff serve` runs: uvicorn's httptools protocol, writing a response's head
together with its first body chunk.

uvicorn writes the status line and headers when the app sends `http.response.start`, and the body
in a second write: two system calls for every small answer, where one carries both. Each request's
cycle gets a `HeadWithBody` in front of its transport: it holds the first write (the head, or a
`100 Continue`) until the next one joins it, and sends it alone at the end of the event loop's
current step if none came, so a streamed answer's head is never later than before. Only the first
write is held: the last one, after which uvicorn may close the connection, always goes at once.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeadWithBody", "HttpProtocol"]


class HeadWithBody:
    """The transport as one request's cycle sees it: `write`, `close` and `is_closing`."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = b""  # b"": nothing written yet; None: the first write went

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._transport.write(data)
        elif held:
            self._held = None
            self._transport.writelines((held, data))
        else:
            self._held = data
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        held = self._held
        if held:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class HttpProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = getattr(self, "cycle", None)
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = HeadWithBody(self.transport)
