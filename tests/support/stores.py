"""The `store` fixture: one `Store` per backend (memory, SQLite in `tmp_path`, and under a prefix
of its own each: the session's redis-server, its three-primary Redis Cluster, and its primary
behind three sentinels), opened before the test and closed after it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bff.stores import Store
from bff.stores.memory import MemoryStore
from bff.stores.redis import RedisStore
from bff.stores.sqlite import SQLiteStore

BACKENDS = ["memory", "sqlite", "redis", "redis-cluster", "redis-sentinel"]
REDIS_FIXTURES = {"redis": "redis_server", "redis-cluster": "redis_cluster", "redis-sentinel": "redis_sentinel"}
"""Each Redis backend's session-scoped fixture; each has a `url`."""


def redis_url(request: pytest.FixtureRequest, backend: str) -> str:
    url: str = request.getfixturevalue(REDIS_FIXTURES[backend]).url
    return url


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "sessions.db")
    else:
        backend = RedisStore(redis_url(request, request.param), prefix=f"test-{uuid.uuid4().hex}:")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
