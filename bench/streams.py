"""Long-lived connections: many SSE streams, then as many WebSockets, held through one BFF worker,
while wrk sends new small GETs.

    python -m bench.streams                        # 2,000 SSE streams, then 2,000 WebSockets, 60 s each
    python -m bench.streams --streams 50 --duration 8   # the smoke test

`bff serve` (one worker, the default configuration; `--max-connections N` sets the route's
upstream pool, whose default is 10,000) logged in at the tests' oidc-provider as `bff-oidc` is
(bench/setups.py), a `token = "user"` route to bench/stream_upstream.py (aiohttp, on the client
CPU: an SSE event a second, a WebSocket echo). The harness opens the streams with the session's
cookie (aiohttp, at most 100 opening at once), holds them for `--duration` seconds once all are
open, and checks that each got events all along: a stream that never opened, or had a gap of
more than `STALL_S` between two events (WebSocket: two echoes of the message it sends every
second), is stalled. Meanwhile: the BFF's RSS (VmRSS) and open descriptors every 0.5 s, and wrk
-c 8 on `GET /api/items` (p99 of new requests). The descriptor limit is raised to its hard limit
for the harness and its children (the BFF holds two sockets per stream).

Results go to stdout and bench/results/streams.json. Exit status 1 when a target was missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from bench.machine import machine_info
from bench.measure import measure
from bench.processes import BENCH_DIR, Target, child_env, stop_targets
from bench.run import cpu_split, workspace
from bench.setups import Context, start_bff_provider, start_server
from bff.config import RouteSettings
from tests.support.processes import free_port

__all__ = ["STALL_S", "Stream", "main", "parse_args", "render"]

STALL_S = 5.0  # a longer gap between two events is a stalled stream
RSS_BUDGET_MIB = 300.0
P99_BUDGET_MS = 10.0
OPENING_AT_ONCE = 100
KINDS = ("sse", "websocket")
DEFAULT_POOL = RouteSettings.max_connections


@dataclass
class Stream:
    """What one client stream saw."""

    opened: bool = False
    events: int = 0
    max_gap: float = 0.0
    error: str = ""
    last: float = field(default=0.0, repr=False)

    def saw(self, now: float) -> None:
        if self.events:
            self.max_gap = max(self.max_gap, now - self.last)
        self.events, self.last = self.events + 1, now

    def stalled(self, end: float) -> bool:
        return not self.events or max(self.max_gap, end - self.last) > STALL_S


@dataclass
class Phase:
    """The streams of one kind and everything measured while they were held."""

    kind: str
    streams: list[Stream]
    deadline: float | None = None  # set once every stream opened (or failed to)
    rss_mib: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def settled(self) -> int:
        """How many streams opened or failed to."""
        return sum(s.opened or bool(s.error) for s in self.streams)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=2000, help="streams of each kind (default 2000)")
    parser.add_argument("--duration", type=int, default=60, help="seconds the streams are held (default 60)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="sse and/or websocket (default both)")
    parser.add_argument(
        "--max-connections", type=int, help=f"the route's upstream pool (default: the BFF's, {DEFAULT_POOL})"
    )
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "streams.json")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if set(args.kinds) - set(KINDS) or not args.kinds or args.streams < 1 or args.duration < 1:
        parser.error("--kinds: sse and/or websocket; --streams and --duration positive")
    return args


def raise_fd_limit() -> tuple[int, int]:
    """The soft descriptor limit up to the hard one (inherited by the BFF); (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return soft, hard


async def _hold(phase: Phase, step: Callable[[], Awaitable[None]]) -> None:
    """Call `step` (one event or echo, or a second's silence) until the phase's deadline."""
    while phase.deadline is None or time.monotonic() < phase.deadline:
        try:
            await asyncio.wait_for(step(), timeout=1.0)
        except TimeoutError:
            continue


async def sse_stream(
    http: aiohttp.ClientSession, url: str, phase: Phase, stream: Stream, gate: asyncio.Semaphore
) -> None:
    async with gate:
        response = await http.get(url)
    async with response:
        stream.opened = response.status == 200
        if not stream.opened:
            stream.error = f"status {response.status}"
            return

        async def step() -> None:
            line = await response.content.readline()
            if not line:
                raise ConnectionError("the stream ended")
            if line.startswith(b"data:"):
                stream.saw(time.monotonic())

        await _hold(phase, step)


async def websocket_stream(
    http: aiohttp.ClientSession, url: str, phase: Phase, stream: Stream, gate: asyncio.Semaphore
) -> None:
    async with gate:
        ws = await http.ws_connect(url, heartbeat=None, autoping=True)
    async with ws:
        stream.opened = True
        sent = 0.0

        async def step() -> None:
            nonlocal sent
            if time.monotonic() - sent >= 1.0:
                await ws.send_str("ping")
                sent = time.monotonic()
            message = await ws.receive(timeout=1.0)
            if message.type == aiohttp.WSMsgType.TEXT:
                stream.saw(time.monotonic())
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                raise ConnectionError(f"closed: {message.data}")

        await _hold(phase, step)


async def _guarded(run: Awaitable[None], stream: Stream) -> None:
    try:
        await run
    except (aiohttp.ClientError, ConnectionError, TimeoutError, OSError) as exc:
        stream.error = stream.error or f"{type(exc).__name__}: {exc}"


async def sample_process(pid: int, phase: Phase, stop: asyncio.Event) -> None:
    """VmRSS (MiB) and open descriptors of `pid` every 0.5 s until `stop`."""
    while not stop.is_set():
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")  # noqa: ASYNC240 (procfs: no disk)
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                phase.rss_mib.append(int(line.split()[1]) / 1024)
        phase.fds.append(len(os.listdir(f"/proc/{pid}/fd")))
        await asyncio.sleep(0.5)


async def run_phase(
    kind: str, args: argparse.Namespace, target: Target, upstream: Target, ctx: Context
) -> dict[str, Any]:
    phase = Phase(kind, [Stream() for _ in range(args.streams)])
    headers = {**dict(target.headers), "Origin": target.url.split("/api/")[0]}
    url = target.url.replace("/api/items", "/api/events" if kind == "sse" else "/api/ws")
    opener = sse_stream if kind == "sse" else websocket_stream
    stop, gate = asyncio.Event(), asyncio.Semaphore(OPENING_AT_ONCE)
    sampler = asyncio.create_task(sample_process(target.process.pid if target.process else 0, phase, stop))
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_read=None)
    async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as http:
        began = time.monotonic()
        tasks = [asyncio.create_task(_guarded(opener(http, url, phase, s, gate), s)) for s in phase.streams]
        while time.monotonic() - began < 60 and phase.settled() < args.streams:  # noqa: ASYNC110 (the streams' own flags)
            await asyncio.sleep(0.2)
        opening = time.monotonic() - began
        phase.deadline = time.monotonic() + args.duration
        cpus = (ctx.client_cpus, ctx.proxy_cpus)
        wrk = asyncio.to_thread(measure, target, upstream, 8, max(1, args.duration - 2), 1, *cpus)
        sample = await wrk
        await asyncio.gather(*tasks)
        end = phase.deadline
    stop.set()
    await sampler
    stalled = [s for s in phase.streams if s.stalled(end)]
    errors = sorted({s.error for s in phase.streams if s.error})
    return {
        "kind": kind,
        "streams": args.streams,
        "opened": sum(s.opened for s in phase.streams),
        "opening_seconds": opening,
        "stalled": len(stalled),
        "min_events": min(s.events for s in phase.streams),
        "max_gap_s": max(max(s.max_gap, end - s.last) if s.events else float(args.duration) for s in phase.streams),
        "errors": errors[:5],
        "rss_start_mib": phase.rss_mib[0] if phase.rss_mib else 0.0,
        "rss_peak_mib": max(phase.rss_mib, default=0.0),
        "fds_peak": max(phase.fds, default=0),
        "wrk": asdict(sample),
    }


