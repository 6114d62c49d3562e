"""The table of bench/million.py: req/s at both sizes, their ratio and the fill's time against
the targets, and the sweep's p99 against the run without one."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

__all__ = ["FILL_BUDGET_S", "RPS_TARGET", "render"]

RPS_TARGET = 0.90  # req/s at the million / req/s at 1,000
FILL_BUDGET_S = 300.0


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(row[key] for row in rows))


def render(machine: dict[str, Any], args: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    lines = [
        f"machine: {machine['nproc']} CPUs, {machine['cpu_model']}, Linux {machine['kernel']}, "
        f"load {machine['loadavg'][0]:.2f} at start; bff: git {machine['git']}; {machine['time']}",
        f'method: GET /api/items (token = "user", bff-oidc\'s session), wrk -t1 -c{args.concurrency}, '
        f"{args.runs} run(s) x {args.duration} s, medians",
        "",
        f"{'store':<7} {'sessions':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} {'errors':>6}",
    ]
    for r in (r for r in results if "big" in r):
        for size, rows in ((args.baseline, r["small"]), (r["rows"], r["big"])):
            lines.append(
                f"{r['store']:<7} {size:>9} {_median(rows, 'rps'):>8.0f} {_median(rows, 'p50_ms'):>7.2f} "
                f"{_median(rows, 'p99_ms'):>7.2f} {_median(rows, 'cpu_us_per_request'):>10.0f} "
                f"{sum(row['errors'] for row in rows):>6}"
            )
    lines += ["", f"{'store':<7} {'req/s ratio':>11} {'CPU ratio':>9} {'fill s':>7} {'rows/s':>8}  verdict"]
    for r in (r for r in results if "big" in r):
        r["rps_ratio"] = _median(r["big"], "rps") / _median(r["small"], "rps")
        r["cpu_ratio"] = _median(r["big"], "cpu_us_per_request") / _median(r["small"], "cpu_us_per_request")
        filled = args.sessions - args.baseline
        verdicts = [
            "req/s ok" if r["rps_ratio"] >= RPS_TARGET else f"req/s BELOW {RPS_TARGET:.2f}x",
            "fill ok" if r["fill_seconds"] * args.sessions / filled < FILL_BUDGET_S else "fill OVER 5 min",
        ]
        lines.append(
            f"{r['store']:<7} {r['rps_ratio']:>10.2f}x {r['cpu_ratio']:>8.2f}x {r['fill_seconds']:>7.1f} "
            f"{filled / r['fill_seconds']:>8.0f}  {', '.join(verdicts)}"
        )
    lines += [
        "",
        f"sweep (wrk {args.sweep_duration} s, the write that starts the sweep 2 s in; sweep s: until the expired "
        "rows were gone; write s: how long that write took (SQLite: a login; Redis: the PEXPIREs))",
        f"{'store':<7} {'expired':>8} {'rows before':>11} {'after':>8} {'sweep s':>7} {'write s':>7} "
        f"{'p99 ms':>7} {'during':>7} {'max ms':>7} {'errors':>6}",
    ]
    for r in (r for r in results if r.get("sweep")):
        s = r["sweep"]
        lines.append(
            f"{r['store']:<7} {r['expired']:>8} {r['rows_before_sweep']:>11} {r['rows_after_sweep']:>8} "
            f"{r['sweep_seconds']:>7.1f} {r['trigger_seconds']:>7.1f} {_median(r['big'], 'p99_ms'):>7.2f} "
            f"{s['p99_ms']:>7.2f} {s['max_ms']:>7.1f} {s['errors']:>6}"
        )
    lines += [f"{r['store']}: the sweep's write failed: {r['trigger_error']}" for r in results if "trigger_error" in r]
    lines += [f"{r['store']}: NOT MEASURED: {r['failure']}" for r in results if "failure" in r]
    return "\n".join(lines)
