"""The benchmark's upstream: a tiny HTTP/1.1 server answering every request with 1 KiB.

A raw asyncio protocol on uvloop with httptools' parser, so that it costs far less CPU per
request than any proxy in front of it and is never the bottleneck. Keep-alive unless the client
asks to close. `GET ECHO_PATH` is answered with the request's own head (request line and
headers) instead: how a set-up checks what the proxy in front forwards (`bff-dpop`: the DPoP
proof); spotting it costs one `startswith` per read. Run alone:
`python bench/upstream.py --port 9000 [--size 1024]`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import typing

import httptools
import uvloop

ECHO_PATH = "/api/request-head"
_ECHO_REQUEST = f"GET {ECHO_PATH} ".encode()


def _answer(body: bytes) -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def _response(size: int) -> bytes:
    return _answer((b"0123456789abcdef" * (size // 16 + 1))[:size])


class _Protocol(asyncio.Protocol):
    __slots__ = ("_echo", "_parser", "_response", "_transport")

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._transport: asyncio.Transport | None = None
        self._echo: bytes | None = None  # what arrived of an ECHO_PATH request so far
        self._parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._echo is not None or data.startswith(_ECHO_REQUEST):
            self._echo = (self._echo or b"") + data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def on_message_complete(self) -> None:  # httptools callback
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._echo is None:
            transport.write(self._response)
        else:
            transport.write(_answer(self._echo.partition(b"\r\n\r\n")[0]))
            self._echo = None
        if not self._parser.should_keep_alive():
            transport.close()

    def connection_lost(self, _exc: Exception | None) -> None:
        self._transport = None


async def serve_until_signalled(
    protocol: typing.Callable[[], asyncio.Protocol], host: str, port: int, banner: str
) -> None:
    """Serve `protocol` on host:port, print `banner` once listening, until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(banner, flush=True)
    async with server:
        await stop.wait()


async def serve(host: str, port: int, size: int) -> None:
    response = _response(size)
    banner = f"upstream: listening on http://{host}:{port} ({size} B responses)"
    await serve_until_signalled(lambda: _Protocol(response), host, port, banner)


def main() -> None:
    parser = argparse.ArgumentParser(description="bench upstream: every request gets a fixed-size 200")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--size", type=int, default=1024, help="response body size in bytes (default 1024)")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.size))


if __name__ == "__main__":
    main()
