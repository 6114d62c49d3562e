"""Fixtures shared by the test modules; each plugin module below owns its fixtures."""

from __future__ import annotations

pytest_plugins = [
    "tests.support.redis_server",
]
