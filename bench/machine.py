"""What the report says about the machine and the software: CPUs, kernel, Python, caddy, wrk, the
stack's packages, the checkout's commit (and whether bff/ differs from it), the load at start."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.processes import REPO_ROOT

__all__ = ["command_version", "git_state", "machine_info", "package_version"]


def command_version(argv: Sequence[str]) -> str:
    try:
        completed = subprocess.run(list(argv), capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (completed.stdout or completed.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def git_state() -> tuple[str, bool]:
    """The checkout's short commit and whether bff/ differs from it (or says it is not a checkout)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        status = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "bff"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout", False
    return head.stdout.strip(), bool(status.stdout.strip())


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    commit, dirty = git_state()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "caddy": command_version(["caddy", "version"]).split()[0],
        "wrk": command_version(["wrk", "--version"]).split()[1] if shutil.which("wrk") else "not installed",
        "packages": {name: package_version(name) for name in ("uvicorn", "uvloop", "httptools", "aiohttp")},
        "git": commit + (" (bff/ modified)" if dirty else ""),
        "loadavg": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
