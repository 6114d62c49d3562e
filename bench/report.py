"""The report: the table printed at the end (`render`), with a ratio table under it for each
pair that ran, and `COMPARISONS`, the pairs the results file holds.

The medians and ratios are bench/summary.py's; the machine's description, bench/machine.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.measure import NOISE_LIMIT_CLIENT, NOISE_LIMIT_PROXY, Sample
from bench.processes import REQUEST_PATH, RESPONSE_SIZE
from bench.summary import P99_BUDGET_MS, TARGET_RATIO, Ratio, Summary, paired_extra, ratios

__all__ = [
    "AUTH_REFERENCE",
    "COMPARISONS",
    "COOKIE_CPU_BUDGET",
    "MODES",
    "PEERS",
    "PEER_TARGET",
    "SERVER_MODE",
    "Column",
    "extra_cpu",
    "machine_lines",
    "render",
]

AUTH_TARGET_RATIO, AUTH_P99_BUDGET_MS, TOKEN_PATH_BUDGET_US = 0.6, 1.0, 10.0  # the default set-up's targets
AUTH_REFERENCE = "bff-oidc-none"  # bff-oidc's own token = "none" route (bench/table.py's VIEWS)
COOKIE_CPU_BUDGET = 1.10  # cookie mode's CPU per request may be at most this multiple of server mode's
# The results file's ratio lists: key -> (reference, subject).
COMPARISONS = {
    "ratios": ("caddy", "bff"),
    "ratios_user": ("caddy", "bff-user"),
    "ratios_minimal": ("minimal", "bff"),
    "ratios_cookie": ("bff-user", "bff-cookie"),
    "ratios_tokenapi": ("bff-user", "bff-tokenapi"),
    "ratios_dpop": ("bff-oidc", "bff-dpop"),
    "ratios_redis": ("bff-oidc", "bff-redis"),
    "ratios_oidc_cookie": ("bff-oidc", "bff-oidc-cookie"),
    "ratios_peer": ("peer", "bff-oidc"),
    "ratios_peer_sniffio": ("peer-sniffio", "bff-oidc"),
    "ratios_oidc": ("caddy", "bff-oidc"),
    "ratios_auth_edge": ("bff-oidc", "caddy-auth"),
}
SERVER_MODE = "bff-oidc"  # server mode on SQLite, the default store: what every mode is measured against
MODES = ("bff-oidc", "bff-redis", "bff-oidc-cookie")  # at the same provider, route and upstream
PEERS = ("peer", "peer-sniffio")  # axmp-oidc-bff-provider, as pip installs it and with sniffio
PEER_TARGET = 8.0  # the BFF's req/s must be at least this multiple of the peer's


@dataclass(frozen=True)
class Column:
    """One column of a ratio table: its heading and its cell, as wide as each other."""

    heading: str
    cell: Callable[[Ratio], str]


CONC = Column(f"{'conc':>4} ", lambda r: f"{r.concurrency:>4} ")  # two spaces after it, as in the main table
RPS = Column(f"{'req/s':>7}", lambda r: f"{r.rps_ratio:>6.2f}x")
CPU = Column(f"{'CPU us/req':>10}", lambda r: f"{r.cpu_ratio:>9.2f}x")
CPU_BOUND = Column(f"{'CPU-bound':>9}", lambda r: f"{1 / r.cpu_ratio:>8.2f}x")
P99 = Column(f"{'p99 delta ms':>12}", lambda r: f"{r.p99_delta_ms:>+12.2f}")


def verdict(cell: Callable[[Ratio], str]) -> Column:
    return Column(" verdict", lambda r: " " + cell(r))


def _ratio_table(title: str, rows: Sequence[Ratio], columns: Sequence[Column]) -> list[str]:
    """A blank line, the title, the headings and a line per row; nothing when there are no rows."""
    if not rows:
        return []
    lines = ["", title, " ".join(column.heading for column in columns)]
    return lines + [" ".join(column.cell(row) for column in columns) for row in rows]


def _caddy_verdict(r: Ratio) -> str:
    return ", ".join(
        [
            "req/s ok" if r.rps_ok else f"req/s BELOW {TARGET_RATIO}x",
            "p99 ok" if r.p99_ok else "p99 OVER budget",
        ]
    )


def _caddy_table(summaries: Sequence[Summary], rows: Sequence[Ratio], options: dict[str, Any]) -> list[str]:
    """The issue's target: the pass-through against Caddy, and how far to trust it."""
    title = f"BFF / Caddy (target: req/s >= {TARGET_RATIO} x Caddy, p99 <= Caddy p99 + {P99_BUDGET_MS:.0f} ms)"
    lines = _ratio_table(title, rows, [CONC, RPS, CPU, CPU_BOUND, P99, verdict(_caddy_verdict)])
    if not lines:
        return lines
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
    return lines


