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
`POST /bff/login` at the flask-jwt-extended API of tests/token_apis/, README's `[token_api]`),
`bff-oidc` and `bff-dpop` (the route with a session at the tests' real OpenID provider, Bearer
and with `oidc.dpop = true`: a DPoP proof per request), `bff-redis` and `bff-oidc-cookie` (the
same with the Redis store and in cookie mode), `peer` and `peer-sniffio` (axmp-oidc-bff-provider
from PyPI, bench/peer.py) and `minimal` (bench/minimal_proxy.py, a bare uvicorn + aiohttp proxy).

wrk and the upstream share CPU 0; the process under test (Caddy or the BFF) runs alone on CPU 1.
For each measurement the harness reads the CPU time of the process under test (user + system,
psutil) before and after wrk and divides by the requests served: CPU µs per request, the
steadiest figure on a noisy machine. Runs are interleaved (run 1 of every set-up, then run 2
backwards, ...) so that a burst of noise does not land on one set-up only; the table shows medians.

Results go to stdout and, as JSON, to bench/results/latest.json (git-ignored).
Exit status: 0 when every set-up ran without errors, 1 otherwise (the table is printed anyway).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.machine import machine_info
from bench.measure import Sample, benchmark
from bench.processes import BENCH_DIR, Target, child_env, stop_targets, tail, view
from bench.profiling import profile
from bench.report import AUTH_REFERENCE, COMPARISONS, render
from bench.setups import Context, start_upstream
from bench.summary import Summary, paired_extra, ratios, summarise
from bench.table import DEFAULT_SETUPS, SETUPS, STARTERS, VIEWS

__all__ = [
    "DEFAULT_JSON",
    "Outcome",
    "cpu_split",
    "main",
    "parse_args",
    "run_setups",
    "with_views",
    "workspace",
    "write_json",
    "write_results",
]

DEFAULT_JSON = BENCH_DIR / "results" / "latest.json"


@dataclass
class Outcome:
    """What the set-ups left behind once they are stopped."""

    samples: list[Sample] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)  # set-up -> why it was not (fully) measured
    profiles: list[str] = field(default_factory=list)
    bff_response_headers: list[tuple[str, str]] = field(default_factory=list)


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
    # None is "not given": an explicit 0 must reach the check below, not mean the default.
    args.duration = args.duration if args.duration is not None else (2 if args.quick else 5)
    args.runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.attempts = args.attempts if args.attempts is not None else (1 if args.quick else 3)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = set(args.setups) - set(SETUPS)
    if unknown:
        parser.error(f"--setups: unknown {', '.join(sorted(unknown))} (choose from {', '.join(SETUPS)})")
    for name, (base, _) in VIEWS.items():
        if name in args.setups and base not in args.setups:
            args.setups.insert(args.setups.index(name), base)  # measured in that set-up's process
    if "upstream" not in args.setups:
        args.setups.insert(0, "upstream")  # every other set-up needs it running
    if args.duration < 1 or args.runs < 1 or args.attempts < 1 or not args.concurrency:
        parser.error("--duration, --runs, --attempts and --concurrency must be positive")
    return args


def cpu_split() -> tuple[set[int], set[int]]:
    """(client CPUs, proxy CPUs): wrk and upstream on the first, the proxy alone on the second."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        print("bench: only one CPU available: no pinning, numbers are not comparable", file=sys.stderr)
        return set(available), set(available)
    return {available[0]}, {available[1]}


def cpus_text(cpus: set[int]) -> str:
    """`{0, 1}` as `0,1`, as the tables show it."""
    return ",".join(map(str, sorted(cpus)))


@contextlib.contextmanager
def workspace(*, keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bff-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"bench: working directory kept: {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def run_setups(args: argparse.Namespace, workdir: Path, client_cpus: set[int], proxy_cpus: set[int]) -> Outcome:
    """Start the upstream and the chosen set-ups, measure them, profile those asked for, and stop
    them all, whatever happened."""
    outcome = Outcome()
    env = child_env(workdir)
    targets: list[Target] = []
    try:
        upstream = start_upstream(workdir, env, client_cpus)
        targets.append(upstream)
        if upstream.failure is None:
            ctx = Context(workdir, env, client_cpus, proxy_cpus, upstream.port)
            targets += [start(ctx) for name, start in STARTERS.items() if name in args.setups]
            targets = with_views(targets, [name for name in VIEWS if name in args.setups])
        for target in targets:
            if target.failure is not None:
                outcome.failures[target.name] = target.failure
                log = tail(target.log)
                print(f"bench: {target.name}: {target.failure}\n{log}", file=sys.stderr, flush=True)
        live = [t for t in targets if t.failure is None]
        if upstream.failure is None:
            outcome.samples = benchmark(live, upstream, args, client_cpus, proxy_cpus, outcome.failures)
        for target in live:
            if target.name in args.profile and target.name not in outcome.failures:
                raw = args.json.parent / f"profile-{target.name}.txt"
                raw.parent.mkdir(parents=True, exist_ok=True)
                outcome.profiles.append(profile(target, max(args.concurrency), args.duration, client_cpus, raw))
    finally:
        stop_targets(targets)
    outcome.bff_response_headers = next((t.response_headers for t in targets if t.name == "bff"), [])
    return outcome


def with_views(targets: Sequence[Target], views: Sequence[str]) -> list[Target]:
    """`targets` with each of `views` right after the set-up whose process it measures (so their
    runs alternate), failed when that set-up failed."""
    result: list[Target] = []
    for target in targets:
        result.append(target)
        for name in views:
            base, path = VIEWS[name]
            if target.name == base:
                result.append(view(target, name, path))
    return result


def write_results(
    path: Path, machine: dict[str, Any], options: dict[str, Any], summaries: Sequence[Summary], outcome: Outcome
) -> None:
    """The results file: everything the table says, and every sample it was made from."""
    results: dict[str, Any] = {"machine": machine, "options": options, "summary": [asdict(s) for s in summaries]}
    for key, (reference, subject) in COMPARISONS.items():
        results[key] = [asdict(r) for r in ratios(summaries, reference, subject)]
    results["auth_extra_us"] = paired_extra(outcome.samples, "bff-oidc", AUTH_REFERENCE)
    results |= {
        "samples": [asdict(s) for s in outcome.samples],
        "failures": outcome.failures,
        "profiles": outcome.profiles,
        "bff_response_headers": outcome.bff_response_headers,
    }
    write_json(path, results)


def write_json(path: Path, results: dict[str, Any]) -> None:
    """A results file (bench/results/ by default, git-ignored), its directory made if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


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
        "client_cpus": cpus_text(client_cpus),
        "proxy_cpus": cpus_text(proxy_cpus),
        "attempts": args.attempts,
    }
    print(
        f"bench: {len(args.setups)} set-ups x {len(args.concurrency)} concurrencies x {args.runs} runs "
        f"x {args.duration} s (+ warm-up)",
        file=sys.stderr,
        flush=True,
    )
    with workspace(keep=args.keep) as workdir:
        outcome = run_setups(args, workdir, client_cpus, proxy_cpus)
    summaries = summarise(outcome.samples)
    loads = [sample.loadavg_1m for sample in outcome.samples]
    print(render(machine, options, summaries, ratios(summaries), outcome.failures, loads, outcome.samples), flush=True)
    for text in outcome.profiles:
        print("\n" + text, flush=True)
    write_results(args.json, machine, options, summaries, outcome)
    print(f"\nresults: {args.json}", flush=True)
    return 0 if not outcome.failures and all(s.errors == 0 for s in summaries) else 1


if __name__ == "__main__":
    raise SystemExit(main())
