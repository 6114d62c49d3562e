"""Real servers for the proxy tests: uvicorn in a thread (or a subprocess) on a free loopback
port, and raw-socket servers that misbehave on purpose.

`UpstreamApp` is the echo upstream: by default it answers with the request it saw (method, path,
query, headers, body, client port) as JSON; the last path segment picks another behaviour
(`bytes`, `count`, `sse`, `slow`, `endless`, `auth`, `cookies`, `ws`). It records what it saw in
attributes the tests read.

As a pytest plugin (`tests/conftest.py`) it provides `upstream`, one `UpstreamApp` in a
`ServerThread` per module, and `up`, that app with its records cleared for the test.

Run as a module for the memory tests, which measure a proxy process of its own:

    python -m tests.support.upstreams upstream --port 9000
    python -m tests.support.upstreams proxy --port 8000 --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
import uvicorn
from starlette.datastructures import Secret
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bff.config import RouteSettings, Settings
from bff.metrics import Metrics
from bff.proxy import ProxyApp
from tests.support.processes import free_port
from tests.support.server_thread import UvicornThread

SECRET = Secret("test-secret-key-that-is-long-enough-0123456789")
CHUNK = b"\0" * (1024 * 1024)


def make_settings(*routes: RouteSettings, **kwargs: Any) -> Settings:
    return Settings(secret_keys=(SECRET,), session_store="memory://", routes=routes, **kwargs)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """The fallback in tests: 404 `{"fallback": true}` (or a refused WebSocket)."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"fallback": true}'})


