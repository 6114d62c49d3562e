"""An opt-in reference set-up (`python -m bench --setups caddy,bff,minimal`): the least a proxy on
this stack can do, a raw ASGI app forwarding to one upstream with one aiohttp `ClientSession`,
on uvicorn with uvloop and httptools. No routing table, no header hygiene, no anti-forgery check,
no metrics: the ceiling of uvicorn + aiohttp's client, the stack the BFF ran on until its own
upstream client (`bff/upstream_pool.py`), which made the whole BFF cheaper than this.

    python bench/minimal_proxy.py --port 8001 --upstream http://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

Scope = dict[str, Any]
Message = dict[str, Any]
_DROP = {b"host", b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"proxy-connection"}


class MinimalProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.session is None:
            raise RuntimeError("no client session: the lifespan startup has not run")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _DROP]
        url = self.upstream + scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        async with self.session.request(
            scope["method"], url, headers=headers, data=body or None, allow_redirects=False, auto_decompress=False
        ) as response:
            out = [(k, v) for k, v in response.raw_headers if k.lower() not in _DROP and k.lower() != b"content-length"]
            if response.content_length is not None:
                out.append((b"content-length", str(response.content_length).encode()))
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=100),
                    cookie_jar=aiohttp.DummyCookieJar(),
                    skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept"),
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description="minimal raw-ASGI aiohttp proxy (bench reference)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvicorn.run(
        MinimalProxy(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        server_header=False,
        date_header=False,
        proxy_headers=False,  # as the BFF: it judges X-Forwarded-* itself
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
