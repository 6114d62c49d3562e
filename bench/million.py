"""A million sessions: the authenticated GET with 1,000 and with 1,000,000 sessions in the store,
SQLite and Redis, the time to create the million, and the expired-session sweep under load.

    python -m bench.million                       # 1,000,000 sessions, SQLite and Redis
    python -m bench.million --sessions 2000 --duration 1 --runs 1   # the smoke test

Per store: `bff serve` (one worker, the default config but for `session_store` with Redis) logged
in at the tests' oidc-provider as `bff-oidc` is (bench/setups.py), the store filled beside it with
sessions cloned from that real one (bench/session_fill.py), wrk on the real session's cookie.
The sweep: most filled sessions are made to expire, then wrk runs while the store deletes them
(SQLite: the BFF's own `_sweep`, run by the next write once its interval is over, here a second
login; Redis: its active expiry), and its p99 is set against the run without a sweep.

Results go to stdout and bench/results/million.json. Exit status 1 when a store could not be
measured or wrk saw errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import session_fill as fill
from bench.login import provider_log_in
from bench.machine import machine_info
from bench.measure import Sample, least_disturbed, measure, run_wrk
from bench.million_report import render
from bench.processes import BENCH_DIR, Target, child_env, start_redis, stop_targets
from bench.run import cpu_split, workspace
from bench.setups import Context, start_bff_provider, start_upstream
from bff.stores.common import SWEEP_INTERVAL

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.million", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1_000_000, help="sessions in the big store (default 1000000)")
    parser.add_argument("--baseline", type=int, default=1000, help="sessions in the small store (default 1000)")
    parser.add_argument("--stores", default="sqlite,redis", help="comma-separated: sqlite, redis (default both)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--runs", type=int, default=3, help="wrk runs per size; medians (default 3)")
    parser.add_argument("--attempts", type=int, default=2, help="tries per disturbed run (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--expire", type=float, default=0.9, help="share of the sessions the sweep deletes (0.9)")
    parser.add_argument("--sweep-duration", type=int, default=30, help="seconds of the wrk run the sweep falls into")
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results" / "million.json")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if set(args.stores) - {"sqlite", "redis"} or not args.stores:
        parser.error("--stores: sqlite and/or redis")
    if not 1 <= args.baseline < args.sessions:
        parser.error("--baseline must be at least 1 and below --sessions")
    return args


class StoreRun:
    """One store's measurements, each a step of `run_store`."""

    def __init__(self, store: str, args: argparse.Namespace, ctx: Context, upstream: Target) -> None:
        self.store, self.args, self.ctx, self.upstream = store, args, ctx, upstream
        self.result: dict[str, Any] = {"store": store}
        self.targets: list[Target] = []
        self.redis_url = ""

    def wrk_runs(self, target: Target, sessions: int) -> list[Sample]:
        run_wrk(target, self.args.concurrency, 1, self.ctx.client_cpus)  # warm-up (the caches after a fill)
        failures: dict[str, str] = {}
        cpus = (self.ctx.client_cpus, self.ctx.proxy_cpus)
        samples = []
        for run in range(1, self.args.runs + 1):
            sample = least_disturbed(target, self.upstream, self.args, self.args.concurrency, run, cpus, failures)
            if sample is not None:
                samples.append(sample)
        if failures or not samples:
            raise RuntimeError(f"wrk at {sessions} sessions: {failures or 'no sample'}")
        return samples

    def fill(self, rows: Iterator[list[fill.Record]], db: Path) -> list[str]:
        if self.store == "sqlite":
            return fill.fill_sqlite(db, rows)
        return fill.fill_redis(self.redis_url, rows)

    def count(self, db: Path) -> int:
        return fill.sqlite_count(db) if self.store == "sqlite" else fill.redis_count(self.redis_url)

    def run(self) -> dict[str, Any]:
        name = f"million-{self.store}"
        extra: dict[str, Any] = {}  # the default store (SQLite), or the Redis started here

        def configure(settings: dict[str, Any]) -> None:
            settings.update(extra)

        if self.store == "redis":
            redis_target = start_redis(self.ctx.workdir / "redis", self.ctx.client_cpus, self.ctx.env)
            self.targets.append(redis_target)
            if redis_target.failure:
                raise RuntimeError(redis_target.failure)
            self.redis_url = redis_target.url
            extra["session_store"] = redis_target.url
        target = start_bff_provider(self.ctx, name, dpop=False, configure=configure)
        started = time.monotonic()  # the store swept at its start: the next sweep is due SWEEP_INTERVAL on
        self.targets.append(target)
        if target.failure:
            raise RuntimeError(target.failure)
        cookie = dict(target.headers)["Cookie"]
        base = target.url.split("/api/")[0]
        db = self.ctx.workdir / name / ".bff" / "sessions.db"
        settings, template = fill.real_session(self.ctx.workdir / f"{name}.toml", cookie, self.real_record(db, cookie))
        keys = self.fill(fill.records(template, settings, self.args.baseline - 1), db)
        small = self.wrk_runs(target, self.args.baseline)
        fill_started = time.monotonic()
        keys += self.fill(fill.records(template, settings, self.args.sessions - self.args.baseline, len(keys)), db)
        self.result["fill_seconds"] = time.monotonic() - fill_started
        self.result["rows"] = self.count(db)
        big = self.wrk_runs(target, self.args.sessions)
        self.result |= {"small": [asdict(s) for s in small], "big": [asdict(s) for s in big]}
        self.sweep(target, keys[: int(len(keys) * self.args.expire)], db, started, base)
        return self.result

    def real_record(self, db: Path, cookie: str) -> bytes:
        """The logged-in session's record (the only one in the store yet)."""
        if self.store == "sqlite":
            with sqlite3.connect(db) as conn:
                rows = conn.execute("SELECT value FROM entries WHERE sub IS NOT NULL").fetchall()
        else:
            client = redis.Redis.from_url(self.redis_url)
            found = [client.hmget(key, ["v", "sub"]) for key in client.keys(f"{fill.REDIS_PREFIX}r:*")]
            rows = [(value,) for value, sub in found if sub is not None]  # not the login's one-time markers
            client.close()
        if len(rows) != 1:
            raise RuntimeError(f"expected the one logged-in session in the store, found {len(rows)} ({cookie[:20]}...)")
        return bytes(rows[0][0])

    def sweep(self, target: Target, expired: list[str], db: Path, started: float, base: str) -> None:
        """Expire `expired`, then a wrk run with the sweep in it: a login's write (SQLite), or
        the PEXPIREs themselves (Redis: its active expiry deletes the keys)."""
        began = time.monotonic()
        if self.store == "sqlite":
            fill.expire_sqlite(db, expired)
        self.result["expire_seconds"] = time.monotonic() - began
        self.result["expired"] = len(expired)
        if self.store == "sqlite" and (wait := started + SWEEP_INTERVAL + 1 - time.monotonic()) > 0:
            print(f"bench.million: {wait:.0f} s until the store's next sweep is due", file=sys.stderr, flush=True)
            time.sleep(wait)
        self.result["rows_before_sweep"] = self.count(db)
        size_before = self.size(db)
        samples: list[Sample] = []
        cpus = (self.ctx.client_cpus, self.ctx.proxy_cpus)
        run = threading.Thread(
            target=lambda: samples.append(
                measure(target, self.upstream, self.args.concurrency, self.args.sweep_duration, 1, *cpus)
            )
        )
        trigger = threading.Thread(target=self.trigger, args=(base, expired))
        run.start()
        time.sleep(2)
        began = time.monotonic()
        trigger.start()
        # Done when the expired rows are gone (SQLite: the DELETE committed; Redis: expired).
        # (+ 10: the sweeping login's own session and markers.)
        while self.size(db) > size_before - len(expired) + 10 and time.monotonic() < began + 600:
            time.sleep(0.5)
        self.result["sweep_seconds"] = time.monotonic() - began
        trigger.join()
        run.join()
        self.result["rows_after_sweep"] = self.count(db)
        self.result["sweep"] = asdict(samples[0]) if samples else None

    def size(self, db: Path) -> int:
        """Rows (SQLite), or keys (Redis: DBSIZE, O(1), so polling it does not stall Redis)."""
        if self.store == "sqlite":
            return fill.sqlite_count(db)
        client = redis.Redis.from_url(self.redis_url)
        try:
            return int(client.dbsize())
        finally:
            client.close()

    def trigger(self, base: str, expired: list[str]) -> None:
        """SQLite: a login, whose session's write runs the due sweep first (the callback waits
        for it: how long a write stalls); Redis: the PEXPIREs."""
        began = time.monotonic()
        try:
            if self.store == "sqlite":
                provider_log_in(base, user="bench-sweeper")
            else:
                fill.expire_redis(self.redis_url, expired)
        except (httpx.HTTPError, AssertionError, ValueError, redis.RedisError) as exc:
            self.result["trigger_error"] = f"{type(exc).__name__}: {exc}"
        self.result["trigger_seconds"] = time.monotonic() - began


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    client_cpus, proxy_cpus = cpu_split()
    os.sched_setaffinity(0, client_cpus)
    machine = machine_info()
    results: list[dict[str, Any]] = []
    with workspace(keep=args.keep) as workdir:
        env = child_env(workdir)
        upstream = start_upstream(workdir, env, client_cpus)
        try:
            ctx = Context(workdir, env, client_cpus, proxy_cpus, upstream.port)
            for store in args.stores:
                one = StoreRun(store, args, ctx, upstream)
                try:
                    results.append(one.run())
                except (RuntimeError, OSError, ValueError, redis.RedisError, httpx.HTTPError, AssertionError) as exc:
                    results.append({**one.result, "failure": str(exc)})
                finally:
                    stop_targets(one.targets)
        finally:
            stop_targets([upstream])
    print(render(machine, args, results), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    options = {k: v for k, v in vars(args).items() if k != "json" and k != "keep"}
    args.json.write_text(json.dumps({"machine": machine, "options": options, "stores": results}, indent=2) + "\n")
    print(f"\nresults: {args.json}", flush=True)
    failed = any("failure" in r or any(s["errors"] for s in r["small"] + r["big"]) for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
