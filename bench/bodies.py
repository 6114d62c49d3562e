"""Large bodies through the proxies: one command, one table.

    python -m bench.bodies                  # 1 GiB down and up, 3 runs per set-up (about 2 minutes)
    python -m bench.bodies --size 8MiB --runs 1 --verify   # the smoke test

Each transfer is one request on a fresh connection: a download (`GET /api/bulk/N`, the upstream
streams N bytes) and an upload (`PUT`, the client streams N bytes, the upstream counts and throws
them away; with --verify both sides check SHA-256 too), in these set-ups:

    upstream  client -> bench/bulk_upstream.py               (the ceiling of the client's core)
    caddy     client -> caddy reverse_proxy -> upstream
    bff       client -> bff serve (token = "none")  -> upstream
    bff-user  client -> bff serve (token = "user", a session at bench/idp.py) -> upstream
    caddy-auth client -> caddy forward_auth (README's example; asks bff serve, auth-request mode,
              a session at the tests' oidc-provider, for the token) -> upstream

The client (bench/http_client.py) and the upstream share CPU 0, the process under test runs
alone on CPU 1 (README default configuration, one worker). During each transfer the harness
samples the process's VmRSS (/proc/PID/status) every 10 ms: the growth is the peak minus the
value just before (`caddy-auth`: Caddy's, which carries the bytes; its CPU is Caddy's and the
BFF's). MB/s is 10^6 bytes per second of wall time; CPU s/GiB is the process's user + system
time per GiB moved (steadier than MB/s on a shared machine). Runs are interleaved; the table
shows medians of MB/s and CPU, and the largest RSS growth of any run.

Target (the issue): the BFF at >= 0.8 x Caddy's MB/s both ways, its RSS growth under 64 MiB.
Results also go, as JSON, to bench/results/bodies.json. Exit status 0 when every transfer
completed and was checked, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import uvloop

from bench.bodies_report import DIRECTIONS, SETUPS, render, summarise, verdicts
from bench.bulk_upstream import BULK_PATH, blocks, expected_sha256
from bench.http_client import Response, connect
from bench.machine import machine_info
from bench.processes import BENCH_DIR, Target, child_env, running, stop_targets, target_cpu
from bench.report import machine_lines
from bench.run import cpu_split, cpus_text, workspace, write_json
from bench.setups import Context, start_server
from bench.table import STARTERS
from bff.settings_reader import parse_bytesize
from tests.support.processes import free_port

__all__ = ["RssPeak", "Transfer", "main", "parse_args", "transfer", "vm_rss"]

MIB = 1024 * 1024
DEFAULT_JSON = BENCH_DIR / "results" / "bodies.json"


@dataclass
class Transfer:
    setup: str
    direction: str
    run: int
    size: int
    seconds: float
    mb_per_s: float
    cpu_seconds: float  # of the process under test
    rss_before_mib: float
    rss_peak_mib: float
    problem: str | None  # why the transfer does not count (short, wrong digest, error status)
    loadavg_1m: float

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_peak_mib - self.rss_before_mib


def vm_rss(pid: int) -> int:
    """The resident set of `pid` in bytes, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for {pid}")


