"""Streams against real `bff serve` processes on SQLite, with a real upstream holding an SSE
response and a WebSocket open: they end with their session (log out this device, `bff sessions
revoke` straight in the store, with two workers) within `STREAM_CHECK_INTERVAL` + 2 s, and on
SIGTERM the request in flight finishes, the WebSocket gets 1001, the SSE stream ends, exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bff.config import load_settings
from bff.cookies import CookieCodec
from bff.login import LoginResult
from bff.server_sessions import ServerSessions
from bff.session import Session
from bff.stores import open_store
from bff.streams import GOING_AWAY, SESSION_ENDED, STREAM_CHECK_INTERVAL
from bff.tokenset import TokenSet
from tests.support.bff_process import REPO, BffProcess, new_secret_key
from tests.support.upstreams import ServerThread, UpstreamApp

SUB = "stream-user"
DEADLINE = STREAM_CHECK_INTERVAL + 2


@pytest.fixture(scope="module")
def upstream() -> Iterator[ServerThread]:
    app = UpstreamApp()
    with ServerThread(app) as server:
        yield server
        for ack in app.sse_acks.values():  # the held SSE responses may finish now
            ack.set()


def new_bff(tmp_path: Path, upstream: ServerThread, *, workers: int = 1) -> BffProcess:
    process = BffProcess(tmp_path, {}, workers=workers, log_level="info")
    process.config = {
        "public_url": process.url,
        "secret_keys": [new_secret_key()],
        "session_store": f"sqlite:///{tmp_path / 'sessions.db'}",
        "shutdown_timeout": "10s",
        "oidc": {"issuer": "https://idp.invalid", "client_id": "bff", "client_secret": "s"},
        "routes": [{"path": "/api", "upstream": upstream.url, "token": "user", "websocket": True}],
    }
    return process


def log_in(process: BffProcess) -> tuple[Session, dict[str, str]]:
    """A session created in the BFF's store the way the BFF creates one, and the headers of a
    browser holding its cookie."""
    settings = load_settings({}, str(process.config_file))

    async def create() -> tuple[Session, list[str]]:
        store = open_store(settings.session_store)
        await store.open()
        sessions = ServerSessions(store, CookieCodec(settings), settings.session)
        login = LoginResult(sub=SUB, provider_sid=None, claims={"sub": SUB}, tokens=TokenSet("access"))
        try:
            return await sessions.create(login, [])
        finally:
            await store.close()

    session, cookies = asyncio.run(create())
    cookie = cookies[0].split(";", 1)[0]
    return session, {"cookie": cookie, "origin": process.url, "x-csrf": "1"}


async def open_streams(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientResponse]:
    ws = await http.ws_connect(url + "/api/ws", headers=headers)
    await ws.send_str("ping")
    assert (await ws.receive(timeout=5)).data == "ping"
    sse = await http.get(url + "/api/sse?events=1&wait=30", headers=headers)  # no end for 30 s
    assert (sse.status, sse.content_type) == (200, "text/event-stream")
    assert await sse.content.readuntil(b"\n\n") == b"id: 0\ndata: event 0\n\n"
    return ws, sse


async def ends(ws: aiohttp.ClientWebSocketResponse, sse: aiohttp.ClientResponse) -> tuple[int | None, str, bytes]:
    """Wait for both streams to end: the WebSocket's close code and reason, the SSE body's rest."""
    message = await ws.receive(timeout=DEADLINE + 5)
    assert message.type is aiohttp.WSMsgType.CLOSE
    rest = await asyncio.wait_for(sse.content.read(), DEADLINE + 5)  # a clean end, not a reset
    sse.release()
    return ws.close_code, str(message.extra), rest


def revoke(process: BffProcess) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BFF_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "bff", "sessions", "revoke", "--sub", SUB, "--config", str(process.config_file)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("how", ["log-out-this-device", "admin-revoke"])
def test_streams_end_with_their_session_on_every_worker(tmp_path: Path, upstream: ServerThread, how: str) -> None:
    process = new_bff(tmp_path, upstream, workers=2)
    process.start()
    try:
        session, headers = log_in(process)

        async def scenario() -> tuple[float, tuple[int | None, str, bytes], int]:
            async with aiohttp.ClientSession() as http:
                ws, sse = await open_streams(http, process.url, headers)
                start = time.monotonic()
                if how == "admin-revoke":
                    await asyncio.to_thread(revoke, process)  # no worker hears of it: only the store changes
                else:
                    async with aiohttp.ClientSession() as other:  # a new connection: any worker
                        deleted = await other.delete(f"{process.url}/bff/sessions/{session.key}", headers=headers)
                        assert deleted.status == 204
                        deleted.release()
                ended = await ends(ws, sse)
                elapsed = time.monotonic() - start
                async with http.get(process.url + "/api/sse", headers=headers) as again:
                    return elapsed, ended, again.status

        elapsed, ended, status_after = asyncio.run(scenario())
        assert ended == (SESSION_ENDED, "session ended", b"")
        assert elapsed < DEADLINE
        assert status_after == 401
    finally:
        process.stop()


def test_sigterm_drains_requests_and_ends_streams_then_exits_0(tmp_path: Path, upstream: ServerThread) -> None:
    process = new_bff(tmp_path, upstream)
    process.start()
    _, headers = log_in(process)
    popen = process._process
    assert popen is not None

    async def scenario() -> tuple[int, bytes, tuple[int | None, str, bytes], int]:
        async with aiohttp.ClientSession() as http:
            ws, sse = await open_streams(http, process.url, headers)
            slow = asyncio.ensure_future(http.get(process.url + "/api/slow?delay=2", headers=headers))
            await asyncio.sleep(0.5)
            popen.send_signal(signal.SIGTERM)
            ended = await ends(ws, sse)
            answer = await slow
            body = await answer.read()
            code = await asyncio.to_thread(popen.wait, 15)
            return answer.status, body, ended, code

    try:
        status, body, ended, code = asyncio.run(scenario())
    finally:
        process.stop()
    assert (status, body) == (200, b'{"slow": true}')
    assert ended == (GOING_AWAY, "shutting down", b"")
    assert code == 0


def test_bff_serve_raises_its_soft_open_files_limit_to_the_hard_one() -> None:
    import resource

    from bff.server import raise_open_files_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 256)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        assert raise_open_files_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