def extra_cpu(summaries: Sequence[Summary], subject: str, baseline: str) -> Column:
    """`+us`: the CPU µs per request `subject` spends over `baseline` at the row's concurrency."""
    by_key = {(s.concurrency, s.setup): s for s in summaries}

    def cell(r: Ratio) -> str:
        more, base = by_key[(r.concurrency, subject)], by_key.get((r.concurrency, baseline))
        return f"{more.cpu_us_per_request - base.cpu_us_per_request:>+6.0f}" if base else f"{'-':>6}"

    return Column(f"{'+us':>6}", cell)


def _user_table(summaries: Sequence[Summary]) -> list[str]:
    title = 'BFF with token = "user" (logged-in session) / Caddy; "+us" is the token path\'s extra CPU per request'
    columns = [CONC, RPS, CPU, CPU_BOUND, P99, extra_cpu(summaries, "bff-user", "bff")]
    return _ratio_table(title, ratios(summaries, *COMPARISONS["ratios_user"]), columns)


def _dpop_table(summaries: Sequence[Summary]) -> list[str]:
    title = (
        "DPoP (oidc.dpop = true: Authorization: DPoP and a fresh ES256 proof per request) / Bearer, both at "
        'oidc-provider; "+us" is what the proof costs per request'
    )
    columns = [CONC, RPS, CPU, P99, extra_cpu(summaries, "bff-dpop", "bff-oidc")]
    return _ratio_table(title, ratios(summaries, *COMPARISONS["ratios_dpop"]), columns)


def _oidc_table(summaries: Sequence[Summary], samples: Sequence[Sample]) -> list[str]:
    """Targets 1 and 2. The token path's cost is measured against `AUTH_REFERENCE` (the same
    worker's `token = "none"` route, run by run) when it ran, else against the `bff` row."""
    auth = paired_extra(samples, "bff-oidc", AUTH_REFERENCE)
    against = f"{AUTH_REFERENCE} in the same worker, paired runs" if auth else "bff, another process"
    title = (
        "The default set-up's authenticated GET (bff-oidc: README's minimal [oidc] at oidc-provider, SQLite, "
        f"access log) / Caddy (target: CPU-bound >= {AUTH_TARGET_RATIO}x, p99 <= Caddy's + {AUTH_P99_BUDGET_MS:.0f} "
        f'ms at c=8); "+us" over token = "none" ({against}; target <= {TOKEN_PATH_BUDGET_US:.0f})'
    )

    def cell(r: Ratio) -> str:
        fast = 1 / r.cpu_ratio >= AUTH_TARGET_RATIO
        p99 = r.p99_delta_ms <= AUTH_P99_BUDGET_MS or r.concurrency != 8
        extra = auth.get(r.concurrency)
        token_path = "" if extra is None else f", token path {'ok' if extra <= TOKEN_PATH_BUDGET_US else 'OVER'}"
        return f"CPU {'ok' if fast else 'BELOW'}{'' if p99 else ', p99 OVER'}{token_path}"

    if auth:
        extra = Column(
            f"{'+us':>6}", lambda r: f"{auth[r.concurrency]:>+6.1f}" if r.concurrency in auth else f"{'-':>6}"
        )
    else:
        extra = extra_cpu(summaries, "bff-oidc", "bff")
    columns = [CONC, RPS, CPU, CPU_BOUND, P99, extra, verdict(cell)]
    return _ratio_table(title, ratios(summaries, *COMPARISONS["ratios_oidc"]), columns)


def _cookie_verdict(r: Ratio) -> str:
    return "ok" if r.cpu_ratio <= COOKIE_CPU_BUDGET else f"OVER {COOKIE_CPU_BUDGET:.2f}x"


def _rps_verdict(r: Ratio) -> str:
    return "ok" if r.rps_ratio >= PEER_TARGET else f"BELOW {PEER_TARGET:.0f}x"


def _pairs_table(
    title: str,
    summaries: Sequence[Summary],
    pairs: Sequence[tuple[str, str]],
    columns: Sequence[Column],
    verdicts: dict[str, Callable[[Ratio], str]],
) -> list[str]:
    """A ratio table with a row per (subject, reference) pair and concurrency, led by the pair,
    ending in `+us` (the subject's CPU per request over the reference's) and a verdict (by the
    subject's or the reference's name in `verdicts`, "-" for the others)."""
    rows = [(subject, reference, r) for subject, reference in pairs for r in ratios(summaries, reference, subject)]
    if not rows:
        return []
    width = max(len(f"{subject} / {reference}") for subject, reference, _ in rows)
    headings = " ".join(c.heading for c in columns)
    lines = ["", title, f"{'set-up / reference':<{width}} {headings} {'+us':>6} verdict"]
    for subject, reference, r in rows:
        judge = verdicts.get(subject) or verdicts.get(reference) or (lambda _: "-")
        cells = " ".join(c.cell(r) for c in [*columns, extra_cpu(summaries, subject, reference)])
        lines.append(f"{f'{subject} / {reference}':<{width}} {cells} {judge(r)}")
    return lines


