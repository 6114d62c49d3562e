"""ReadCache: the store reads of the request path, skipped while the store says nothing changed.

Every proxied request of a signed-in browser reads its session record (server mode) or its
ended-marker (cookie mode), so that a logout on any worker or replica counts at the very next
request. A read costs a thread hop (SQLite) or a round trip (Redis), several times the rest of
the authentication. `Store.version()` is cheap and changes with every write anywhere (see each
backend), so a value read at version V is still the stored one while the version is V: the
cache answers then, and reads the store whenever the version moved or is unknown (None).

Only for records whose holders check their own expiry: an entry that merely expires is no write,
so the cache may return it past its ttl (a session's idle and absolute ends are checked on every
load by `bff.server_sessions` and `bff.cookie_sessions`).
"""

from __future__ import annotations

from collections import OrderedDict

from bff.stores import Store

__all__ = ["READ_CACHE_SIZE", "ReadCache"]

READ_CACHE_SIZE = 4096
"""Keys kept per process (least recently used out): the records themselves stay in the store."""


class ReadCache:
    def __init__(self, store: Store, size: int = READ_CACHE_SIZE) -> None:
        self._store = store
        self._size = size
        # key -> (the store's version before the read, the value read); most recent last.
        self._values: OrderedDict[str, tuple[int, bytes | None]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        version = self._store.version()
        if version is None:
            return await self._store.get(key)
        held = self._values.get(key)
        if held is not None and held[0] == version:
            self._values.move_to_end(key)
            return held[1]
        # The version is taken before the read: a write that lands during it moves the version,
        # so the next request reads again.
        value = await self._store.get(key)
        self._values[key] = (version, value)
        self._values.move_to_end(key)
        if len(self._values) > self._size:
            self._values.popitem(last=False)
        return value
