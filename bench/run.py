"""The proxy benchmark: one command, one table.

    python -m bench                  # 3 runs x 5 s at concurrency 8 and 32 (about 2 minutes)
    python -m bench --quick          # 1 run x 2 s (smoke test)

A small GET (1 KiB response) in three set-ups, all in the same run:

    upstream  wrk -> upstream                       (bench/upstream.py: raw uvloop + httptools)
    caddy     wrk -> caddy reverse_proxy -> upstream (Debian's caddy, bench/Caddyfile.template)
    bff       wrk -> bff serve (token = "none")  -> upstream (one uvicorn worker)

and, opt-in with --setups: `bff-user` (a `token = "user"` route with a session logged in at the
development provider, bench/idp.py), `bff-cookie` (the same with `token_storage = "cookie"`: the
session sealed into the cookie), `bff-tokenapi` (the same route with a session logged in through
`POST /bff/login` at the flask-jwt-extended API of tests/token_apis/, README's `[token_api]`) and
`minimal` (bench/minimal_proxy.py, the stack's ceiling).

wrk and the upstream share CPU 0; the process under test (Caddy or the BFF) runs alone on CPU 1.
For each measurement the harness reads the CPU time of the process under test (user + system,
psutil) before and after wrk and divides by the requests served: CPU µs per request, the
steadiest figure on a noisy machine. Runs are interleaved (run 1 of every set-up, then run 2,
...) so that a burst of noise does not land on one set-up only; the table shows medians.

Results go to stdout and, as JSON, to bench/results/latest.json (git-ignored).
Exit status: 0 when every set-up ran without errors, 1 otherwise (the table is printed anyway).
"""

from __future__ import annotations

import argparse
import contextlib
import html
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import secrets
import shutil
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import psutil

from tests.support.bff_process import to_toml as to_toml  # re-exported: the tests read the bench TOML
from tests.support.processes import stop_process

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_JSON = BENCH_DIR / "results" / "latest.json"
RESPONSE_SIZE = 1024
REQUEST_PATH = "/api/items"
CSRF_HEADER = ("X-CSRF", "1")
DEFAULT_SETUPS = ("upstream", "caddy", "bff")  # the others are opt-in (see bench/README.md)
BENCH_SECRET = "bench-only-secret-not-for-production-0123456789"
TARGET_RATIO = 0.4  # the BFF's req/s must be at least this fraction of Caddy's
COOKIE_CPU_BUDGET = 1.10  # cookie mode's CPU per request may be at most this multiple of server mode's
P99_BUDGET_MS = 3.0  # the BFF's p99 may exceed Caddy's by at most this much
START_TIMEOUT = 30.0
# A run is "disturbed" when other processes took more than this share (%) of the proxy's CPU, or of
# the client CPU beyond wrk and the upstream; it is repeated (--attempts) and the least disturbed kept.
NOISE_LIMIT_PROXY = 10.0
NOISE_LIMIT_CLIENT = 25.0


# --- results -----------------------------------------------------------------------------------


@dataclass
class Sample:
    """One wrk run against one set-up."""

    setup: str
    concurrency: int
    run: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    cpu_us_per_request: float
    cpu_percent: float  # CPU time of the process under test / wall time of the run
    upstream_cpu_us_per_request: float
    loadavg_1m: float
    noise_proxy_percent: float  # CPU time of other processes on the proxy's CPU / wall time
    noise_client_percent: float  # the same on the client CPU, beyond wrk, the upstream and the harness
    attempts: int

    @property
    def disturbed(self) -> bool:
        return self.noise_proxy_percent > NOISE_LIMIT_PROXY or self.noise_client_percent > NOISE_LIMIT_CLIENT


@dataclass
class Summary:
    """Medians of the samples of one set-up at one concurrency."""

    setup: str
    concurrency: int
    runs: int
    rps: float
    rps_min: float
    rps_max: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_request: float
    cpu_percent: float
    errors: int
    noise_percent: float  # median of the worse of the two noise figures of each run
    disturbed: int  # runs still over the noise limits after their attempts


@dataclass
class Ratio:
    """The BFF against Caddy at one concurrency: the figures the issue's target is stated in."""

    concurrency: int
    rps_ratio: float
    cpu_ratio: float
    p99_delta_ms: float
    rps_ok: bool
    p99_ok: bool


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
    closers: list[Callable[[], None]] = field(default_factory=list)  # called after the helpers are stopped


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpus: set[int]) -> Callable[[], None]:
    """A `preexec_fn` that pins the child (and every thread it will start) to `cpus`."""

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


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


def process_tree_cpu(process: psutil.Process) -> float:
    """User + system CPU seconds of a process and its live children."""
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


# --- wrk ---------------------------------------------------------------------------------------


def wrk_argv(target: Target, concurrency: int, duration: int) -> list[str]:
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "5s"]
    for name, value in target.headers:
        argv += ["-H", f"{name}: {value}"]
    return argv


