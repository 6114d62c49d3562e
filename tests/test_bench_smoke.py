"""Smoke run of the benchmark harness (`python -m bench`): the command starts the upstream, Caddy and
the BFF, drives each with wrk for a second and prints the table. No timing is asserted here: the
numbers come from the full run (see bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.tools import find_tool

REPO = Path(__file__).resolve().parents[1]


def test_bench_quick_run_prints_the_table(tmp_path: Path) -> None:
    for tool in ("wrk", "caddy"):
        find_tool([tool], f"BENCHMARK SMOKE TEST NOT RUN: {tool} is not installed (apt-get install {tool})")
    results = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--duration", "1", "--warmup", "0", "--json", str(results)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "machine: " in completed.stdout
    for setup in ("upstream", "caddy", "bff"):
        assert f"  {setup} " in completed.stdout, output
    assert "BFF / Caddy" in completed.stdout, output
    data = json.loads(results.read_text(encoding="utf-8"))
    assert {row["setup"] for row in data["summary"]} == {"upstream", "caddy", "bff"}
    assert all(row["errors"] == 0 and row["rps"] > 0 for row in data["summary"])
    assert data["ratios"] and data["ratios"][0]["concurrency"] == 8
