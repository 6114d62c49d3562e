"""What a test does when a tool it needs is missing: skip with a loud reason on a developer's
machine, fail under `CI=true`, where `scripts/install` should have installed it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing_tool(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: scripts/install should have installed it)", pytrace=False)
    pytest.skip(f"NOT RUN: {reason}")


def find_tool(candidates: Sequence[str], reason: str, *, override_variable: str | None = None) -> str:
    """Path of the first of `candidates` on PATH (or of `$override_variable` when set)."""
    explicit = os.environ.get(override_variable) if override_variable else None
    for candidate in (explicit,) if explicit else candidates:
        found = shutil.which(candidate)
        if found:
            return found
    missing_tool(reason)