def run_wrk(target: Target, concurrency: int, duration: int, cpus: set[int]) -> dict[str, int]:
    argv = [*wrk_argv(target, concurrency, duration), "-s", str(BENCH_DIR / "report.lua"), target.url]
    completed = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        preexec_fn=pinned(cpus),
        check=False,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return {key: int(value) for key, value in (item.split("=") for item in line.split()[1:])}
    raise RuntimeError(f"wrk printed no result (status {completed.returncode}): {completed.stderr.strip()}")


def core_busy(cpus: set[int]) -> float:
    """CPU seconds the given cores spent on anything but idling (steal included)."""
    per_cpu = psutil.cpu_times(percpu=True)
    return sum(
        float(t.user + t.nice + t.system)
        + float(getattr(t, "irq", 0.0))
        + float(getattr(t, "softirq", 0.0))
        + float(getattr(t, "steal", 0.0))
        for i, t in enumerate(per_cpu)
        if i in cpus
    )


def own_cpu() -> float:
    """CPU seconds of the harness and its waited-for children (wrk)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def measure(
    target: Target,
    upstream: Target,
    concurrency: int,
    duration: int,
    run: int,
    client_cpus: set[int],
    proxy_cpus: set[int],
    attempt: int = 1,
) -> Sample:
    assert target.process is not None and upstream.process is not None
    proc = psutil.Process(target.process.pid)
    up = psutil.Process(upstream.process.pid)
    load = os.getloadavg()[0]
    pinned_apart = client_cpus != proxy_cpus
    client_before, proxy_before, own_before = core_busy(client_cpus), core_busy(proxy_cpus), own_cpu()
    cpu_before, up_before, wall_before = process_tree_cpu(proc), process_tree_cpu(up), time.monotonic()
    result = run_wrk(target, concurrency, duration, client_cpus)
    cpu_after, up_after, wall_after = process_tree_cpu(proc), process_tree_cpu(up), time.monotonic()
    client_after, proxy_after, own_after = core_busy(client_cpus), core_busy(proxy_cpus), own_cpu()
    wall = wall_after - wall_before
    tested = cpu_after - cpu_before if target is not upstream else 0.0
    foreign_proxy = (proxy_after - proxy_before) - tested
    foreign_client = (client_after - client_before) - (up_after - up_before) - (own_after - own_before)
    requests = max(result["requests"], 1)
    seconds = result["duration_us"] / 1e6
    errors = sum(result[key] for key in ("connect", "read", "write", "status", "timeout"))
    return Sample(
        setup=target.name,
        concurrency=concurrency,
        run=run,
        requests=result["requests"],
        seconds=seconds,
        rps=result["requests"] / seconds if seconds else 0.0,
        p50_ms=result["p50_us"] / 1000,
        p90_ms=result["p90_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        max_ms=result["max_us"] / 1000,
        errors=errors,
        cpu_us_per_request=(cpu_after - cpu_before) * 1e6 / requests,
        cpu_percent=100 * (cpu_after - cpu_before) / (wall_after - wall_before),
        upstream_cpu_us_per_request=(up_after - up_before) * 1e6 / requests,
        loadavg_1m=load,
        noise_proxy_percent=max(0.0, 100 * foreign_proxy / wall) if pinned_apart and target is not upstream else 0.0,
        noise_client_percent=max(0.0, 100 * foreign_client / wall) if pinned_apart else 0.0,
        attempts=attempt,
    )


# --- set-ups -----------------------------------------------------------------------------------


def child_env(workdir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BFF_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["XDG_DATA_HOME"] = str(workdir / "xdg-data")  # Caddy's storage, not the user's
    env["XDG_CONFIG_HOME"] = str(workdir / "xdg-config")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def start_upstream(workdir: Path, env: dict[str, str], cpus: set[int]) -> Target:
    port = free_port()
    target = Target("upstream", f"http://127.0.0.1:{port}{REQUEST_PATH}", log=workdir / "upstream.log")
    argv = [sys.executable, str(BENCH_DIR / "upstream.py"), "--port", str(port), "--size", str(RESPONSE_SIZE)]
    assert target.log is not None
    target.process = spawn(argv, cpus=cpus, log=target.log, cwd=workdir, env=env)
    wait_ready(target)
    return target


def start_caddy(workdir: Path, env: dict[str, str], cpus: set[int], upstream_port: int) -> Target:
    port = free_port()
    target = Target("caddy", f"http://127.0.0.1:{port}{REQUEST_PATH}", log=workdir / "caddy.log")
    template = string.Template((BENCH_DIR / "Caddyfile.template").read_text(encoding="utf-8"))
    caddyfile = workdir / "Caddyfile"
    caddyfile.write_text(template.substitute(port=port, upstream_port=upstream_port), encoding="utf-8")
    argv = ["caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
    assert target.log is not None
    target.process = spawn(argv, cpus=cpus, log=target.log, cwd=workdir, env=env)
    wait_ready(target)
    return target


def bff_settings(port: int, upstream_port: int, oidc: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The BFF under test: one route `/api` to the bench upstream, `token = "none"` (or, with an
    `[oidc]` section, `token = "user"`), sessions in memory; `extra` adds top-level settings
    (`token_storage = "cookie"`)."""
    return {
        "secret_keys": [BENCH_SECRET],
        "public_url": f"http://127.0.0.1:{port}",
        "session_store": "memory://",
        **extra,
        **({"oidc": oidc} if oidc else {}),
        "routes": [
            {"path": "/api", "upstream": f"http://127.0.0.1:{upstream_port}", "token": "user" if oidc else "none"}
        ],
    }


