"""The upstream of bench/bodies.py: large bodies, streamed, never held.

    GET  /api/bulk/N   answered with N bytes (`BLOCK` repeated, `Content-Length: N`), written a
                       block at a time under the transport's flow control
    PUT  any path      the body is read and counted (with --hash, its SHA-256 too) and thrown
                       away; answered with JSON: {"bytes": N, "sha256": "..." or null}
    GET  /api/request-head   answered with the request's head, as bench/upstream.py's ECHO_PATH
                       (how `caddy-auth` checks that the upstream gets the token)
    GET  anything else the 1 KiB of bench/upstream.py (the set-ups' readiness probes)

A raw asyncio protocol on uvloop with httptools' parser, as bench/upstream.py (which stays as it
is: the main benchmark's upstream must cost as little per request as it does). Hashing is opt-in
because SHA-256 runs at about 1 GB/s on one core, the core this upstream shares with the client:
the full run counts bytes only, the smoke test checks every byte. Run alone:
`python bench/bulk_upstream.py --port 9000 [--hash]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import typing
from collections.abc import Iterator

import httptools
import uvloop

from bench.processes import RESPONSE_SIZE
from bench.upstream import ECHO_PATH, _answer, _response, serve_until_signalled

__all__ = ["BLOCK", "BULK_PATH", "blocks", "expected_sha256", "main", "serve"]

BULK_PATH = "/api/bulk/"
BLOCK = random.Random(20261203).randbytes(1 << 20)  # test data, not a secret


def blocks(size: int) -> Iterator[memoryview]:
    """`size` bytes of `BLOCK` repeated, a block (or the last part of one) at a time."""
    view = memoryview(BLOCK)
    whole, rest = divmod(size, len(BLOCK))
    for _ in range(whole):
        yield view
    if rest:
        yield view[:rest]


def expected_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for block in blocks(size):
        digest.update(block)
    return digest.hexdigest()


_ECHO_URL = ECHO_PATH.encode("ascii")


class _Protocol(asyncio.Protocol):
    def __init__(self, small: bytes, *, hash_bodies: bool) -> None:
        self._small = small
        self._hash_bodies = hash_bodies
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._head: list[bytes] | None = None  # the request line and headers of an ECHO_PATH request
        self._count = 0
        self._digest: typing.Any = None  # hashlib's object, while a hashed body arrives
        self._writable = asyncio.Event()
        self._writable.set()
        self._sending: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    def connection_lost(self, _exc: Exception | None) -> None:
        self._transport = None
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def on_message_begin(self) -> None:  # httptools callbacks from here on
        self._url, self._count, self._head = b"", 0, None
        self._digest = hashlib.sha256() if self._hash_bodies else None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head is None and self._url == _ECHO_URL:
            self._head = [b"GET " + _ECHO_URL + b" HTTP/1.1"]
        if self._head is not None:
            self._head.append(name + b": " + value)

    def on_body(self, body: bytes) -> None:
        self._count += len(body)
        if self._digest is not None:
            self._digest.update(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        url, method = self._url.decode("latin-1"), self._parser.get_method()
        if method == b"GET" and url.startswith(BULK_PATH):
            self._sending = asyncio.get_running_loop().create_task(self._send(transport, int(url[len(BULK_PATH) :])))
            return
        if method == b"GET" and self._head is not None:
            transport.write(_answer(b"\r\n".join(self._head)))
        elif method == b"GET":
            transport.write(self._small)
        else:
            digest = self._digest.hexdigest() if self._digest is not None else None
            transport.write(_answer(json.dumps({"bytes": self._count, "sha256": digest}).encode()))
        if not self._parser.should_keep_alive():
            transport.close()

    async def _send(self, transport: asyncio.Transport, size: int) -> None:
        transport.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        for block in blocks(size):
            if transport.is_closing():
                return
            transport.write(block)
            await self._writable.wait()
        if not self._parser.should_keep_alive():
            transport.close()


async def serve(host: str, port: int, *, hash_bodies: bool) -> None:
    small = _response(RESPONSE_SIZE)
    banner = f"bulk upstream: listening on http://{host}:{port} (hashing bodies: {hash_bodies})"
    await serve_until_signalled(lambda: _Protocol(small, hash_bodies=hash_bodies), host, port, banner)


def main() -> None:
    parser = argparse.ArgumentParser(description="bench upstream for large bodies: GET /api/bulk/N, PUT counts")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--hash", action="store_true", help="SHA-256 every request body (answered in the JSON)")
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, hash_bodies=args.hash))


if __name__ == "__main__":
    main()
