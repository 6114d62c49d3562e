"""`--profile SETUP`: py-spy samples a set-up while wrk drives it, and the top functions of the
samples, by own and by inclusive time, become a text table printed under the report.

(Not `profile.py`: bench/'s scripts run with bench/ first on `sys.path`, where that name would
hide the standard library's `profile`.)
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from bench.measure import wrk_argv
from bench.processes import Target, pinned, run_pinned, running

__all__ = ["profile", "summarise_profile"]


def profile(target: Target, concurrency: int, duration: int, cpus: set[int], out: Path) -> str:
    """Sample the target with py-spy while wrk drives it; return the top functions as text."""
    if shutil.which("py-spy") is None:
        return "profile: py-spy is not installed (pip install py-spy)"
    pid = running(target).pid
    wrk = subprocess.Popen(
        [*wrk_argv(target, concurrency, duration + 2), target.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pinned(cpus),
    )
    try:
        time.sleep(1)
        argv = ["py-spy", "record", "--pid", str(pid), "--duration", str(duration), "--rate", "250"]
        argv += ["--format", "raw", "--function", "--nonblocking", "--output", str(out)]
        spy = run_pinned(argv, cpus, timeout=duration + 60)
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
    for title, counts in (("self %", own), ("incl %", inclusive)):
        lines.append(f"{title:>7}  function (file:line)")
        lines += [
            f"{100 * count / total:>7.1f}  {frame}"
            for frame, count in sorted(counts.items(), key=lambda i: -i[1])[:top]
        ]
    return "\n".join(lines)
