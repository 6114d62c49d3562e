"""Redis beyond one server, from real `redis-server` processes on free loopback ports.

`RedisClusterNodes`: three primaries with `--cluster-enabled yes`, joined by `redis-cli --cluster
create ... --cluster-replicas 0` (every slot covered, no replicas). `SentinelGroup`: a primary, one
replica and three sentinels (quorum 2) watching it as `mymaster`; `kill_primary()` SIGKILLs the
primary and `wait_for_failover()` returns once the sentinels name the replica as the new primary.

The fixtures `redis_cluster` and `redis_sentinel` are one of each for the whole test session
(the store contract tests keep apart by key prefix); a test that kills a primary starts its own
`SentinelGroup`. Missing `redis-server` or `redis-cli`: skipped loudly, failing under `CI=true`.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.support.processes import free_port
from tests.support.redis_server import RedisServer, redis_server_or_skip
from tests.support.tools import find_tool

MASTER = "mymaster"
DOWN_AFTER_MS = 500
"""How long the sentinels let the primary stay silent before they call it down."""


def redis_cli_or_skip() -> str:
    return find_tool(
        ("redis-cli", "/usr/bin/redis-cli", "/usr/local/bin/redis-cli"),
        "REDIS TESTS NOT RUN: redis-cli is not installed (apt-get install redis-tools); "
        "Redis Cluster is untested in this run",
        override_variable="BFF_TEST_REDIS_CLI",
    )


def free_cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher, so at most 55535) is free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _wait(condition: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis: {condition} not reached within {timeout}s")
        time.sleep(0.05)


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=1, decode_responses=True)


class RedisClusterNodes:
    def __init__(self, executable: str, cli: str, directory: Path, size: int = 3) -> None:
        self.cli = cli
        self.nodes: list[RedisServer] = []
        for _ in range(size):
            port = free_cluster_port()
            args = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            self.nodes.append(RedisServer(executable, directory, port, args=[*args, "--cluster-node-timeout", "2000"]))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes) + "/"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        create = [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=30)

        def all_ok() -> bool:
            for node in self.nodes:
                with _client(node.port) as client:
                    if client.execute_command("CLUSTER INFO")["cluster_state"] != "ok":
                        return False
            return True

        _wait("cluster_state:ok on every node", all_ok, 20)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class SentinelGroup:
    def __init__(self, executable: str, directory: Path) -> None:
        self.directory = directory
        sync_now = ["--repl-diskless-sync-delay", "0"]  # the default waits 5 s for more replicas
        self.primary = RedisServer(executable, directory / "primary", args=sync_now)
        replica_of = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica = RedisServer(executable, directory / "replica", args=[*sync_now, *replica_of])
        self.sentinels = [_Sentinel(executable, directory / f"sentinel-{i}", self.primary.port) for i in range(3)]

    @property
    def url(self) -> str:
        """Database 0 of `mymaster`, found through the three sentinels."""
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels) + f"/{MASTER}/0"

    def start(self) -> None:
        for server in (self.primary, self.replica, *self.sentinels):
            server.directory.mkdir(parents=True, exist_ok=True)
            server.start()

        def in_sync() -> bool:
            with _client(self.replica.port) as client:
                return bool(client.info("replication").get("master_link_status") == "up")

        _wait("replica in sync", in_sync, 10)

    def settled(self) -> bool:
        """Every sentinel knows the replica and the two other sentinels (needed for a failover)."""
        for sentinel in self.sentinels:
            with _client(sentinel.port) as client:
                state = client.sentinel_master(MASTER)
            if (state["num-slaves"], state["num-other-sentinels"]) != (1, 2):
                return False
        return True

    def wait_until_settled(self, timeout: float = 15) -> None:
        _wait("sentinels that know each other and the replica", self.settled, timeout)

    def wait_until_replicated(self, timeout: float = 5) -> None:
        """The replica has every write the primary has taken (replication is asynchronous)."""

        def caught_up() -> bool:
            with _client(self.primary.port) as client:
                info = client.info("replication")
            return bool(info.get("slave0")) and info["slave0"]["offset"] == info["master_repl_offset"]

        _wait("replica at the primary's offset", caught_up, timeout)

    def master_port(self) -> int:
        """The primary's port as the first sentinel reports it."""
        with _client(self.sentinels[0].port) as client:
            _, port = client.sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def kill_primary(self) -> None:
        self.primary.kill()

    def wait_for_failover(self, timeout: float = 20) -> None:
        _wait("the replica promoted by the sentinels", lambda: self.master_port() == self.replica.port, timeout)

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.stop()


class _Sentinel(RedisServer):
    """`redis-server <conf> --sentinel`: sentinels rewrite their config file, so each has one."""

    def __init__(self, executable: str, directory: Path, primary_port: int) -> None:
        super().__init__(executable, directory)
        self.primary_port = primary_port

    def command(self) -> list[str]:
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
        )
        return [self.executable, str(config), "--sentinel"]


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """One three-primary Redis Cluster for the whole test session."""
    cluster = RedisClusterNodes(redis_server_or_skip(), redis_cli_or_skip(), tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """One primary, one replica, three sentinels for the whole test session (never failed over)."""
    group = SentinelGroup(redis_server_or_skip(), tmp_path_factory.mktemp("sentinel"))
    try:
        group.start()
        yield group
    finally:
        group.stop()