def verdicts(row: dict[str, Any]) -> list[str]:
    return [
        "no stall" if row["stalled"] == 0 else f"{row['stalled']} STALLED",
        "RSS ok" if row["rss_peak_mib"] < RSS_BUDGET_MIB else f"RSS OVER {RSS_BUDGET_MIB:.0f} MiB",
        "NO REQUEST SERVED"
        if not row["wrk"]["requests"]
        else "p99 ok"
        if row["wrk"]["p99_ms"] < P99_BUDGET_MS and not row["wrk"]["errors"]
        else "p99 OVER 10 ms",
    ]


def render(
    machine: dict[str, Any], args: argparse.Namespace, rows: list[dict[str, Any]], limit: tuple[int, int]
) -> str:
    pool = args.max_connections or f"{DEFAULT_POOL} (default)"
    lines = [
        f"machine: {machine['nproc']} CPUs, {machine['cpu_model']}, Linux {machine['kernel']}, "
        f"load {machine['loadavg'][0]:.2f} at start; bff: git {machine['git']}; {machine['time']}",
        f"method: {args.streams} streams of each kind held {args.duration} s through one worker (route pool "
        f"{pool}); wrk -t1 -c8 GET /api/items meanwhile; fd limit {limit[0]} -> {limit[1]}",
        "",
        f"{'kind':<9} {'opened':>6} {'open s':>6} {'stalled':>7} {'max gap s':>9} {'RSS MiB':>7} {'peak':>6} "
        f"{'fds':>5} {'req/s':>6} {'p99 ms':>7} {'errors':>6}  verdict",
    ]
    for r in rows:
        w = r["wrk"]
        lines.append(
            f"{r['kind']:<9} {r['opened']:>6} {r['opening_seconds']:>6.1f} {r['stalled']:>7} {r['max_gap_s']:>9.1f} "
            f"{r['rss_start_mib']:>7.0f} {r['rss_peak_mib']:>6.0f} {r['fds_peak']:>5} {w['rps']:>6.0f} "
            f"{w['p99_ms']:>7.2f} {w['errors']:>6}  {', '.join(verdicts(r))}"
        )
        lines += [f"          error: {e}" for e in r["errors"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_fd_limit()
    client_cpus, proxy_cpus = cpu_split()
    os.sched_setaffinity(0, client_cpus)
    machine = machine_info()
    rows: list[dict[str, Any]] = []
    failure = ""
    with workspace(keep=args.keep) as workdir:
        env = child_env(workdir)
        port = free_port()
        argv_up = [sys.executable, "-m", "bench.stream_upstream", "--port", str(port)]
        upstream = start_server("upstream", port, argv_up, workdir, env, client_cpus)
        targets = [upstream]
        try:
            ctx = Context(workdir, env, client_cpus, proxy_cpus, port)

            def configure(settings: dict[str, Any]) -> None:
                if args.max_connections:
                    settings["routes"][0]["max_connections"] = args.max_connections

            target = start_bff_provider(ctx, "streams", dpop=False, configure=configure)
            targets.append(target)
            failure = upstream.failure or target.failure or ""
            rows += [uvloop.run(run_phase(kind, args, target, upstream, ctx)) for kind in args.kinds if not failure]
        finally:
            stop_targets(targets)
    print(render(machine, args, rows, limit) + (f"\nNOT MEASURED: {failure}" if failure else ""), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in vars(args).items() if k not in ("json", "keep")} | {"fd_limit": limit}
    args.json.write_text(json.dumps({"machine": machine, "options": options, "phases": rows}, indent=2) + "\n")
    print(f"\nresults: {args.json}", flush=True)
    return 1 if failure or any(r["stalled"] or r["wrk"]["errors"] or not r["wrk"]["requests"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