def start_bff(
    name: str,
    workdir: Path,
    env: dict[str, str],
    cpus: set[int],
    settings: dict[str, Any],
    port: int,
) -> Target:
    """`bff serve --config FILE --port PORT`; waits for `/healthz`, and for the proxied answer
    only when every route is `token = "none"` (a `token = "user"` route answers 401 until someone
    logs in)."""
    target = Target(name, f"http://127.0.0.1:{port}{REQUEST_PATH}", log=workdir / f"{name}.log")
    argv = [sys.executable, "-m", "bff", "serve", "--port", str(port), "--log-level", "warning"]
    config = workdir / f"{name}.toml"
    config.write_text("# Generated by bench/run.py.\n" + to_toml(settings), encoding="utf-8")
    argv += ["--config", str(config)]
    assert target.log is not None
    target.process = spawn(argv, cpus=cpus, log=target.log, cwd=workdir, env=env)
    health = Target(name, f"http://127.0.0.1:{port}/healthz", process=target.process, headers=[])
    wait_ready(health, expect_size=None)
    target.failure = health.failure
    if target.failure is None and all(route["token"] == "none" for route in settings["routes"]):
        wait_ready(target)  # the proxied 1 KiB answer itself (the others wait for a login)
    return target


def start_bff_logged_in(
    name: str,
    workdir: Path,
    env: dict[str, str],
    client_cpus: set[int],
    cpus: set[int],
    upstream_port: int,
    extra: dict[str, Any],
) -> Target:
    """The opt-in logged-in set-ups (`bff-user`, `bff-cookie`): a `token = "user"` route, a session
    logged in at `bench/idp.py` (the development provider, on the client CPU), its cookie sent by
    wrk; `extra` are further settings (`token_storage`)."""
    port, idp_port = free_port(), free_port()
    secret = secrets.token_urlsafe(24)
    idp_log = workdir / f"{name}-idp.log"
    idp_argv = [sys.executable, str(BENCH_DIR / "idp.py"), "--port", str(idp_port), "--client-secret", secret]
    idp_argv += ["--redirect-uri", f"http://127.0.0.1:{port}/bff/callback"]
    idp = spawn(idp_argv, cpus=client_cpus, log=idp_log, cwd=workdir, env=env)
    issuer = f"http://127.0.0.1:{idp_port}/idp"
    discovery = Target("idp", f"{issuer}/.well-known/openid-configuration", process=idp, headers=[], log=idp_log)
    wait_ready(discovery, expect_size=None)
    if discovery.failure is not None:
        return Target(name, "", process=idp, failure=f"identity provider: {discovery.failure}", log=idp_log)
    oidc = {"issuer": issuer, "client_id": "bench-bff", "client_secret": secret}
    target = start_bff(name, workdir, env, cpus, bff_settings(port, upstream_port, oidc, **extra), port)
    target.helpers.append(idp)
    if target.failure is None:
        try:
            cookie = log_in(f"http://127.0.0.1:{port}")
        except (OSError, ValueError, KeyError) as exc:
            target.failure = f"login failed: {exc}"
            return target
        target.headers = [CSRF_HEADER, ("Cookie", cookie)]
        wait_ready(target)
    return target


