"""The `store` fixture: one `Store` per backend (memory, SQLite in `tmp_path`, the session's
redis-server under a prefix of its own), opened before the test and closed after it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bff.stores import Store
from bff.stores.memory import MemoryStore
from bff.stores.redis import RedisStore
from bff.stores.sqlite import SQLiteStore
from tests.support.redis_server import RedisServer

BACKENDS = ["memory", "sqlite", "redis"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "sessions.db")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        backend = RedisStore(server.url, prefix=f"test-{uuid.uuid4().hex}:")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()
