"""The table of bench/bodies.py: the transfers' medians per direction and set-up (`summarise`),
each BFF set-up against Caddy (`verdicts`: the issue's targets) and the text (`render`)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.bodies import Transfer

__all__ = [
    "DIRECTIONS",
    "RSS_BUDGET_MIB",
    "SETUPS",
    "SUBJECTS",
    "TARGET_RATIO",
    "Row",
    "render",
    "summarise",
    "verdicts",
]

SETUPS = ("upstream", "caddy", "bff", "bff-user", "caddy-auth")
# Measured against caddy; `caddy-auth` is Caddy carrying the bytes with one `forward_auth` call to
# the BFF per transfer (auth-request mode), beside the BFF carrying them itself.
SUBJECTS = ("bff", "bff-user", "caddy-auth")
DIRECTIONS = ("download", "upload")
TARGET_RATIO = 0.8  # the BFF's MB/s must be at least this fraction of Caddy's
RSS_BUDGET_MIB = 64.0  # and its RSS may grow by less than this during a transfer


@dataclass
class Row:
    direction: str
    setup: str
    runs: int
    mb_per_s: float
    mb_per_s_min: float
    mb_per_s_max: float
    cpu_percent: float
    cpu_seconds_per_gib: float
    rss_before_mib: float
    rss_growth_mib: float  # the largest of any run
    failed: int


def summarise(transfers: Sequence[Transfer]) -> list[Row]:
    rows = []
    for direction in DIRECTIONS:
        for setup in SETUPS:
            group = [t for t in transfers if (t.direction, t.setup) == (direction, setup)]
            good = [t for t in group if t.problem is None] or group
            if not group:
                continue
            speeds = [t.mb_per_s for t in good]
            rows.append(
                Row(
                    direction,
                    setup,
                    len(group),
                    statistics.median(speeds),
                    min(speeds),
                    max(speeds),
                    statistics.median(100 * t.cpu_seconds / t.seconds for t in good),
                    statistics.median(t.cpu_seconds * 1024**3 / t.size for t in good),
                    min(t.rss_before_mib for t in group),
                    max(t.rss_growth_mib for t in group),
                    sum(t.problem is not None for t in group),
                )
            )
    return rows


@dataclass
class Check:
    """One BFF set-up against Caddy in one direction: the figures the issue's targets are stated in."""

    direction: str
    setup: str
    mb_per_s_ratio: float
    cpu_ratio: float  # the BFF's CPU s/GiB over Caddy's
    rss_growth_mib: float
    speed_ok: bool
    memory_ok: bool

    @property
    def cpu_bound_ratio(self) -> float:
        """The MB/s ratio the two would reach if each saturated its core (noise-robust)."""
        return 1 / self.cpu_ratio if self.cpu_ratio else float("inf")

    @property
    def verdict(self) -> str:
        speed = "MB/s ok" if self.speed_ok else f"MB/s BELOW {TARGET_RATIO}x"
        return f"{speed}, {'RSS ok' if self.memory_ok else 'RSS OVER budget'}"


def verdicts(rows: Sequence[Row]) -> list[Check]:
    """Each BFF set-up against Caddy, per direction."""
    by_key = {(r.direction, r.setup): r for r in rows}
    result = []
    for direction in DIRECTIONS:
        caddy = by_key.get((direction, "caddy"))
        for subject in SUBJECTS:
            bff = by_key.get((direction, subject))
            if caddy is None or bff is None or caddy.mb_per_s == 0 or caddy.cpu_seconds_per_gib == 0:
                continue
            ratio = bff.mb_per_s / caddy.mb_per_s
            cpu = bff.cpu_seconds_per_gib / caddy.cpu_seconds_per_gib
            growth = bff.rss_growth_mib
            result.append(Check(direction, subject, ratio, cpu, growth, ratio >= TARGET_RATIO, growth < RSS_BUDGET_MIB))
    return result


def render(header: Sequence[str], rows: Sequence[Row], failures: dict[str, str]) -> str:
    lines = [*header, ""]
    lines.append(
        f"{'direction':<9} {'set-up':<10} {'MB/s':>7} {'(min-max)':>11} {'CPU %':>6} {'CPU s/GiB':>9} "
        f"{'RSS MiB':>8} {'growth':>7} {'failed':>6}"
    )
    for r in rows:
        spread = f"{r.mb_per_s_min:.0f}-{r.mb_per_s_max:.0f}"
        lines.append(
            f"{r.direction:<9} {r.setup:<10} {r.mb_per_s:>7.0f} {spread:>11} {r.cpu_percent:>6.0f} "
            f"{r.cpu_seconds_per_gib:>9.2f} {r.rss_before_mib:>8.1f} {r.rss_growth_mib:>+7.1f} {r.failed:>6}"
        )
    checks = verdicts(rows)
    if checks:
        lines += ["", f"BFF / Caddy (target: MB/s >= {TARGET_RATIO} x Caddy, RSS growth < {RSS_BUDGET_MIB:.0f} MiB)"]
        lines.append(
            f"{'direction':<9} {'set-up':<10} {'MB/s':>6} {'CPU s/GiB':>9} {'CPU-bound':>9} {'growth MiB':>10}  verdict"
        )
        lines += [
            f"{c.direction:<9} {c.setup:<10} {c.mb_per_s_ratio:>5.2f}x {c.cpu_ratio:>8.2f}x {c.cpu_bound_ratio:>8.2f}x "
            f"{c.rss_growth_mib:>+10.1f}  {c.verdict}"
            for c in checks
        ]
        lines.append(
            "CPU-bound = Caddy's CPU s/GiB / the BFF's: the MB/s ratio if each saturated its core (with Caddy "
            "under 90 % CPU, the client's core set Caddy's MB/s, and this is the figure to trust)"
        )
    lines += [f"\n{name}: NOT MEASURED: {reason}" for name, reason in failures.items()]
    return "\n".join(lines)
