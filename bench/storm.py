"""A refresh storm: one command, one table.

    python -m bench.storm                   # 200 requests, 2 workers (about a minute: it waits for the token)
    python -m bench.storm --requests 20     # the smoke test

`bff serve --workers 2` (README's default configuration: the SQLite store, `refresh_skew` 30 s)
at the tests' real OpenID provider (bench/provider.py; panva's oidc-provider, on the client CPU)
with access tokens of `refresh_skew + 10 s`, a `token = "user"` route to bench/upstream.py. The
harness logs in once and waits until the session's access token has just expired (its
`accessTokenExpiresAt` from `GET /bff/user`); shortly before, it opens one connection per request
and sends `GET /healthz` on each (so no connect falls into the storm, and the keep-alive of 5 s
holds them open); at expiry + 0.1 s every connection sends `GET /api/items` with the session
cookie in the same loop iteration (bench/http_client.py). The new access token lives 10 s before
it is due in its turn: a request that loads the session later than that would rightly refresh
again.

Reported: the provider's successful refresh grants for the BFF's client during the storm
(target: exactly 1), the answers (target: all 200), the slowest and the median latency, and the
provider's own refresh latency: the median of `DIRECT_REFRESHES` refresh-token grants the harness
sends to the token endpoint after the storm (with the session's current refresh token, then each
rotated one); the BFF's `bff_refresh_seconds` (from `/metrics`) is shown too. Target: the slowest
request within the provider's refresh latency + 100 ms. JSON to bench/results/storm.json. Exit
status 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from bench.http_client import Connection, connect
from bench.machine import machine_info
from bench.processes import BENCH_DIR, REQUEST_PATH, Target, child_env, stop_targets
from bench.provider import start_provider
from bench.report import machine_lines
from bench.run import cpu_split, cpus_text, workspace, write_json
from bench.setups import Context, start_bff_at_provider, start_upstream
from bff.oidc_settings import OIDCSettings

if TYPE_CHECKING:
    from tests.support.oidc_provider import Client, OidcProvider

__all__ = ["BUDGET_MS", "Storm", "fire", "main", "parse_args", "render"]

BUDGET_MS = 100.0  # the slowest request may take this much longer than the provider's refresh
DIRECT_REFRESHES = 5
DEFAULT_JSON = BENCH_DIR / "results" / "storm.json"
WARM_BEFORE = 2.0  # seconds before expiry the connections are opened (uvicorn keeps them 5 s)
FIRE_AFTER = 0.1  # seconds after expiry the storm starts


@dataclass
class Storm:
    requests: int
    workers: int
    access_ttl: int
    refreshes: int  # successful refresh grants of the BFF's client during the storm
    answered: int  # 200 answers
    statuses: dict[str, int]  # status (or the error's name) -> count
    slowest_ms: float
    median_ms: float
    fired_after_expiry_ms: float
    provider_refresh_ms: float  # median of the direct grants
    bff_refresh_ms: float | None  # bff_refresh_seconds' mean over the storm's refreshes
    metrics: dict[str, float]  # the BFF's refresh counters after the storm
    control_slowest_ms: float | None  # --control: the same burst while the token was fresh (no refresh)
    control_median_ms: float | None

    @property
    def refresh_ok(self) -> bool:
        return self.refreshes == 1

    @property
    def answered_ok(self) -> bool:
        return self.answered == self.requests

    @property
    def latency_ok(self) -> bool:
        return self.slowest_ms <= self.provider_refresh_ms + BUDGET_MS

    @property
    def verdict(self) -> str:
        return ", ".join(
            [
                "refresh ok" if self.refresh_ok else f"{self.refreshes} REFRESHES",
                "answers ok" if self.answered_ok else "NOT ALL ANSWERED",
                "latency ok" if self.latency_ok else "latency OVER budget",
            ]
        )


async def fire(base: str, headers: Sequence[tuple[str, str]], count: int, at: float) -> list[str | float]:
    """Open `count` connections (each warmed with `GET /healthz`), wait until the wall clock reads
    `at`, send `GET REQUEST_PATH` on all of them at once; per request its latency in seconds, or,
    for one not answered 200, the status or error."""
    host, _, port = base.removeprefix("http://").partition(":")
    connections: list[Connection] = list(await asyncio.gather(*(connect(host, int(port)) for _ in range(count))))
    warm = await asyncio.gather(*(c.send("GET", "/healthz") for c in connections))
    if any(response.status != 200 for response in warm):
        raise RuntimeError(f"GET /healthz answered {sorted({r.status for r in warm})}")
    await asyncio.sleep(max(0.0, at - time.time()))
    answers = await asyncio.gather(*(c.send("GET", REQUEST_PATH, headers) for c in connections), return_exceptions=True)
    for connection in connections:
        connection.close()
    return [
        type(a).__name__ if isinstance(a, BaseException) else a.seconds if a.status == 200 else str(a.status)
        for a in answers
    ]


def direct_refresh_ms(provider: OidcProvider, client: Client) -> list[float]:
    """Refresh-token grants at the provider's token endpoint, as the BFF sends them (client_secret_basic),
    starting with the session's current refresh token; each one's wall time in ms."""
    grants = provider.grants(client_id=client.client_id)
    current = [t for grant in grants for t in grant["refreshTokens"] if not t["consumed"]]
    token = max(current, key=lambda t: t["iat"])["value"]
    endpoint = provider.discovery()["token_endpoint"]
    times = []
    with httpx.Client(auth=(client.client_id, client.client_secret), timeout=10) as http:
        for _ in range(DIRECT_REFRESHES):
            start = time.perf_counter()
            response = http.post(endpoint, data={"grant_type": "refresh_token", "refresh_token": token})
            times.append(1000 * (time.perf_counter() - start))
            token = response.raise_for_status().json().get("refresh_token", token)
    return times


def bff_metrics(base: str) -> dict[str, float]:
    """The BFF's refresh figures from `/metrics` (summed over the workers)."""
    text = httpx.get(f"{base}/metrics", timeout=10).raise_for_status().text
    wanted = (
        "bff_refresh_seconds_sum",
        "bff_refresh_seconds_count",
        "bff_token_refreshes_total",
        "bff_refresh_waits_total",
    )
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                key = sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sample.labels.items()))
                figures[key] = figures.get(key, 0.0) + sample.value
    return figures


