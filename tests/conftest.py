"""Fixtures shared by the test modules; each plugin module below owns its fixtures."""

from __future__ import annotations

import pytest

from tests.fakes import Clock, FakeIdP

pytest_plugins = [
    "tests.support.redis_server",
    "tests.support.redis_topologies",
    "tests.support.stores",
    "tests.support.token_apis",
    "tests.support.upstreams",
]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def idp(clock: Clock) -> FakeIdP:
    """The fake provider on the test's clock (a module may override it, e.g. with a token delay)."""
    return FakeIdP(clock=clock)