def log_in(base: str, user: str = "alice") -> str:
    """Walk the authorization-code flow like a browser and return the `Cookie` header value of
    the new session. Cookies are handled by hand: the BFF's are `Secure`, sent here over http."""
    jar: dict[str, str] = {}

    def remember(response: http.client.HTTPResponse) -> None:
        for header, value in response.getheaders():
            if header.lower() != "set-cookie":
                continue
            pair, _, attributes = value.partition(";")
            name, _, content = pair.strip().partition("=")
            if not content or "max-age=0" in attributes.lower().replace(" ", ""):
                jar.pop(name, None)
            else:
                jar[name] = content

    def request(url: str, method: str = "GET", body: str | None = None) -> tuple[int, str, str]:
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())} if url.startswith(base) and jar else {}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body, headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
            if url.startswith(base):
                remember(response)
            return response.status, urljoin(url, response.getheader("Location") or ""), text
        finally:
            connection.close()

    status, authorize, _ = request(f"{base}/bff/login?returnTo=/")
    if status not in (302, 303):
        raise ValueError(f"GET /bff/login answered {status}")
    status, _, page = request(authorize)
    match = re.search(r'name="transaction" value="([^"]+)"', page)
    if status != 200 or match is None:
        raise ValueError(f"the provider's login page answered {status} without a transaction")
    form = urlencode({"transaction": html.unescape(match.group(1)), "username": user})
    status, callback, _ = request(urljoin(authorize, "authorize"), "POST", form)
    if status not in (302, 303) or not callback.startswith(base):
        raise ValueError(f"the provider's login answered {status}, not a redirect to the BFF")
    status, _, text = request(callback)
    if status not in (302, 303) or not jar:
        raise ValueError(f"GET /bff/callback answered {status}: {text[:200]}")
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def token_api_settings(port: int, upstream_port: int, api_url: str) -> dict[str, Any]:
    """README.md's flask-jwt-extended configuration (`<!-- config: flask_jwt -->`: its `[session]`
    and `[token_api]` as they are, the API at `api_url`), with what `bff-user` has of its own: the
    bench's secret and address, sessions in memory, and the same `token = "user"` route to the
    bench upstream (the JWT API is only where the session comes from)."""
    from tests.support.readme_configs import readme_config

    settings = readme_config("flask_jwt", api_url=api_url)
    settings.update(
        secret_keys=[BENCH_SECRET],
        public_url=f"http://127.0.0.1:{port}",
        session_store="memory://",
        routes=[{"path": "/api", "upstream": f"http://127.0.0.1:{upstream_port}", "token": "user"}],
    )
    return settings


def pin_threads(pid: int, cpus: set[int]) -> None:
    """Move every thread of a running process to `cpus` (a process started without `spawn`)."""
    for thread in psutil.Process(pid).threads():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(thread.id, cpus)


def start_bff_token_api(ctx: Context, name: str = "bff-tokenapi") -> Target:
    """`bff-tokenapi`: the flask-jwt-extended API of tests/token_apis/, started by the tests' own
    `TokenApi` (waitress, moved to the client CPU), the BFF with README's `[token_api]` for it, a
    session logged in through `POST /bff/login`, its cookie sent by wrk. The API's access tokens
    live an hour, so no refresh falls into the runs: the proxied path alone is measured."""
    from tests.support.token_apis import FLASK_JWT, TokenApi

    missing = [module for module in FLASK_JWT.requires if importlib.util.find_spec(module) is None]
    if missing:
        return Target(name, "", failure=f"{', '.join(missing)} not installed (pip install -e '.[test]')")
    api = TokenApi(FLASK_JWT, ctx.workdir / f"{name}-api", access_lifetime=3600)
    try:
        api.start()
    except RuntimeError as exc:
        api.close()
        return Target(name, "", failure=f"token API: {exc}", log=api.log_file)
    pin_threads(api.pid, ctx.client_cpus)
    port = free_port()
    settings = token_api_settings(port, ctx.upstream_port, api.url)
    target = start_bff(name, ctx.workdir, ctx.env, ctx.proxy_cpus, settings, port)
    target.closers.append(api.close)
    if target.failure is None:
        try:
            cookie = token_api_log_in(f"http://127.0.0.1:{port}", api.username, api.password)
        except (OSError, ValueError) as exc:
            target.failure = f"login failed: {exc}"
            return target
        target.headers = [CSRF_HEADER, ("Cookie", cookie)]
        wait_ready(target)
    return target


def token_api_log_in(base: str, username: str, password: str) -> str:
    """`POST /bff/login` with the credentials as JSON, as an SPA sends them; the `Cookie` header
    value of the new session."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    body = json.dumps({"username": username, "password": password})
    try:
        connection.request(
            "POST", "/bff/login", body, {"Content-Type": "application/json", CSRF_HEADER[0]: CSRF_HEADER[1]}
        )
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        cookies = [
            value.partition(";")[0].strip() for name, value in response.getheaders() if name.lower() == "set-cookie"
        ]
    finally:
        connection.close()
    if response.status != 200 or not cookies:
        raise ValueError(f"POST /bff/login answered {response.status}: {text[:200]}")
    return "; ".join(cookies)


def start_minimal(workdir: Path, env: dict[str, str], cpus: set[int], upstream_port: int) -> Target:
    port = free_port()
    target = Target("minimal", f"http://127.0.0.1:{port}{REQUEST_PATH}", log=workdir / "minimal.log")
    argv = [
        sys.executable,
        str(BENCH_DIR / "minimal_proxy.py"),
        "--port",
        str(port),
        "--upstream",
        f"http://127.0.0.1:{upstream_port}",
    ]
    assert target.log is not None
    target.process = spawn(argv, cpus=cpus, log=target.log, cwd=workdir, env=env)
    wait_ready(target)
    return target


@dataclass(frozen=True)
class Context:
    """What every set-up's start function gets."""

    workdir: Path
    env: dict[str, str]
    client_cpus: set[int]
    proxy_cpus: set[int]
    upstream_port: int


