"""The processes of a benchmark run: a `Target` (a server wrk drives), starting one pinned to its
CPUs, waiting until it answers, reading its CPU time, stopping it with its helpers.

What each set-up starts is bench/setups.py's; how a run is measured, bench/measure.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from tests.support.processes import stop_process

__all__ = [
    "BENCH_DIR",
    "CSRF_HEADER",
    "OPEN_REQUEST_PATH",
    "REPO_ROOT",
    "REQUEST_PATH",
    "RESPONSE_SIZE",
    "START_TIMEOUT",
    "Target",
    "child_env",
    "pin_threads",
    "pinned",
    "probe",
    "process_tree_cpu",
    "run_pinned",
    "running",
    "spawn",
    "start_redis",
    "stop_targets",
    "tail",
    "target_cpu",
    "view",
    "wait_ready",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESPONSE_SIZE = 1024
REQUEST_PATH = "/api/items"
OPEN_REQUEST_PATH = "/pub/items"  # `bff-oidc`'s second route: the same upstream, `token = "none"`
CSRF_HEADER = ("X-CSRF", "1")
START_TIMEOUT = 30.0


@dataclass
class Target:
    name: str
    url: str
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    failure: str | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=lambda: [CSRF_HEADER])  # sent with every request
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)  # stopped with the target
    measured: list[subprocess.Popen[bytes]] = field(default_factory=list)  # helpers whose CPU counts as the target's
    closers: list[Callable[[], None]] = field(default_factory=list)  # called after the helpers are stopped

    @property
    def port(self) -> int:
        """The port of `url` (the upstream's is what every other set-up proxies to)."""
        port = urlsplit(self.url).port
        if port is None:
            raise ValueError(f"{self.name}: no port in {self.url!r}")
        return port


def view(base: Target, name: str, path: str) -> Target:
    """`base`'s process, requested at `path` with the same headers: a row of its own in the
    table whose CPU figures are that process's in its own runs. Stopping `base` stops it."""
    return dataclasses.replace(
        base,
        name=name,
        url=f"http://127.0.0.1:{base.port}{path}",
        headers=list(base.headers),
        helpers=[],
        closers=[],
        measured=list(base.measured),
    )


def running(target: Target) -> subprocess.Popen[bytes]:
    """The target's process; a target that never started one cannot be measured."""
    if target.process is None:
        raise RuntimeError(f"{target.name} has no process")
    return target.process


def child_env(workdir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BFF_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["XDG_DATA_HOME"] = str(workdir / "xdg-data")  # Caddy's storage, not the user's
    env["XDG_CONFIG_HOME"] = str(workdir / "xdg-config")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def pinned(cpus: set[int]) -> Callable[[], None]:
    """A `preexec_fn` that pins the child (and every thread it will start) to `cpus`."""

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def pin_threads(pid: int, cpus: set[int]) -> None:
    """Move every thread of a running process to `cpus` (a process started without `spawn`)."""
    for thread in psutil.Process(pid).threads():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(thread.id, cpus)


def spawn(argv: Sequence[str], *, cpus: set[int], log: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=pinned(cpus),
            start_new_session=True,
        )


def run_pinned(argv: Sequence[str], cpus: set[int], *, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a client (wrk, py-spy) on `cpus` to its end; its output as text, whatever its status."""
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, preexec_fn=pinned(cpus), check=False
    )


def tail(path: Path | None, lines: int = 15) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return "\n".join(text[-lines:])


def probe(url: str, headers: Sequence[tuple[str, str]] = (CSRF_HEADER,)) -> tuple[int, bytes, list[tuple[str, str]]]:
    """One GET (by default with the anti-forgery header): status, body, response headers."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", "/" + path, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.read(), response.getheaders()
    finally:
        connection.close()


def wait_ready(target: Target, timeout: float = START_TIMEOUT, expect_size: int | None = RESPONSE_SIZE) -> None:
    """Poll until the target answers 200 (with the 1 KiB body); set `target.failure` otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if target.process is not None and target.process.poll() is not None:
            target.failure = f"exited with status {target.process.returncode} before answering"
            return
        try:
            status, body, headers = probe(target.url, target.headers)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
            continue
        if status == 200 and (expect_size is None or len(body) == expect_size):
            target.response_headers = headers
            return
        target.failure = f"answered {status} with {len(body)} bytes: {body[:200]!r}"
        return
    target.failure = f"not ready after {timeout:.0f} s ({last})"


def target_cpu(target: Target) -> float:
    """CPU seconds of the target's process tree and of its `measured` helpers'."""
    processes = [running(target), *target.measured]
    return sum(process_tree_cpu(psutil.Process(process.pid)) for process in processes)


def process_tree_cpu(process: psutil.Process) -> float:
    """User + system CPU seconds of a process and its live children."""
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def stop_targets(targets: Sequence[Target]) -> None:
    """Stop the targets in reverse start order, each with its helpers, then call its closers."""
    for target in reversed(targets):
        stop_process(target.process)
        for helper in target.helpers:
            stop_process(helper)
        for close in target.closers:
            close()


def start_redis(directory: Path, cpus: set[int], env: dict[str, str]) -> Target:
    """A redis-server of the tests' kind (`tests.support.redis_server`: loopback, a free port,
    nothing kept on disk) on `cpus`, its output in `directory`; its `url` is the store URL, its
    `process` the server, or `failure` says why there is none."""
    from tests.support.redis_server import REDIS_SERVER_CANDIDATES, RedisServer  # needs pytest: imported when used

    executable = next(filter(None, map(shutil.which, REDIS_SERVER_CANDIDATES)), None)
    if executable is None:
        return Target("redis", "", failure="redis-server is not installed (apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(executable, directory)
    log = directory / "redis.log"
    redis = Target("redis", server.url, log=log)
    redis.process = spawn(server.command(), cpus=cpus, log=log, cwd=directory, env=env)
    deadline = time.monotonic() + START_TIMEOUT
    while not server.ping():
        if redis.process.poll() is not None or time.monotonic() > deadline:
            stop_process(redis.process)
            redis.process, redis.failure = None, f"redis-server did not start: {tail(log, 5)}"
            break
        time.sleep(0.02)
    return redis
