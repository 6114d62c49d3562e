"""The upstream of bench/streams.py: long-lived SSE streams and WebSockets, on aiohttp.

    GET /api/events      an SSE stream: `data: <n>` every `--interval` seconds (the first at once)
    GET /api/ws          a WebSocket that echoes every message
    GET /api/items       the bench's 1 KiB answer (bench/processes.py's readiness probe, wrk's GET)
    GET ECHO_PATH        the request's head (bench/provider.py's check of the bearer token)

Run alone: `python bench/stream_upstream.py --port 9000 [--interval 1]`.
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from aiohttp import WSMsgType, web

from bench.upstream import ECHO_PATH

__all__ = ["app", "main"]

ITEMS = (b"0123456789abcdef" * 64)[:1024]


def app(interval: float) -> web.Application:
    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        number = 0
        while True:  # until the client (the BFF) goes away: the write then raises
            await response.write(f"data: {number}\n\n".encode())
            number += 1
            await asyncio.sleep(interval)

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    async def items(_request: web.Request) -> web.Response:
        return web.Response(body=ITEMS, content_type="text/plain")

    async def echo(request: web.Request) -> web.Response:
        head = [f"{request.method} {request.path_qs} HTTP/1.1", *(f"{k}: {v}" for k, v in request.headers.items())]
        return web.Response(body="\r\n".join(head).encode("latin-1"), content_type="text/plain")

    application = web.Application()
    application.router.add_get("/api/events", events)
    application.router.add_get("/api/ws", websocket)
    application.router.add_get("/api/items", items)
    application.router.add_get(ECHO_PATH, echo)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description="bench stream upstream: SSE events and a WebSocket echo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between two SSE events (default 1)")
    args = parser.parse_args()
    web.run_app(
        app(args.interval),
        host=args.host,
        port=args.port,
        backlog=4096,
        print=None,
        access_log=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