class WithLifespan:
    """Runs `ProxyApp.start()`/`close()` in the server's lifespan."""

    def __init__(self, app: ProxyApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.app.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.app.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


class ServerThread(UvicornThread):
    """uvicorn serving `app` on a free 127.0.0.1 port in a background thread, with the proxy tests'
    settings; a context manager."""

    def __init__(self, app: ASGIApp, **config: Any) -> None:
        options: dict[str, Any] = {
            "log_level": "warning",
            "server_header": False,
            "date_header": False,
            "proxy_headers": False,  # the proxy's own X-Forwarded-For logic is under test
            "lifespan": "on" if isinstance(app, WithLifespan) else "off",
            **config,
        }
        super().__init__(app, port=free_port(), **options)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class UpstreamApp:
    """The echo upstream and its special behaviours (picked by the last path segment)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.client_ports: list[int] = []
        self.disconnected = threading.Event()
        self.sse_acks: dict[int, threading.Event] = {}
        self.sse_waited: list[bool] = []
        self.websocket_headers: list[dict[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        self.client_ports.append(scope["client"][1])
        action = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        query = {key: values[-1] for key, values in parse_qs(scope["query_string"].decode()).items()}
        handler = getattr(self, "_" + action, None) if action in _ACTIONS else None
        if handler is not None:
            await handler(scope, receive, send, query)
        else:
            await self._echo(scope, receive, send, query)

    async def _echo(self, scope: Scope, receive: Receive, send: Send, _query: dict[str, str]) -> None:
        body = await read_body(receive)
        seen = {
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]],
            "body": body.decode("latin-1"),
            "client_port": scope["client"][1],
        }
        self.requests.append(seen)
        await _json(send, 200, seen)

    async def _bytes(self, _scope: Scope, _receive: Receive, send: Send, query: dict[str, str]) -> None:
        size = int(query.get("n", "1024"))
        headers = [(b"content-type", b"application/octet-stream")]
        if "chunked" not in query:
            headers.append((b"content-length", str(size).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if size == 0:
            await send({"type": "http.response.body", "body": b""})
        while size > 0:
            part = CHUNK if size >= len(CHUNK) else CHUNK[:size]
            size -= len(part)
            await send({"type": "http.response.body", "body": part, "more_body": size > 0})

    async def _count(self, _scope: Scope, receive: Receive, send: Send, query: dict[str, str]) -> None:
        received = 0
        digest = hashlib.sha256()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if "hash" in query:
                digest.update(chunk)
            more = message.get("more_body", False)
        await _json(send, 200, {"received": received, "sha256": digest.hexdigest()})

    async def _sse(self, _scope: Scope, _receive: Receive, send: Send, query: dict[str, str]) -> None:
        """Sends event i, then waits (up to `wait`, 3 s) for the test to say it arrived before event i+1."""
        count = int(query.get("events", "3"))
        wait = float(query.get("wait", "3"))
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(count):
            self.sse_acks[i] = threading.Event()
            await send(
                {"type": "http.response.body", "body": f"id: {i}\ndata: event {i}\n\n".encode(), "more_body": True}
            )
            self.sse_waited.append(await asyncio.to_thread(self.sse_acks[i].wait, wait))
        await send({"type": "http.response.body", "body": b""})

    async def _slow(self, _scope: Scope, _receive: Receive, send: Send, query: dict[str, str]) -> None:
        await asyncio.sleep(float(query.get("delay", "5")))
        await _json(send, 200, {"slow": True})

    async def _endless(self, _scope: Scope, receive: Receive, send: Send, _query: dict[str, str]) -> None:
        """Streams until the client goes away; sets `disconnected` when it notices."""
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            self.disconnected.set()

        watcher = asyncio.ensure_future(watch())
        try:
            while not watcher.done():
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
                await asyncio.sleep(0.01)
        finally:
            watcher.cancel()

    async def _auth(self, scope: Scope, receive: Receive, send: Send, _query: dict[str, str]) -> None:
        """401 unless the bearer token is `fresh`; records every attempt."""
        body = await read_body(receive)
        headers = {name.decode(): value.decode("latin-1") for name, value in scope["headers"]}
        self.requests.append({"authorization": headers.get("authorization"), "body": body})
        if headers.get("authorization") != "Bearer fresh":
            await _json(send, 401, {"error": "invalid_token"}, [(b"www-authenticate", b'Bearer error="invalid_token"')])
        else:
            await _json(send, 200, {"ok": True, "length": len(body)})

    async def _cookies(self, _scope: Scope, receive: Receive, send: Send, _query: dict[str, str]) -> None:
        await read_body(receive)
        headers = [
            (b"content-type", b"text/plain"),
            (b"set-cookie", b"theme=dark; Path=/"),
            (b"set-cookie", b"lang=en; Path=/"),
            (b"set-cookie", b"bff=stolen; Path=/"),
            (b"set-cookie", b"__Host-bff=stolen; Path=/; Secure"),
            (b"set-cookie", b"__Secure-bff-login=stolen; Secure"),
            (b"set-cookie", b"bff-csrf=stolen"),
            (b"set-cookie", b"BFF=kept-other-case"),
            (b"set-cookie", b"bffx=kept"),
            (b"connection", b"x-hop"),
            (b"x-hop", b"secret"),
            (b"keep-alive", b"timeout=5"),
            (b"x-kept", b"yes"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async def _gzip(self, _scope: Scope, _receive: Receive, send: Send, _query: dict[str, str]) -> None:
        """A gzip-encoded body, whatever the request asked for (the proxy must not touch it)."""
        body = gzip.compress(b"compressible " * 1000)
        headers = [(b"content-encoding", b"gzip"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.websocket_headers.append({name.decode(): value.decode("latin-1") for name, value in scope["headers"]})
        await receive()  # websocket.connect
        subprotocols = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": subprotocols[0] if subprotocols else None})
        while True:
            message: Message = await receive()
            if message["type"] == "websocket.disconnect":
                self.websocket_headers.append({"closed": str(message.get("code"))})
                return
            text = message.get("text")
            if text is not None and text.startswith("close:"):
                await send({"type": "websocket.close", "code": int(text[6:]), "reason": "bye"})
                return
            if text == "path":
                await send({"type": "websocket.send", "text": scope["path"] + "?" + scope["query_string"].decode()})
            elif text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


_ACTIONS = frozenset({"bytes", "count", "sse", "slow", "endless", "auth", "cookies", "gzip"})


async def read_body(receive: Receive) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def _json(send: Send, status: int, data: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(data).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RawServer:
    """A TCP server whose every connection is handled by `handler(conn)` in its own thread."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self._handler = handler
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self._handler(conn)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()


def read_request_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def reset_mid_body(conn: socket.socket) -> None:
    """Promises 1 MB, sends 64 KiB, then resets the connection."""
    read_request_head(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n")
    conn.sendall(b"y" * 65536)
    time.sleep(0.2)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()


# Written by hand: two `Connection` field lines, the first naming a header (RFC 9110 §5.3: one list).
TWO_CONNECTION_LINES_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Connection: X-Remove-Me\r\n"
    b"Connection: close\r\n"
    b"X-Remove-Me: secret\r\n"
    b"X-Kept: yes\r\n"
    b"Content-Length: 2\r\n"
    b"\r\n"
    b"ok"
)


def two_connection_lines(conn: socket.socket) -> None:
    """Answers every request with `TWO_CONNECTION_LINES_RESPONSE`, then closes the connection."""
    read_request_head(conn)
    conn.sendall(TWO_CONNECTION_LINES_RESPONSE)
    conn.close()


def silent(conn: socket.socket) -> None:
    """Reads the request and never answers (until the test ends)."""
    read_request_head(conn)
    time.sleep(30)


@contextlib.contextmanager
def proxy_server(settings: Settings, **config: Any) -> Iterator[tuple[ServerThread, ProxyApp, Metrics]]:
    metrics = Metrics()
    app = ProxyApp(settings, bearer_source=config.pop("bearer_source", None), fallback=not_found, metrics=metrics)
    with ServerThread(WithLifespan(app), **config) as server:
        yield server, app, metrics


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[ServerThread, UpstreamApp]]:
    app = UpstreamApp()
    with ServerThread(app) as server:
        yield server, app


@pytest.fixture
def up(upstream: tuple[ServerThread, UpstreamApp]) -> UpstreamApp:
    app = upstream[1]
    app.requests.clear()
    app.client_ports.clear()
    app.disconnected.clear()
    app.websocket_headers.clear()
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["upstream", "proxy"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="")
    args = parser.parse_args()
    app: ASGIApp
    if args.role == "upstream":
        app = UpstreamApp()
    else:
        settings = make_settings(RouteSettings(path="/api", upstream=args.upstream, csrf=False))
        app = WithLifespan(ProxyApp(settings, bearer_source=None, fallback=not_found, metrics=Metrics()))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        server_header=False,
        date_header=False,
        lifespan="on" if args.role == "proxy" else "off",
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
