"""The `session_store` URL forms for Redis, read without I/O and without importing redis-py.

    redis://[[user]:password@]host:port/db              one Redis (or a primary); also rediss://, unix://
    redis+sentinel://[[user]:password@]host:port[,host:port...]/<master-name>[/<db>][?sentinel_password=...]
    redis+cluster://[[user]:password@]host:port[,host:port...][/]

`parse_redis_url(url)` returns a `RedisTarget` or raises `ConfigError` with one line that starts
with `session_store:` and never repeats a password. The client is built from it in
`bff.stores.redis`, which owns the connections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from bff.errors import ConfigError

__all__ = ["CLUSTER_FORM", "REDIS_SCHEMES", "SENTINEL_FORM", "RedisTarget", "parse_redis_url", "shown_url"]

SENTINEL_FORM = "redis+sentinel://[[user]:password@]host:port[,host:port...]/<master-name>[/<db>]"
CLUSTER_FORM = "redis+cluster://[[user]:password@]host:port[,host:port...]/"
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")


@dataclass(frozen=True)
class RedisTarget:
    """Where the Redis store connects. `url` is the original URL (`single` hands it to redis-py's
    `from_url` as is); `nodes` are the sentinels (`sentinel`) or the cluster's start-up nodes."""

    mode: Literal["single", "sentinel", "cluster"]
    url: str = field(repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def shown_url(url: str) -> str:
    """`url` with everything before the host replaced by `***`, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}://{netloc}{slash}{path.split('?', 1)[0]}"


def parse_redis_url(url: str) -> RedisTarget:
    scheme = url.partition("://")[0]
    if scheme not in ("redis+sentinel", "redis+cluster"):
        return RedisTarget("single", url)
    form = SENTINEL_FORM if scheme == "redis+sentinel" else CLUSTER_FORM

    def problem(what: str) -> ConfigError:
        return ConfigError([f"session_store: {shown_url(url)!r} {what}; expected {form}"])

    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = tuple(_node(host, problem) for host in hosts.split(","))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - ({"sentinel_password"} if scheme == "redis+sentinel" else set()))
    if unknown:
        raise problem(f"has unknown parameters {', '.join(unknown)}")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    user, secret = unquote(username) or None, unquote(password) or None
    if scheme == "redis+cluster":
        if segments not in ([], ["0"]):
            raise problem("has a path, but Redis Cluster has only database 0")
        return RedisTarget("cluster", url, nodes, username=user, password=secret)
    if not segments or len(segments) > 2:
        raise problem("needs the master's name and at most a database number after it")
    db = segments[1] if len(segments) == 2 else "0"
    if not db.isdigit():
        raise problem(f"has database {db!r}, which is not a number")
    return RedisTarget(
        "sentinel",
        url,
        nodes,
        master=segments[0],
        db=int(db),
        username=user,
        password=secret,
        sentinel_password=query.get("sentinel_password") or None,
    )


def _node(address: str, problem: Callable[[str], ConfigError]) -> tuple[str, int]:
    host, colon, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:26379
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise problem(f"has {address!r} where a host:port belongs")
    return host, int(port)