class RssPeak:
    """Samples a process's VmRSS in a thread until stopped: `before` at the start, then `peak`."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid, self.interval = pid, interval
        self.before = self.peak = vm_rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, vm_rss(self.pid))

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, vm_rss(self.pid))


async def _exchange(target: Target, direction: str, size: int, *, verify: bool) -> str | None:
    """One transfer through `target`; what was wrong with it, or None."""
    parts = urlsplit(target.url)
    connection = await connect(parts.hostname or "127.0.0.1", parts.port or 80)
    digest = hashlib.sha256() if verify else None
    try:
        if direction == "download":
            sink = digest.update if digest is not None else len
            response: Response = await connection.send("GET", f"{BULK_PATH}{size}", target.headers, sink=sink)
            received, sha = response.length, digest.hexdigest() if digest is not None else None
        else:
            answer = connection.send("PUT", f"{BULK_PATH}upload", target.headers, length=size)
            await connection.stream(blocks(size))
            response = await answer
            counted = json.loads(response.body) if response.status == 200 else {}
            received, sha = counted.get("bytes", 0), counted.get("sha256")
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()
    if response.status != 200:
        return f"answered {response.status}: {bytes(response.body[:200])!r}"
    if received != size:
        return f"{received} of {size} bytes arrived"
    if verify and sha != expected_sha256(size):
        return "the SHA-256 of what arrived differs from what was sent"
    return None


def transfer(target: Target, direction: str, size: int, run: int, *, verify: bool) -> Transfer:
    """One measured transfer: wall time, the process's CPU time and its RSS peak around it."""
    cpu_before = target_cpu(target)  # with `caddy-auth`, the BFF it asks too
    with RssPeak(running(target).pid) as rss:
        start = time.perf_counter()
        problem = uvloop.run(_exchange(target, direction, size, verify=verify))
        seconds = time.perf_counter() - start
    cpu = target_cpu(target) - cpu_before
    return Transfer(
        target.name,
        direction,
        run,
        size,
        seconds,
        size / seconds / 1e6,
        cpu,
        rss.before / MIB,
        rss.peak / MIB,
        problem,
        os.getloadavg()[0],
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bodies", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1GiB", help="bytes per transfer: 1GiB (default), 8MiB, 1048576, ...")
    parser.add_argument("--runs", type=int, default=3, help="transfers per set-up and direction (default 3)")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated subset of {','.join(SETUPS)}")
    parser.add_argument("--verify", action="store_true", help="check the SHA-256 of every body (costs client CPU)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (configs and logs)")
    args = parser.parse_args(argv)
    args.size = parse_bytesize(args.size)
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    if set(args.setups) - set(SETUPS) or args.runs < 1 or args.size < 1:
        parser.error(f"--setups must be among {','.join(SETUPS)}; --runs and --size must be positive")
    return args


def measure_all(
    args: argparse.Namespace, workdir: Path, client_cpus: set[int], proxy_cpus: set[int]
) -> tuple[list[Transfer], dict[str, str]]:
    """Start the bulk upstream and the set-ups, run the interleaved transfers, stop them all."""
    env = child_env(workdir)
    targets: list[Target] = []
    transfers: list[Transfer] = []
    try:
        port = free_port()
        argv = [sys.executable, str(BENCH_DIR / "bulk_upstream.py"), "--port", str(port)]
        upstream = start_server("upstream", port, argv + (["--hash"] if args.verify else []), workdir, env, client_cpus)
        targets.append(upstream)
        if upstream.failure is None:
            ctx = Context(workdir, env, client_cpus, proxy_cpus, upstream.port)
            targets += [STARTERS[name](ctx) for name in SETUPS[1:] if name in args.setups]
        live = [t for t in targets if t.failure is None and t.name in args.setups]
        for run in range(1, args.runs + 1):
            for direction in DIRECTIONS:
                for target in live:
                    transfers.append(transfer(target, direction, args.size, run, verify=args.verify))
                    print(f"bench.bodies: {transfers[-1]}", file=sys.stderr, flush=True)
    finally:
        stop_targets(targets)
    return transfers, {t.name: t.failure for t in targets if t.failure is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if "caddy" in args.setups and shutil.which("caddy") is None:
        print("bench.bodies: caddy is not installed (Debian: apt-get install caddy)", file=sys.stderr)
        return 2
    client_cpus, proxy_cpus = cpu_split()
    os.sched_setaffinity(0, client_cpus)  # the client stays off the proxy's CPU
    machine = machine_info()
    with workspace(keep=args.keep) as workdir:
        transfers, failures = measure_all(args, workdir, client_cpus, proxy_cpus)
    rows = summarise(transfers)
    header = [
        *machine_lines(machine, [t.loadavg_1m for t in transfers]),
        f"method: {args.size} B per transfer, one request per fresh connection, {args.runs} run(s) interleaved, "
        f"medians; checked: bytes{' + SHA-256' if args.verify else ''}; client + upstream on CPU "
        f"{cpus_text(client_cpus)}, process under test on CPU {cpus_text(proxy_cpus)}",
    ]
    print(render(header, rows, failures), flush=True)
    options = {"size": args.size, "runs": args.runs, "setups": args.setups, "verify": args.verify}
    results = {"machine": machine, "options": options, "summary": [asdict(r) for r in rows]}
    results |= {
        "verdicts": [asdict(c) for c in verdicts(rows)],
        "transfers": [asdict(t) for t in transfers],
        "failures": failures,
    }
    write_json(args.json, results)
    print(f"\nresults: {args.json}", flush=True)
    return 0 if not failures and all(t.problem is None for t in transfers) else 1


if __name__ == "__main__":
    raise SystemExit(main())