def _modes_table(summaries: Sequence[Summary]) -> list[str]:
    title = (
        f'Every mode / server mode on SQLite ({SERVER_MODE}), token = "user" at oidc-provider '
        f"(target: cookie mode's CPU us/req <= {COOKIE_CPU_BUDGET:.2f}x)"
    )
    pairs = [(mode, SERVER_MODE) for mode in MODES]
    return _pairs_table(title, summaries, pairs, [CONC, RPS, CPU, P99], {"bff-oidc-cookie": _cookie_verdict})


def _peer_table(summaries: Sequence[Summary]) -> list[str]:
    title = (
        "BFF / the peer (axmp-oidc-bff-provider 1.0.0: FastAPI + Authlib, Redis store), the same provider, "
        f"route and upstream (target: req/s >= {PEER_TARGET:.0f}x the peer's)"
    )
    pairs = [(bff, peer) for bff in MODES[:2] for peer in PEERS]
    return _pairs_table(title, summaries, pairs, [CONC, RPS, CPU, CPU_BOUND, P99], {SERVER_MODE: _rps_verdict})


def machine_lines(machine: dict[str, Any], loads: Sequence[float]) -> list[str]:
    """The first lines of every bench table: machine, software, commit and time."""
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    return [
        f"machine: {machine['nproc']} CPUs, {machine['cpu_model']}, Linux {machine['kernel']}, "
        f"load {machine['loadavg'][0]:.2f} at start"
        + (f", {min(loads):.2f}-{max(loads):.2f} during the runs" if loads else ""),
        f"software: Python {machine['python']}, caddy {machine['caddy']}, wrk {machine['wrk']}, {packages}",
        f"bff: git {machine['git']}; {machine['time']}",
    ]


def _header(machine: dict[str, Any], options: dict[str, Any], loads: Sequence[float]) -> list[str]:
    return [
        *machine_lines(machine, loads),
        f"method: GET {REQUEST_PATH} -> {RESPONSE_SIZE} B; wrk -t1, {options['runs']} run(s) x {options['duration']} s "
        f"after {options['warmup']} s warm-up, medians, disturbed runs retried;",
        f"pinning: wrk + upstream on CPU {options['client_cpus']}, "
        f"process under test alone on CPU {options['proxy_cpus']}",
    ]


def _summary_table(summaries: Sequence[Summary]) -> list[str]:
    width = max([10, *(len(s.setup) for s in summaries)])
    lines = [
        f"{'conc':>4}  {'set-up':<{width}} {'req/s':>8} {'(min-max)':>15} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU us/req':>10} {'CPU %':>6} {'noise %':>7} {'errors':>6}",
    ]
    for s in summaries:
        spread = f"{s.rps_min:.0f}-{s.rps_max:.0f}"
        lines.append(
            f"{s.concurrency:>4}  {s.setup:<{width}} {s.rps:>8.0f} {spread:>15} {s.p50_ms:>7.2f} {s.p99_ms:>7.2f} "
            f"{s.cpu_us_per_request:>10.0f} {s.cpu_percent:>6.0f} {s.noise_percent:>7.0f} {s.errors:>6}"
        )
    return lines


def render(
    machine: dict[str, Any],
    options: dict[str, Any],
    summaries: Sequence[Summary],
    ratio_rows: Sequence[Ratio],
    failures: dict[str, str],
    loads: Sequence[float] = (),
    samples: Sequence[Sample] = (),
) -> str:
    """The tables; `samples` (the runs themselves) give the run-paired figures."""
    cookie_title = (
        f'Cookie mode (token_storage = "cookie") / server mode, token = "user" '
        f"(target: CPU us/req <= {COOKIE_CPU_BUDGET:.2f}x server mode's)"
    )
    tokenapi_title = 'Token-API mode ([token_api], POST /bff/login) / OIDC login, both token = "user", server mode'
    minimal_title = "BFF / minimal raw-ASGI aiohttp proxy (the old stack's ceiling; CPU below 1x: the BFF costs less)"
    lines = [
        *_header(machine, options, loads),
        "",
        *_summary_table(summaries),
        *_caddy_table(summaries, ratio_rows, options),
        *_user_table(summaries),
        *_ratio_table(
            cookie_title,
            ratios(summaries, *COMPARISONS["ratios_cookie"]),
            [CONC, RPS, CPU, P99, verdict(_cookie_verdict)],
        ),
        *_ratio_table(tokenapi_title, ratios(summaries, *COMPARISONS["ratios_tokenapi"]), [CONC, RPS, CPU, P99]),
        *_dpop_table(summaries),
        *_oidc_table(summaries, samples),
        *_ratio_table(
            "Auth-request mode (Caddy forward_auth + the BFF's GET /bff/auth, CPU of both) / the BFF's proxy",
            ratios(summaries, *COMPARISONS["ratios_auth_edge"]),
            [CONC, RPS, CPU, P99],
        ),
        *_modes_table(summaries),
        *_peer_table(summaries),
        *_ratio_table(minimal_title, ratios(summaries, *COMPARISONS["ratios_minimal"]), [CONC, RPS, CPU, P99]),
    ]
    for name, reason in failures.items():
        lines += ["", f"{name}: NOT MEASURED: {reason}"]
    return "\n".join(lines)