def _bff(ctx: Context) -> Target:
    port = free_port()
    return start_bff("bff", ctx.workdir, ctx.env, ctx.proxy_cpus, bff_settings(port, ctx.upstream_port), port)


def _logged_in(name: str, extra: dict[str, Any]) -> Callable[[Context], Target]:
    def start(ctx: Context) -> Target:
        return start_bff_logged_in(
            name, ctx.workdir, ctx.env, ctx.client_cpus, ctx.proxy_cpus, ctx.upstream_port, extra
        )

    return start


STARTERS: dict[str, Callable[[Context], Target]] = {  # every set-up but `upstream`, in table order
    "caddy": lambda ctx: start_caddy(ctx.workdir, ctx.env, ctx.proxy_cpus, ctx.upstream_port),
    "bff": _bff,
    "bff-user": _logged_in("bff-user", {}),
    "bff-cookie": _logged_in("bff-cookie", {"token_storage": "cookie"}),
    "bff-tokenapi": start_bff_token_api,
    "minimal": lambda ctx: start_minimal(ctx.workdir, ctx.env, ctx.proxy_cpus, ctx.upstream_port),
}
SETUPS = ("upstream", *STARTERS)  # in table order


# --- profile -----------------------------------------------------------------------------------


def profile(target: Target, concurrency: int, duration: int, cpus: set[int], out: Path) -> str:
    """Sample the target with py-spy while wrk drives it; return the top functions as text."""
    if shutil.which("py-spy") is None:
        return "profile: py-spy is not installed (pip install py-spy)"
    assert target.process is not None
    wrk = subprocess.Popen(
        [*wrk_argv(target, concurrency, duration + 2), target.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pinned(cpus),
    )
    try:
        time.sleep(1)
        argv = ["py-spy", "record", "--pid", str(target.process.pid), "--duration", str(duration), "--rate", "250"]
        argv += ["--format", "raw", "--function", "--nonblocking", "--output", str(out)]
        spy = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=duration + 60,
            preexec_fn=pinned(cpus),
            check=False,
        )
    finally:
        wrk.wait(timeout=duration + 60)
    if spy.returncode != 0 or not out.exists():
        return f"profile: py-spy failed ({spy.returncode}): {spy.stderr.strip()[-500:]}"
    return summarise_profile(out.read_text(encoding="utf-8"), target.name, concurrency)


def summarise_profile(raw: str, name: str, concurrency: int, top: int = 25) -> str:
    """Self and inclusive share of the sampled time per function, from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return f"profile of {name}: no samples"
    lines = [f"profile of {name} at c={concurrency} (py-spy, {total} samples of busy time; self / inclusive %)"]
    lines.append(f"{'self %':>7}  function (file:line)")
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{100 * count / total:>7.1f}  {frame}")
    lines.append(f"{'incl %':>7}  function (file:line)")
    for frame, count in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{100 * count / total:>7.1f}  {frame}")
    return "\n".join(lines)


# --- machine -----------------------------------------------------------------------------------


def command_version(argv: Sequence[str]) -> str:
    try:
        completed = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (completed.stdout or completed.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def git_state() -> tuple[str, bool]:
    """The checkout's short commit and whether bff/ differs from it (or says it is not a checkout)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        status = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "bff"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout", False
    return head.stdout.strip(), bool(status.stdout.strip())


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit, dirty = git_state()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "caddy": command_version(["caddy", "version"]).split()[0],
        "wrk": command_version(["wrk", "--version"]).split()[1] if shutil.which("wrk") else "not installed",
        "packages": {name: package_version(name) for name in ("uvicorn", "uvloop", "httptools", "aiohttp")},
        "git": commit + (" (bff/ modified)" if dirty else ""),
        "loadavg": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --- report ------------------------------------------------------------------------------------


def summarise(samples: Sequence[Sample]) -> list[Summary]:
    groups: dict[tuple[int, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.concurrency, sample.setup), []).append(sample)
    summaries = []
    for (concurrency, setup), group in sorted(groups.items(), key=lambda item: (item[0][0], SETUPS.index(item[0][1]))):
        rps = [s.rps for s in group]
        summaries.append(
            Summary(
                setup=setup,
                concurrency=concurrency,
                runs=len(group),
                rps=statistics.median(rps),
                rps_min=min(rps),
                rps_max=max(rps),
                p50_ms=statistics.median(s.p50_ms for s in group),
                p99_ms=statistics.median(s.p99_ms for s in group),
                cpu_us_per_request=statistics.median(s.cpu_us_per_request for s in group),
                cpu_percent=statistics.median(s.cpu_percent for s in group),
                errors=sum(s.errors for s in group),
                noise_percent=statistics.median(max(s.noise_proxy_percent, s.noise_client_percent) for s in group),
                disturbed=sum(s.disturbed for s in group),
            )
        )
    return summaries


