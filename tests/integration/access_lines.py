"""Reading the BFF's log files back: access lines in either format, and all lines of one request."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

ACCESS_MARK = " bff.access: "


def log_lines(path: Path) -> list[str]:
    """The process's lines, without the harness's `===== start` banners."""
    return [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("===== ")]


def parse_text_access(line: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for pair in shlex.split(line.split(ACCESS_MARK, 1)[1]):
        name, value = pair.split("=", 1)
        fields[name] = value
    return fields


def access_entries(path: Path, log_format: str) -> list[dict[str, Any]]:
    """Every access line of the file as a dict (text values stay strings)."""
    if log_format == "json":
        entries = [json.loads(line) for line in log_lines(path)]
        return [entry for entry in entries if entry["logger"] == "bff.access"]
    return [parse_text_access(line) for line in log_lines(path) if ACCESS_MARK in line]


def access_of(path: Path, log_format: str, request_id: str) -> dict[str, Any]:
    (entry,) = [entry for entry in access_entries(path, log_format) if entry["request_id"] == request_id]
    return entry
