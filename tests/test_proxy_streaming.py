"""Streaming through the proxy: server-sent events arrive unbuffered, and 1 GiB passes each way
with the proxy process's resident memory growing by less than 64 MiB.

The memory tests run the upstream and the proxy as processes of their own (uvicorn with uvloop
and httptools, as in production), so the proxy's RSS is its own.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import httpx
import psutil
import pytest

from bff.config import RouteSettings
from tests.support.processes import free_port
from tests.support.upstreams import CHUNK, ServerThread, UpstreamApp, make_settings, proxy_server

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3
MIB = 1024**2


async def test_server_sent_events_arrive_before_the_next_one_is_written() -> None:
    upstream = UpstreamApp()
    with ServerThread(upstream) as server:
        settings = make_settings(RouteSettings(path="/api", upstream=server.url))
        with proxy_server(settings) as (proxy, _, _):
            async with (
                httpx.AsyncClient(base_url=proxy.url, headers={"x-csrf": "1"}, timeout=10) as client,
                client.stream("GET", "/api/sse?events=4") as response,
            ):
                assert response.headers["content-type"] == "text/event-stream"
                received = []
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        received.append(line)
                        # The upstream holds event i+1 until this arrives (up to 3 s).
                        upstream.sse_acks[len(received) - 1].set()
    assert received == [f"data: event {i}" for i in range(4)]
    assert upstream.sse_waited == [True, True, True, True]


class Process:
    """`python -m tests.support.upstreams ROLE` on a free port, stopped on exit."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.support.upstreams", *args, "--port", str(self.port)], cwd=REPO, env=env
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                assert self.popen.poll() is None, f"{args[0]} exited"
                assert time.monotonic() < deadline, f"{args[0]} did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class PeakRSS:
    """Samples a process's resident memory every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline: int = self.process.memory_info().rss
        self.peak: int = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        return self.peak - self.baseline


@pytest.fixture(scope="module")
def processes() -> Iterator[tuple[Process, Process]]:
    upstream = Process("upstream")
    try:
        proxy = Process("proxy", "--upstream", upstream.url)
        try:
            yield upstream, proxy
        finally:
            proxy.stop()
    finally:
        upstream.stop()


async def _warm_up(session: aiohttp.ClientSession, proxy: Process) -> None:
    for _ in range(3):
        async with session.get(proxy.url + "/api/bytes?n=8388608") as response:
            assert len(await response.read()) == 8 * MIB
        async with session.post(proxy.url + "/api/count", data=_chunks(8)) as response:
            assert (await response.json())["received"] == 8 * MIB


async def _chunks(count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield CHUNK


async def test_one_gib_download_streams_in_bounded_memory(processes: tuple[Process, Process]) -> None:
    _, proxy = processes
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        await _warm_up(session, proxy)
        rss = PeakRSS(proxy.popen.pid)
        started = time.monotonic()
        received = 0
        async with session.get(proxy.url + f"/api/bytes?n={GIB}", timeout=aiohttp.ClientTimeout(total=60)) as response:
            assert response.status == 200
            assert response.headers["content-length"] == str(GIB)
            async for chunk in response.content.iter_any():
                received += len(chunk)
        elapsed = time.monotonic() - started
        growth = rss.stop()
    assert received == GIB
    assert growth < 64 * MIB, f"proxy RSS grew by {growth / MIB:.1f} MiB"
    print(f"\n1 GiB download: {elapsed:.1f} s, proxy RSS growth {growth / MIB:.1f} MiB")


async def test_one_gib_upload_streams_in_bounded_memory(processes: tuple[Process, Process]) -> None:
    _, proxy = processes

    async def body() -> AsyncIterator[bytes]:
        for _ in range(GIB // len(CHUNK)):
            yield CHUNK

    async with aiohttp.ClientSession() as session:
        await _warm_up(session, proxy)
        rss = PeakRSS(proxy.popen.pid)
        started = time.monotonic()
        async with session.post(
            proxy.url + "/api/count",
            data=body(),
            headers={"content-length": str(GIB)},
            timeout=aiohttp.ClientTimeout(total=60),
        ) as response:
            assert response.status == 200
            result = await response.json()
        elapsed = time.monotonic() - started
        growth = rss.stop()
    assert result["received"] == GIB
    assert growth < 64 * MIB, f"proxy RSS grew by {growth / MIB:.1f} MiB"
    print(f"\n1 GiB upload: {elapsed:.1f} s, proxy RSS growth {growth / MIB:.1f} MiB")


async def test_chunked_upload_without_length_streams_too(processes: tuple[Process, Process]) -> None:
    _, proxy = processes

    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield CHUNK
            await asyncio.sleep(0)

    async with (
        aiohttp.ClientSession() as session,
        session.post(proxy.url + "/api/count?hash=1", data=body()) as response,
    ):
        result = await response.json()
    assert result["received"] == 64 * MIB