def storm(args: argparse.Namespace, ctx: Context, provider: OidcProvider) -> Storm | str:
    """The BFF at `provider`, logged in; the storm once its token expired; the figures, or why not."""
    target, client = start_bff_at_provider(ctx, "bff", provider, dpop=False, workers=args.workers)
    try:
        if target.failure is not None or client is None:
            return f"the BFF did not come up: {target.failure}"
        base = target.url.removesuffix(REQUEST_PATH)
        user = httpx.get(f"{base}/bff/user", headers=target.headers, timeout=10).raise_for_status().json()
        expires_at = float(user["accessTokenExpiresAt"])
        control = uvloop.run(fire(base, target.headers, args.requests, time.time())) if args.control else []
        if control and (provider.refresh_count(client.client_id) or not all(isinstance(o, float) for o in control)):
            return f"the control burst, with a fresh token, refreshed or failed: {sorted(map(str, control))[:5]}"
        time.sleep(max(0.0, expires_at - WARM_BEFORE - time.time()))
        before = provider.refresh_count(client.client_id)
        outcomes = uvloop.run(fire(base, target.headers, args.requests, expires_at + FIRE_AFTER))
        refreshes = provider.refresh_count(client.client_id) - before
        metrics = bff_metrics(base)
        direct = direct_refresh_ms(provider, client)
    finally:
        stop_targets([target])
    latencies = [1000 * o for o in outcomes if isinstance(o, float)]
    statuses: dict[str, int] = {}
    for outcome in outcomes:
        key = "200" if isinstance(outcome, float) else outcome
        statuses[key] = statuses.get(key, 0) + 1
    count = metrics.get("bff_refresh_seconds_count", 0.0)
    c = [o for o in control if isinstance(o, float)]
    return Storm(
        args.requests,
        args.workers,
        args.access_ttl,
        refreshes,
        len(latencies),
        statuses,
        max(latencies, default=float("inf")),
        statistics.median(latencies) if latencies else float("inf"),
        1000 * FIRE_AFTER,
        statistics.median(direct),
        1000 * metrics["bff_refresh_seconds_sum"] / count if count else None,
        metrics,
        1000 * max(c, default=0.0) if control else None,
        1000 * statistics.median(c) if control else None,
    )


