"""RedisStore: the `Store` in Redis, for several BFF replicas sharing sessions and locks.

Owns the key layout under a prefix (default `bff:`):

    bff:e:<key>      the value, with a PX ttl (Redis expires it by itself)
    bff:m:<key>      hash {sub, sid} of an entry that has index fields, same ttl (`indexed_keys` scans these)
    bff:sub:<sub>    set of keys with that sub; its ttl is stretched to the longest member's
    bff:sid:<sid>    set of keys with that sid, likewise
    bff:lock:<name>  a lease: a random token, SET NX PX; released only by the token's owner

Writes that touch several keys run as one Lua script, so they are atomic. Index sets may keep a
member whose entry expired or was deleted; `keys_where` checks each member and drops stale ones.
Index keys are built inside the scripts, so this layout is for a single Redis (or a primary with
replicas), not Redis Cluster. Every Redis or socket error surfaces as `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from bff.errors import StoreUnavailable

T = TypeVar("T")

_LOCK_POLL = 0.015

# KEYS: entry, meta, prefix-less key; ARGV: value, ms, mode, expected, key, sub, sid, prefix.
# mode: "set" (always), "present" (only if the entry exists), "expect" (only if it equals expected).
# sub/sid: "" when absent, else "=" followed by the value (so that an empty string is a value).
_WRITE = """
local entry, meta = KEYS[1], KEYS[2]
local value, ms, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if mode ~= 'set' then
  local current = redis.call('GET', entry)
  if not current then return 0 end
  if mode == 'expect' and current ~= ARGV[4] then return 0 end
end
redis.call('SET', entry, value, 'PX', ms)
redis.call('DEL', meta)
local fields = {sub = ARGV[6], sid = ARGV[7]}
for field, tagged in pairs(fields) do
  if tagged ~= '' then
    local name = string.sub(tagged, 2)
    redis.call('HSET', meta, field, name)
    local index = ARGV[8] .. field .. ':' .. name
    redis.call('SADD', index, ARGV[5])
    if redis.call('PTTL', index) < ms then redis.call('PEXPIRE', index, ms) end
  end
end
if redis.call('EXISTS', meta) == 1 then redis.call('PEXPIRE', meta, ms) end
return 1
"""

# KEYS: lease; ARGV: token. Delete the lease only if we still own it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    def __init__(self, url: str, *, prefix: str = "bff:", timeout: float = 2.0) -> None:
        self._url = url
        self._prefix = prefix
        self._timeout = timeout
        self._client: aioredis.Redis | None = None
        self._write: Any = None
        self._release: Any = None

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self._prefix!r})"  # the URL may hold a password

    @property
    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                health_check_interval=30,
                # A pooled connection that died with the server (restart, failover, idle cut) is
                # only found out when used: retry once on a fresh one, at once. `from_url` clients
                # otherwise retry nothing, and the first request per dead connection got a 503
                # although Redis was back. Timeouts are not retried (no doubled wait when it hangs).
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            self._write = self._client.register_script(_WRITE)
            self._release = self._client.register_script(_RELEASE)
        return self._client

    async def _do(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"session store redis: {type(exc).__name__}: {exc}") from exc

    def _e(self, key: str) -> str:
        return f"{self._prefix}e:{key}"

    def _m(self, key: str) -> str:
        return f"{self._prefix}m:{key}"

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        await self.ping()

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def ping(self) -> None:
        await self._do(self._redis.ping())

    # -- entries ------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        value = await self._do(self._redis.get(self._e(key)))
        return value.encode() if isinstance(value, str) else value

    async def _write_entry(
        self, key: str, value: bytes, ttl: float, sub: str | None, sid: str | None, mode: str, expected: bytes
    ) -> bool:
        client = self._redis
        args: list[Any] = [
            value,
            _ms(ttl),
            mode,
            expected,
            key,
            "" if sub is None else "=" + sub,
            "" if sid is None else "=" + sid,
            self._prefix,
        ]
        result = await self._do(self._write(keys=[self._e(key), self._m(key)], args=args, client=client))
        return bool(result)

    async def set(self, key: str, value: bytes, ttl: float, *, sub: str | None = None, sid: str | None = None) -> None:
        await self._write_entry(key, value, ttl, sub, sid, "set", b"")

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
        mode = "present" if expected is None else "expect"
        return await self._write_entry(key, value, ttl, sub, sid, mode, expected or b"")

    async def delete(self, key: str) -> bool:
        async def delete() -> bool:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._e(key))
                pipe.delete(self._m(key))
                deleted_entry, _ = await pipe.execute()
            return bool(deleted_entry)

        return await self._do(delete())

    async def keys_where(self, *, sub: str | None = None, sid: str | None = None) -> list[str]:
        if sub is None and sid is None:
            raise ValueError("keys_where needs sub or sid")
        index = f"{self._prefix}sub:{sub}" if sub is not None else f"{self._prefix}sid:{sid}"

        async def keys_where() -> list[str]:
            client = self._redis
            members = [_text(m) or "" for m in await client.smembers(index)]
            if not members:
                return []
            async with client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hmget(self._m(member), ["sub", "sid"])
                rows = await pipe.execute()
            found: list[str] = []
            stale: list[str] = []
            for member, (entry_sub, entry_sid) in zip(members, rows, strict=True):
                if entry_sub is None and entry_sid is None:
                    stale.append(member)  # expired or deleted: drop it from the index
                elif (sub is None or _text(entry_sub) == sub) and (sid is None or _text(entry_sid) == sid):
                    found.append(member)
            if stale:
                await client.srem(index, *stale)
            return found

        return await self._do(keys_where())

    async def indexed_keys(self) -> list[str]:
        meta_prefix = self._m("")

        async def indexed_keys() -> list[str]:
            client = self._redis
            # Every entry with index fields has its `m:` hash, with the entry's ttl.
            metas = [
                _text(name) or "" async for name in client.scan_iter(match=_glob_escape(meta_prefix) + "*", count=500)
            ]
            if not metas:
                return []
            async with client.pipeline(transaction=False) as pipe:
                for meta in metas:
                    pipe.hexists(meta, "sub")
                has_sub = await pipe.execute()
            return [meta[len(meta_prefix) :] for meta, found in zip(metas, has_sub, strict=True) if found]

        return await self._do(indexed_keys())

    async def add_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        result = await self._do(self._redis.set(self._e(key), value, px=_ms(ttl), nx=True))
        return bool(result)

    # -- the lease ----------------------------------------------------------------------------

    def lock(self, name: str, *, ttl: float, wait: float) -> AbstractAsyncContextManager[None]:
        return self._lease(name, ttl, wait)

    @contextlib.asynccontextmanager
    async def _lease(self, name: str, ttl: float, wait: float) -> AsyncIterator[None]:
        lease = f"{self._prefix}lock:{name}"
        token = secrets.token_hex(16)
        deadline = time.monotonic() + wait
        while not await self._do(self._redis.set(lease, token, px=_ms(ttl), nx=True)):
            if time.monotonic() >= deadline:
                raise StoreUnavailable(f"lock {name!r}: not acquired within {wait:g}s")
            await asyncio.sleep(min(_LOCK_POLL, max(0.0, deadline - time.monotonic())))
        try:
            yield
        finally:
            # A failing release only lets the lease run out by itself, which is what it is for.
            with contextlib.suppress(StoreUnavailable):
                await asyncio.shield(self._do(self._release(keys=[lease], args=[token], client=self._redis)))


def _ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


def _glob_escape(text: str) -> str:
    """`text` matched literally in a `SCAN MATCH` pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
