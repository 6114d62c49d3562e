"""RedisStore: the `Store` in Redis, for several BFF replicas sharing sessions and locks.

One backend for three set-ups, the client chosen by the URL (`bff.stores.urls`): one Redis or a
primary (`redis://`), a primary found through Redis Sentinel (`redis+sentinel://`, re-discovered
after a failover) and Redis Cluster (`redis+cluster://`). Owns the key layout under a prefix
(default `bff:`), in which every command names exactly one key, so each lands in one hash slot
and no operation needs hash tags or a cross-slot transaction:

    bff:r:<key>      hash {v: value, sub, sid} of one entry, with a PX ttl (`indexed_keys` scans these)
    bff:sub:<sub>    set of keys with that sub; its ttl is stretched to the longest member's
    bff:sid:<sid>    set of keys with that sid, likewise
    bff:lock:<name>  a lease: a random token, SET NX PX; released only by the token's owner

A write first adds the key to its index sets (one script per set), then writes the record (one
script, conditional for `replace`). So an index set holds every live entry with that field, plus
perhaps stale members (expired, deleted, re-indexed, or a conditional write that did not happen),
which `keys_where` checks against the records and drops. Every Redis, Sentinel, Cluster or socket
error surfaces as `StoreUnavailable`. `version()` comes from Redis's invalidation pushes on a
connection of its own (`bff.stores.redis_tracking`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import secrets
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from bff.errors import StoreUnavailable
from bff.stores.common import poll_lease, require_criterion
from bff.stores.redis_scripts import ADD, INDEX, RELEASE, WRITE
from bff.stores.redis_tracking import Invalidations
from bff.stores.urls import RedisTarget, parse_redis_url

__all__ = ["Client", "RedisStore", "connect"]

T = TypeVar("T")
Client = aioredis.Redis | RedisCluster

_LOCK_POLL = 0.015


def connect(target: RedisTarget, timeout: float) -> tuple[Client, Sentinel | None]:
    """The client for `target` (and the `Sentinel` it asks for the primary, to close with it).

    A pooled connection that died with the server (restart, failover, idle cut) is only found out
    when used: retry once on a fresh one, at once. `from_url` clients otherwise retry nothing, and
    the first request per dead connection got a 503 although Redis was back. Timeouts are not
    retried (no doubled wait when it hangs). Behind Sentinel each new connection asks the
    sentinels for the primary's address, so the retry after a failover reaches the new primary.
    """
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    credentials: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.mode == "single":
        return aioredis.Redis.from_url(target.url, health_check_interval=30, retry=retry, **options), None
    if target.mode == "sentinel":
        sentinel_options = {**options, "password": target.sentinel_password}
        # Untyped before redis-py 8, typed from it: the ignore holds for both.
        sentinel = Sentinel(target.nodes, sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call, unused-ignore]
        client = sentinel.master_for(
            target.master, db=target.db, health_check_interval=30, retry=retry, **credentials, **options
        )
        return client, sentinel
    # The cluster client retries a failed command once, after fetching the slot map again (a node
    # gone, a replica promoted). It decides itself which errors it retries: timeouts too, so a hung
    # node answers after twice the timeout.
    nodes = [ClusterNode(host, port) for host, port in target.nodes]
    return RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 1), **credentials, **options), None


class RedisStore:
    def __init__(self, url: str, *, prefix: str = "bff:", timeout: float = 2.0) -> None:
        self._target = parse_redis_url(url)
        self._prefix = prefix
        self._timeout = timeout
        self._client: Client | None = None
        self._sentinel: Sentinel | None = None
        self._scripts: dict[str, Any] = {}
        self._invalidations: Invalidations | None = None

    def __repr__(self) -> str:
        return f"RedisStore({self._target.mode}, prefix={self._prefix!r})"  # the URL may hold a password

    @property
    def mode(self) -> str:
        """`single`, `sentinel` or `cluster`: which client the URL chose."""
        return self._target.mode

    @property
    def _redis(self) -> Client:
        if self._client is None:
            self._client, self._sentinel = connect(self._target, self._timeout)
            for name, script in (("write", WRITE), ("add", ADD), ("index", INDEX), ("release", RELEASE)):
                self._scripts[name] = self._client.register_script(script)
        return self._client

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        client = self._redis
        return await self._do(self._scripts[script](keys=keys, args=args, client=client))

    async def _do(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"session store redis: {type(exc).__name__}: {exc}") from exc

    def _r(self, key: str) -> str:
        return f"{self._prefix}r:{key}"

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        await self.ping()
        if self._target.mode == "single":
            self._invalidations = Invalidations(self._target.url, self._r(""), timeout=self._timeout)
            await self._invalidations.start()

    async def close(self) -> None:
        invalidations, self._invalidations = self._invalidations, None
        if invalidations is not None:
            await invalidations.stop()
        client, self._client = self._client, None
        sentinel, self._sentinel = self._sentinel, None
        for closing in (client, sentinel):
            if closing is not None:
                with contextlib.suppress(RedisError, RedisClusterException, OSError):
                    await closing.aclose()

    def version(self) -> int | None:
        """Moves with Redis's invalidation pushes (`bff.stores.redis_tracking`); None behind
        Sentinel or in a Cluster, where every read goes to Redis."""
        return None if self._invalidations is None else self._invalidations.version()

    async def ping(self) -> None:
        client = self._redis
        if isinstance(client, RedisCluster):  # every primary (a cluster's PING would ask replicas too)
            await self._do(client.ping(target_nodes=RedisCluster.PRIMARIES))
        else:
            await self._do(client.ping())

    # -- entries ------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        value = await self._do(self._redis.hget(self._r(key), "v"))
        return value.encode() if isinstance(value, str) else value

    async def _write_entry(
        self, key: str, value: bytes, ttl: float, sub: str | None, sid: str | None, mode: str, expected: bytes
    ) -> bool:
        ms = _ms(ttl)
        # The index sets first: a failure here leaves no entry that `keys_where` could miss.
        indexes = [f"{self._prefix}{name}:{field}" for name, field in (("sub", sub), ("sid", sid)) if field is not None]
        await asyncio.gather(*(self._run("index", [index], [key, ms]) for index in indexes))
        tagged = ["" if field is None else "=" + field for field in (sub, sid)]
        return bool(await self._run("write", [self._r(key)], [value, ms, mode, expected, *tagged]))

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
        return bool(await self._do(self._redis.delete(self._r(key))))

    async def keys_where(self, *, sub: str | None = None, sid: str | None = None) -> list[str]:
        require_criterion("keys_where", sub, sid)
        # The index of the first given field; its members' records must show it, and `sid` too.
        name, position, wanted = ("sub", 0, sub) if sub is not None else ("sid", 1, sid)
        index = f"{self._prefix}{name}:{wanted}"

        async def keys_where() -> list[str]:
            client = self._redis
            members = [_text(m) or "" for m in await client.smembers(index)]
            if not members:
                return []
            # One HMGET per member, each in its record's own slot; the cluster client sends each
            # to its node.
            async with client.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.hmget(self._r(member), ["sub", "sid"])
                rows = await pipe.execute()
            found: list[str] = []
            stale: list[str] = []
            for member, (entry_sub, entry_sid) in zip(members, rows, strict=True):
                fields = (_text(entry_sub), _text(entry_sid))
                if fields[position] != wanted:
                    stale.append(member)  # expired, deleted or re-indexed: drop it from this index
                elif sid is None or fields[1] == sid:
                    found.append(member)
            if stale:
                await client.srem(index, *stale)
            return found

        return await self._do(keys_where())

    async def indexed_keys(self) -> list[str]:
        record_prefix = self._r("")

        async def indexed_keys() -> list[str]:
            client = self._redis
            # Every entry is one `r:` hash; those with a `sub` field are the indexed ones. (On a
            # cluster, redis-py scans every primary.)
            match = _glob_escape(record_prefix) + "*"
            records = [_text(name) or "" async for name in client.scan_iter(match=match, count=500)]
            if not records:
                return []
            async with client.pipeline(transaction=False) as pipe:
                for record in records:
                    pipe.hexists(record, "sub")
                has_sub = await pipe.execute()
            return [record[len(record_prefix) :] for record, found in zip(records, has_sub, strict=True) if found]

        return await self._do(indexed_keys())

    async def add_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        return bool(await self._run("add", [self._r(key)], [value, _ms(ttl)]))

    # -- the lease ----------------------------------------------------------------------------

    def lock(self, name: str, *, ttl: float, wait: float) -> AbstractAsyncContextManager[None]:
        return self._lease(name, ttl, wait)

    def _lease(self, name: str, ttl: float, wait: float) -> AbstractAsyncContextManager[None]:
        lease = f"{self._prefix}lock:{name}"
        token = secrets.token_hex(16)

        async def acquire() -> bool:
            return bool(await self._do(self._redis.set(lease, token, px=_ms(ttl), nx=True)))

        async def release() -> None:
            await self._run("release", [lease], [token])

        return poll_lease(acquire, release, name=name, wait=wait)


def _ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


def _glob_escape(text: str) -> str:
    """`text` matched literally in a `SCAN MATCH` pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
