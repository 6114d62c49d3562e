"""Measurement: one wrk run against a target (`run_wrk`), the CPU time of the process under test
and of the other processes on both cores around it (`measure`), and the interleaved runs of every
set-up with the disturbed ones retried (`benchmark`).

Starting the targets is bench/setups.py's; what the samples add up to, bench/report.py's.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from bench.processes import BENCH_DIR, Target, process_tree_cpu, run_pinned, running, target_cpu

__all__ = [
    "NOISE_LIMIT_CLIENT",
    "NOISE_LIMIT_PROXY",
    "Sample",
    "benchmark",
    "core_busy",
    "least_disturbed",
    "measure",
    "own_cpu",
    "report_progress",
    "run_wrk",
    "wrk_argv",
]

# A run is "disturbed" when other processes took more than this share (%) of the proxy's CPU, or of
# the client CPU beyond wrk and the upstream; it is repeated (--attempts) and the least disturbed kept.
NOISE_LIMIT_PROXY = 10.0
NOISE_LIMIT_CLIENT = 25.0
WRK_ERRORS = ("connect", "read", "write", "status", "timeout")  # the error counters of bench/report.lua


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

    @property
    def noise(self) -> float:
        """Both noise figures together: of several attempts, the lowest is kept."""
        return self.noise_proxy_percent + self.noise_client_percent


def wrk_argv(target: Target, concurrency: int, duration: int) -> list[str]:
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "5s"]
    for name, value in target.headers:
        argv += ["-H", f"{name}: {value}"]
    return argv


def run_wrk(target: Target, concurrency: int, duration: int, cpus: set[int]) -> dict[str, int]:
    argv = [*wrk_argv(target, concurrency, duration), "-s", str(BENCH_DIR / "report.lua"), target.url]
    completed = run_pinned(argv, cpus, timeout=duration + 60)
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
    up = psutil.Process(running(upstream).pid)
    load = os.getloadavg()[0]
    pinned_apart = client_cpus != proxy_cpus
    client_before, proxy_before, own_before = core_busy(client_cpus), core_busy(proxy_cpus), own_cpu()
    cpu_before, up_before, wall_before = target_cpu(target), process_tree_cpu(up), time.monotonic()
    result = run_wrk(target, concurrency, duration, client_cpus)
    cpu_after, up_after, wall_after = target_cpu(target), process_tree_cpu(up), time.monotonic()
    client_after, proxy_after, own_after = core_busy(client_cpus), core_busy(proxy_cpus), own_cpu()
    wall = wall_after - wall_before
    tested = cpu_after - cpu_before if target is not upstream else 0.0
    foreign_proxy = (proxy_after - proxy_before) - tested
    foreign_client = (client_after - client_before) - (up_after - up_before) - (own_after - own_before)
    requests = max(result["requests"], 1)
    seconds = result["duration_us"] / 1e6
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
        errors=sum(result[key] for key in WRK_ERRORS),
        cpu_us_per_request=(cpu_after - cpu_before) * 1e6 / requests,
        cpu_percent=100 * (cpu_after - cpu_before) / (wall_after - wall_before),
        upstream_cpu_us_per_request=(up_after - up_before) * 1e6 / requests,
        loadavg_1m=load,
        noise_proxy_percent=max(0.0, 100 * foreign_proxy / wall) if pinned_apart and target is not upstream else 0.0,
        noise_client_percent=max(0.0, 100 * foreign_client / wall) if pinned_apart else 0.0,
        attempts=attempt,
    )


def report_progress(sample: Sample) -> None:
    """One line per attempt on stderr, while the runs go on."""
    print(
        f"bench: run {sample.run} c={sample.concurrency:<3} {sample.setup:<12} {sample.rps:>8.0f} req/s "
        f"p99 {sample.p99_ms:7.2f} ms {sample.cpu_us_per_request:5.0f} us/req errors {sample.errors} "
        f"noise {sample.noise_proxy_percent:3.0f}/{sample.noise_client_percent:3.0f} %"
        + (" (disturbed)" if sample.disturbed else ""),
        file=sys.stderr,
        flush=True,
    )


def least_disturbed(
    target: Target,
    upstream: Target,
    args: argparse.Namespace,
    concurrency: int,
    run: int,
    cpus: tuple[set[int], set[int]],
    failures: dict[str, str],
) -> Sample | None:
    """Up to `args.attempts` runs until one is not disturbed: the least disturbed of them, or None
    (the reason in `failures`) when wrk failed before any."""
    client_cpus, proxy_cpus = cpus
    best: Sample | None = None
    for attempt in range(1, args.attempts + 1):
        try:
            sample = measure(target, upstream, concurrency, args.duration, run, client_cpus, proxy_cpus, attempt)
        except (RuntimeError, subprocess.TimeoutExpired, psutil.Error) as exc:
            failures[target.name] = f"run {run} at c={concurrency} failed: {exc}"
            break
        report_progress(sample)
        if best is None or sample.noise < best.noise:
            best = sample
        if not sample.disturbed:
            break
    return best


def benchmark(
    targets: Sequence[Target],
    upstream: Target,
    args: argparse.Namespace,
    client_cpus: set[int],
    proxy_cpus: set[int],
    failures: dict[str, str],
) -> list[Sample]:
    """The warm-up, then the runs interleaved: run 1 of every concurrency and set-up, then run 2
    (in the reverse order), ...
    A target that failed or exited is left out of the later runs, its reason in `failures`."""
    samples: list[Sample] = []
    if args.warmup:
        for target in targets:
            for concurrency in args.concurrency:
                run_wrk(target, concurrency, args.warmup, client_cpus)
    for run in range(1, args.runs + 1):
        for concurrency in args.concurrency:
            # Every other run backwards: a set-up measured just after another (a view after its
            # set-up, bench/table.py) is not always the second, so the order cancels out.
            for target in targets if run % 2 else reversed(targets):
                if target.name in failures:
                    continue
                if target.process is not None and target.process.poll() is not None:
                    failures[target.name] = f"exited with status {target.process.returncode} during the run"
                    continue
                best = least_disturbed(target, upstream, args, concurrency, run, (client_cpus, proxy_cpus), failures)
                if best is not None:
                    samples.append(best)
    return samples