def ratios(summaries: Sequence[Summary], reference: str = "caddy", subject: str = "bff") -> list[Ratio]:
    by_key = {(s.concurrency, s.setup): s for s in summaries}
    result = []
    for concurrency in sorted({s.concurrency for s in summaries}):
        bff, caddy = by_key.get((concurrency, subject)), by_key.get((concurrency, reference))
        if bff is None or caddy is None or caddy.rps == 0 or caddy.cpu_us_per_request == 0:
            continue
        rps_ratio = bff.rps / caddy.rps
        delta = bff.p99_ms - caddy.p99_ms
        result.append(
            Ratio(
                concurrency=concurrency,
                rps_ratio=rps_ratio,
                cpu_ratio=bff.cpu_us_per_request / caddy.cpu_us_per_request,
                p99_delta_ms=delta,
                rps_ok=rps_ratio >= TARGET_RATIO,
                p99_ok=delta <= P99_BUDGET_MS,
            )
        )
    return result


def render(
    machine: dict[str, Any],
    options: dict[str, Any],
    summaries: Sequence[Summary],
    ratio_rows: Sequence[Ratio],
    failures: dict[str, str],
    loads: Sequence[float] = (),
) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    width = max([10, *(len(s.setup) for s in summaries)])
    lines = [
        f"machine: {machine['nproc']} CPUs, {machine['cpu_model']}, Linux {machine['kernel']}, "
        f"load {machine['loadavg'][0]:.2f} at start"
        + (f", {min(loads):.2f}-{max(loads):.2f} during the runs" if loads else ""),
        f"software: Python {machine['python']}, caddy {machine['caddy']}, wrk {machine['wrk']}, {packages}",
        f"bff: git {machine['git']}; {machine['time']}",
        f"method: GET {REQUEST_PATH} -> {RESPONSE_SIZE} B; wrk -t1, {options['runs']} run(s) x {options['duration']} s "
        f"after {options['warmup']} s warm-up, medians, disturbed runs retried;",
        f"pinning: wrk + upstream on CPU {options['client_cpus']}, "
        f"process under test alone on CPU {options['proxy_cpus']}",
        "",
        f"{'conc':>4}  {'set-up':<{width}} {'req/s':>8} {'(min-max)':>15} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU us/req':>10} {'CPU %':>6} {'noise %':>7} {'errors':>6}",
    ]
    for s in summaries:
        spread = f"{s.rps_min:.0f}-{s.rps_max:.0f}"
        lines.append(
            f"{s.concurrency:>4}  {s.setup:<{width}} {s.rps:>8.0f} {spread:>15} {s.p50_ms:>7.2f} {s.p99_ms:>7.2f} "
            f"{s.cpu_us_per_request:>10.0f} {s.cpu_percent:>6.0f} {s.noise_percent:>7.0f} {s.errors:>6}"
        )
    if ratio_rows:
        lines += [
            "",
            f"BFF / Caddy (target: req/s >= {TARGET_RATIO} x Caddy, p99 <= Caddy p99 + {P99_BUDGET_MS:.0f} ms)",
            f"{'conc':>4}  {'req/s':>7} {'CPU us/req':>10} {'CPU-bound':>9} {'p99 delta ms':>12}  verdict",
        ]
        for r in ratio_rows:
            verdict = ", ".join(
                [
                    "req/s ok" if r.rps_ok else f"req/s BELOW {TARGET_RATIO}x",
                    "p99 ok" if r.p99_ok else "p99 OVER budget",
                ]
            )
            lines.append(
                f"{r.concurrency:>4}  {r.rps_ratio:>6.2f}x {r.cpu_ratio:>9.2f}x {1 / r.cpu_ratio:>8.2f}x "
                f"{r.p99_delta_ms:>+12.2f}  {verdict}"
            )
        lines.append(
            "CPU-bound = Caddy's CPU us/req / the BFF's: the req/s ratio if each saturated its core (noise-robust)"
        )
        disturbed = sum(s.disturbed for s in summaries)
        if disturbed:
            lines.append(
                f"WARNING: {disturbed} of {sum(s.runs for s in summaries)} runs stayed disturbed by other processes "
                f"after {options['attempts']} attempts (noise % over {NOISE_LIMIT_PROXY:.0f} on the proxy CPU or "
                f"{NOISE_LIMIT_CLIENT:.0f} on the client CPU): req/s and p99 are distorted, trust CPU us/req and "
                "the CPU-bound ratio more"
            )
    user_rows = ratios(summaries, subject="bff-user")
    if user_rows:
        by_key = {(s.concurrency, s.setup): s for s in summaries}
        lines += [
            "",
            'BFF with token = "user" (logged-in session) / Caddy; "+us" is the token path\'s extra CPU per request',
        ]
        lines.append(f"{'conc':>4}  {'req/s':>7} {'CPU us/req':>10} {'CPU-bound':>9} {'p99 delta ms':>12} {'+us':>6}")
        for r in user_rows:
            user, plain = by_key[(r.concurrency, "bff-user")], by_key.get((r.concurrency, "bff"))
            extra = f"{user.cpu_us_per_request - plain.cpu_us_per_request:>+6.0f}" if plain else f"{'-':>6}"
            lines.append(
                f"{r.concurrency:>4}  {r.rps_ratio:>6.2f}x {r.cpu_ratio:>9.2f}x {1 / r.cpu_ratio:>8.2f}x "
                f"{r.p99_delta_ms:>+12.2f} {extra}"
            )
    cookie_rows = ratios(summaries, reference="bff-user", subject="bff-cookie")
    if cookie_rows:
        lines += [
            "",
            f'Cookie mode (token_storage = "cookie") / server mode, token = "user" '
            f"(target: CPU us/req <= {COOKIE_CPU_BUDGET:.2f}x server mode's)",
        ]
        lines.append(f"{'conc':>4}  {'req/s':>7} {'CPU us/req':>10} {'p99 delta ms':>12}  verdict")
        for r in cookie_rows:
            verdict = "ok" if r.cpu_ratio <= COOKIE_CPU_BUDGET else f"OVER {COOKIE_CPU_BUDGET:.2f}x"
            lines.append(
                f"{r.concurrency:>4}  {r.rps_ratio:>6.2f}x {r.cpu_ratio:>9.2f}x {r.p99_delta_ms:>+12.2f}  {verdict}"
            )
    token_api_rows = ratios(summaries, reference="bff-user", subject="bff-tokenapi")
    if token_api_rows:
        lines += ["", 'Token-API mode ([token_api], POST /bff/login) / OIDC login, both token = "user", server mode']
        lines.append(f"{'conc':>4}  {'req/s':>7} {'CPU us/req':>10} {'p99 delta ms':>12}")
        for r in token_api_rows:
            lines.append(f"{r.concurrency:>4}  {r.rps_ratio:>6.2f}x {r.cpu_ratio:>9.2f}x {r.p99_delta_ms:>+12.2f}")
    minimal_rows = ratios(summaries, reference="minimal")
    if minimal_rows:
        lines += ["", "BFF / minimal raw-ASGI aiohttp proxy (the stack's ceiling; the rest is the BFF's own work)"]
        lines.append(f"{'conc':>4}  {'req/s':>7} {'CPU us/req':>10} {'p99 delta ms':>12}")
        for r in minimal_rows:
            lines.append(f"{r.concurrency:>4}  {r.rps_ratio:>6.2f}x {r.cpu_ratio:>9.2f}x {r.p99_delta_ms:>+12.2f}")
    for name, reason in failures.items():
        lines += ["", f"{name}: NOT MEASURED: {reason}"]
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 run of 2 s after 1 s warm-up, no retries (smoke test)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 5, --quick 2)")
    parser.add_argument("--runs", type=int, help="runs per set-up and concurrency; medians are reported (default 3)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per set-up and concurrency (default 2)")
    parser.add_argument(
        "--concurrency", default="8,32", help="comma-separated wrk connection counts (default 8,32; --quick 8)"
    )
    parser.add_argument(
        "--setups",
        default=",".join(DEFAULT_SETUPS),
        help=f"comma-separated subset of {','.join(SETUPS)} (default {','.join(DEFAULT_SETUPS)})",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (configs and logs)")
    parser.add_argument(
        "--attempts",
        type=int,
        help="tries per run when other processes disturb it; the least disturbed is kept (default 3, --quick 1)",
    )
    parser.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="SETUP",
        help="after the runs, sample SETUP (bff, bff-cookie, ...) with py-spy at the highest concurrency; repeatable",
    )
    args = parser.parse_args(argv)
    if args.quick and args.concurrency == "8,32":
        args.concurrency = "8"
    args.duration = args.duration or (2 if args.quick else 5)
    args.runs = args.runs or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.attempts = args.attempts or (1 if args.quick else 3)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = set(args.setups) - set(SETUPS)
    if unknown:
        parser.error(f"--setups: unknown {', '.join(sorted(unknown))} (choose from {', '.join(SETUPS)})")
    if "upstream" not in args.setups:
        args.setups.insert(0, "upstream")  # every other set-up needs it running
    if args.duration < 1 or args.runs < 1 or not args.concurrency:
        parser.error("--duration, --runs and --concurrency must be positive")
    return args


