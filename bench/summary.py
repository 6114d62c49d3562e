"""The figures of a run: the samples' medians per set-up and concurrency (`summarise`) and one
set-up against another (`ratios`, with the pass-through's target against Caddy).

The samples come from bench/measure.py; the tables, bench/report.py's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.measure import Sample
from bench.table import SETUPS

__all__ = ["P99_BUDGET_MS", "TARGET_RATIO", "Ratio", "Summary", "paired_extra", "ratios", "summarise"]

TARGET_RATIO = 0.4  # the BFF's req/s must be at least this fraction of Caddy's
P99_BUDGET_MS = 3.0  # the BFF's p99 may exceed Caddy's by at most this much


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


def paired_extra(samples: Sequence[Sample], subject: str, reference: str) -> dict[int, float]:
    """By concurrency, the median over runs of `subject`'s CPU µs per request minus `reference`'s
    in the same run: steadier than the difference of the two medians when both are one process
    measured back to back (`bench/table.py`'s views), since a slow minute moves both."""
    cpu = {(s.setup, s.concurrency, s.run): s.cpu_us_per_request for s in samples}
    differences: dict[int, list[float]] = {}
    for (setup, concurrency, run), value in cpu.items():
        base = cpu.get((reference, concurrency, run))
        if setup == subject and base is not None:
            differences.setdefault(concurrency, []).append(value - base)
    return {concurrency: statistics.median(values) for concurrency, values in sorted(differences.items())}
