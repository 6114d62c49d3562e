"""`CountedStore`: a `Store` that counts its failures (`bff_store_errors_total` by operation,
the method's name) and otherwise hands every call to the store it wraps."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import TracebackType

from bff.errors import StoreUnavailable
from bff.metrics import Metrics
from bff.stores import Store

__all__ = ["CountedStore"]


class _Counting:
    """`with`: a `StoreUnavailable` leaving the block is counted under `operation`."""

    __slots__ = ("_metrics", "_operation")

    def __init__(self, metrics: Metrics, operation: str) -> None:
        self._metrics = metrics
        self._operation = operation

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is not None and issubclass(kind, StoreUnavailable):
            self._metrics.store_failed(self._operation)


class CountedStore:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.inner = store
        self._counting = {
            name: _Counting(metrics, name)
            for name in (
                "open",
                "ping",
                "get",
                "set",
                "replace",
                "delete",
                "keys_where",
                "indexed_keys",
                "add_if_absent",
                "lock",
            )
        }

    async def open(self) -> None:
        with self._counting["open"]:
            await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        with self._counting["ping"]:
            await self.inner.ping()

    def version(self) -> int | None:
        return self.inner.version()

    async def get(self, key: str) -> bytes | None:
        with self._counting["get"]:
            return await self.inner.get(key)

    async def set(self, key: str, value: bytes, ttl: float, *, sub: str | None = None, sid: str | None = None) -> None:
        with self._counting["set"]:
            await self.inner.set(key, value, ttl, sub=sub, sid=sid)

    async def replace(
        self,
        key: str,
        value: bytes,
        ttl: float,
        *,
        sub: str | None = None,
        sid: str | None = None,
        expected: bytes | None = None,
    ) -> bool:
        with self._counting["replace"]:
            return await self.inner.replace(key, value, ttl, sub=sub, sid=sid, expected=expected)

    async def delete(self, key: str) -> bool:
        with self._counting["delete"]:
            return await self.inner.delete(key)

    async def keys_where(self, *, sub: str | None = None, sid: str | None = None) -> list[str]:
        with self._counting["keys_where"]:
            return await self.inner.keys_where(sub=sub, sid=sid)

    async def indexed_keys(self) -> list[str]:
        with self._counting["indexed_keys"]:
            return await self.inner.indexed_keys()

    async def add_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        with self._counting["add_if_absent"]:
            return await self.inner.add_if_absent(key, value, ttl)

    @contextlib.asynccontextmanager
    async def lock(self, name: str, *, ttl: float, wait: float) -> AsyncIterator[None]:
        # Only acquiring counts: a StoreUnavailable raised inside the block is its own operation's.
        with self._counting["lock"]:
            held = self.inner.lock(name, ttl=ttl, wait=wait)
            await held.__aenter__()
        try:
            yield
        except BaseException as exc:
            if not await held.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            await held.__aexit__(None, None, None)