def render(header: Sequence[str], result: Storm) -> str:
    bff_ms = f"{result.bff_refresh_ms:.1f}" if result.bff_refresh_ms is not None else "-"
    return "\n".join(
        [
            *header,
            "",
            f"{'requests':>8} {'workers':>7} {'refreshes':>9} {'answered':>9} {'slowest ms':>10} {'p50 ms':>7} "
            f"{'provider refresh ms':>19} {'bff refresh ms':>14}  verdict",
            f"{result.requests:>8} {result.workers:>7} {result.refreshes:>9} "
            f"{f'{result.answered}/{result.requests}':>9} {result.slowest_ms:>10.1f} {result.median_ms:>7.1f} "
            f"{result.provider_refresh_ms:>19.1f} {bff_ms:>14}  {result.verdict}",
            *(
                [
                    f"control: the same burst before the token was due (no refresh): slowest "
                    f"{result.control_slowest_ms:.1f} ms, p50 {result.control_median_ms or 0:.1f} ms"
                ]
                if result.control_slowest_ms is not None
                else []
            ),
            "",
            f"target: exactly 1 refresh at the provider, every request answered 200, the slowest within the "
            f"provider's refresh latency + {BUDGET_MS:.0f} ms",
            f"statuses: {', '.join(f'{k}: {v}' for k, v in sorted(result.statuses.items()))}; "
            f"BFF metrics: {', '.join(f'{k} {v:g}' for k, v in sorted(result.metrics.items()))}",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    skew = int(OIDCSettings.refresh_skew)
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="concurrent requests, one connection each (200)")
    parser.add_argument("--workers", type=int, default=2, help="bff serve --workers (default 2)")
    parser.add_argument(
        "--access-ttl",
        type=int,
        default=skew + 10,
        help=f"access-token lifetime, s (default {skew + 10}: > refresh_skew)",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="first the same burst while the token is fresh (no refresh), for comparison",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (configs and logs)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.workers < 1 or args.access_ttl <= skew:
        parser.error(f"--requests and --workers must be positive, --access-ttl over refresh_skew ({skew} s)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    client_cpus, proxy_cpus = cpu_split()
    os.sched_setaffinity(0, client_cpus)  # the client stays off the BFF's CPU
    machine = machine_info()
    with workspace(keep=args.keep) as workdir:
        env = child_env(workdir)
        upstream = start_upstream(workdir, env, client_cpus)
        targets: list[Target] = [upstream]
        try:
            provider = start_provider(workdir / "provider", client_cpus, dpop=False, access_ttl=args.access_ttl)
            if isinstance(provider, str) or upstream.failure is not None:
                result: Storm | str = provider if isinstance(provider, str) else f"upstream: {upstream.failure}"
            else:
                target = Target("provider", provider.issuer, closers=[provider.close])
                targets.append(target)
                ctx = Context(workdir, env, client_cpus, proxy_cpus, upstream.port)
                result = storm(args, ctx, provider)
        finally:
            stop_targets(targets)
    if isinstance(result, str):
        print(f"bench.storm: NOT MEASURED: {result}", file=sys.stderr)
        return 1
    method = (
        f"method: {args.requests} concurrent GET {REQUEST_PATH}, one connection each, {FIRE_AFTER * 1000:.0f} ms "
        f"after the access token expired; bff serve --workers {args.workers} on CPU {cpus_text(proxy_cpus)}, "
        f"client, upstream and provider on CPU {cpus_text(client_cpus)}"
    )
    print(render([*machine_lines(machine, [os.getloadavg()[0]]), method], result), flush=True)
    options = {
        "requests": args.requests,
        "workers": args.workers,
        "access_ttl": args.access_ttl,
        "control": args.control,
    }
    write_json(args.json, {"machine": machine, "options": options, "result": asdict(result), "verdict": result.verdict})
    print(f"\nresults: {args.json}", flush=True)
    return 0 if result.refresh_ok and result.answered_ok and result.latency_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