def cpu_split() -> tuple[set[int], set[int]]:
    """(client CPUs, proxy CPUs): wrk and upstream on the first, the proxy alone on the second."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        print("bench: only one CPU available: no pinning, numbers are not comparable", file=sys.stderr)
        return set(available), set(available)
    return {available[0]}, {available[1]}


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bff-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"bench: working directory kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ["wrk"] + (["caddy"] if "caddy" in args.setups else []):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is not installed (Debian: apt-get install {tool})", file=sys.stderr)
            return 2
    client_cpus, proxy_cpus = cpu_split()
    os.sched_setaffinity(0, client_cpus)  # the harness itself stays off the proxy's CPU
    machine = machine_info()
    options = {
        "duration": args.duration,
        "runs": args.runs,
        "warmup": args.warmup,
        "concurrency": args.concurrency,
        "setups": args.setups,
        "client_cpus": ",".join(map(str, sorted(client_cpus))),
        "proxy_cpus": ",".join(map(str, sorted(proxy_cpus))),
        "attempts": args.attempts,
    }
    print(
        f"bench: {len(args.setups)} set-ups x {len(args.concurrency)} concurrencies x {args.runs} runs "
        f"x {args.duration} s (+ warm-up)",
        file=sys.stderr,
        flush=True,
    )
    samples: list[Sample] = []
    failures: dict[str, str] = {}
    profiles: list[str] = []
    with workspace(args.keep) as workdir:
        env = child_env(workdir)
        targets: list[Target] = []
        try:
            upstream = start_upstream(workdir, env, client_cpus)
            targets.append(upstream)
            if upstream.failure is None:
                port = int(upstream.url.split(":")[2].split("/")[0])
                ctx = Context(workdir, env, client_cpus, proxy_cpus, port)
                targets += [start(ctx) for name, start in STARTERS.items() if name in args.setups]
            for target in targets:
                if target.failure is not None:
                    failures[target.name] = target.failure
                    log = tail(target.log)
                    print(f"bench: {target.name}: {target.failure}\n{log}", file=sys.stderr, flush=True)
            live = [t for t in targets if t.failure is None]
            if upstream.failure is None:
                samples = benchmark(live, upstream, args, client_cpus, proxy_cpus, failures)
            for target in live:
                if target.name in args.profile and target.name not in failures:
                    raw = args.json.parent / f"profile-{target.name}.txt"
                    raw.parent.mkdir(parents=True, exist_ok=True)
                    profiles.append(profile(target, max(args.concurrency), args.duration, client_cpus, raw))
        finally:
            for target in reversed(targets):
                stop_process(target.process)
                for helper in target.helpers:
                    stop_process(helper)
                for close in target.closers:
                    close()
    summaries = summarise(samples)
    ratio_rows = ratios(summaries)
    loads = [sample.loadavg_1m for sample in samples]
    print(render(machine, options, summaries, ratio_rows, failures, loads), flush=True)
    for text in profiles:
        print("\n" + text, flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "machine": machine,
                "options": options,
                "summary": [asdict(s) for s in summaries],
                "ratios": [asdict(r) for r in ratio_rows],
                "ratios_user": [asdict(r) for r in ratios(summaries, subject="bff-user")],
                "ratios_minimal": [asdict(r) for r in ratios(summaries, reference="minimal")],
                "ratios_cookie": [asdict(r) for r in ratios(summaries, reference="bff-user", subject="bff-cookie")],
                "ratios_tokenapi": [asdict(r) for r in ratios(summaries, reference="bff-user", subject="bff-tokenapi")],
                "samples": [asdict(s) for s in samples],
                "failures": failures,
                "profiles": profiles,
                "bff_response_headers": next((t.response_headers for t in targets if t.name == "bff"), []),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"\nresults: {args.json}", flush=True)
    return 0 if not failures and all(s.errors == 0 for s in summaries) else 1


def benchmark(
    targets: Sequence[Target],
    upstream: Target,
    args: argparse.Namespace,
    client_cpus: set[int],
    proxy_cpus: set[int],
    failures: dict[str, str],
) -> list[Sample]:
    samples: list[Sample] = []
    if args.warmup:
        for target in targets:
            for concurrency in args.concurrency:
                run_wrk(target, concurrency, args.warmup, client_cpus)
    for run in range(1, args.runs + 1):
        for concurrency in args.concurrency:
            for target in targets:
                if target.name in failures:
                    continue
                if target.process is not None and target.process.poll() is not None:
                    failures[target.name] = f"exited with status {target.process.returncode} during the run"
                    continue
                best: Sample | None = None
                for attempt in range(1, args.attempts + 1):
                    try:
                        sample = measure(
                            target, upstream, concurrency, args.duration, run, client_cpus, proxy_cpus, attempt
                        )
                    except (RuntimeError, subprocess.TimeoutExpired, psutil.Error) as exc:
                        failures[target.name] = f"run {run} at c={concurrency} failed: {exc}"
                        break
                    print(
                        f"bench: run {run} c={concurrency:<3} {target.name:<12} {sample.rps:>8.0f} req/s "
                        f"p99 {sample.p99_ms:7.2f} ms {sample.cpu_us_per_request:5.0f} us/req errors {sample.errors} "
                        f"noise {sample.noise_proxy_percent:3.0f}/{sample.noise_client_percent:3.0f} %"
                        + (" (disturbed)" if sample.disturbed else ""),
                        file=sys.stderr,
                        flush=True,
                    )
                    noise = sample.noise_proxy_percent + sample.noise_client_percent
                    if best is None or noise < best.noise_proxy_percent + best.noise_client_percent:
                        best = sample
                    if not sample.disturbed:
                        break
                if best is not None:
                    samples.append(best)
    return samples


if __name__ == "__main__":
    raise SystemExit(main())
