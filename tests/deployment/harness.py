"""What the deployment tests build: a replica's bff.toml, a replica process, a `redis-server`
that keeps its data across a restart (append-only file in its own directory), and the README's
"several replicas on Redis": two replicas on that Redis behind Caddy's round robin."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.deployment.browser import Visitor
from tests.support.bff_process import BffProcess, bff_config, new_secret_key
from tests.support.caddy import Caddy
from tests.support.jwt_api import JwtApi
from tests.support.oidc_provider import Client, OidcProvider
from tests.support.processes import free_port
from tests.support.redis_server import RedisServer, redis_server_or_skip

CSRF = {"X-CSRF": "1"}


def replica_config(
    *,
    public_url: str,
    provider: OidcProvider,
    client: Client,
    api: JwtApi,
    echo_url: str,
    store: str,
    secret_keys: list[str],
    trusted_proxies: list[str],
) -> dict[str, Any]:
    """A bff.toml: `/api` (token user) to the JWT API, `/echo` (token user_optional) to the echo."""
    config = bff_config(
        port=0,
        public_url=public_url,
        issuer=provider.issuer,
        client_id=client.client_id,
        client_secret=client.client_secret,
        api_url=api.url,
        store=store,
        secret_keys=secret_keys,
        refresh_skew="1s",
        extra={"trusted_proxies": trusted_proxies},
    )
    config["routes"].append({"path": "/echo", "upstream": echo_url, "token": "user_optional"})
    return config


def new_replica(workdir: Path, config: dict[str, Any]) -> BffProcess:
    return BffProcess(workdir=workdir, config=config, port=free_port())


class PersistentRedis(RedisServer):
    """`redis-server` with `appendonly yes` (fsync always) in its own directory: stopped and started
    again on the same port, it comes back with every key it had."""

    def command(self) -> list[str]:
        command = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no"]
        return [*command, "--dir", str(self.directory), "--save", "", "--appendonly", "yes", "--appendfsync", "always"]

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        super().start(timeout)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its port and connections but answers nothing (a hung Redis)."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)


@dataclass
class Cluster:
    caddy: Caddy
    replicas: tuple[BffProcess, BffProcess]
    redis: PersistentRedis
    client: Client

    @property
    def url(self) -> str:
        return self.caddy.url

    def proxied(self, replica: BffProcess) -> int:
        """`bff_proxy_requests_total` of one replica, summed over routes and statuses."""
        return proxied_requests(httpx.get(f"{replica.url}/metrics", timeout=5).text)

    def logged_in(self, visitor: Visitor, user: str) -> str:
        """Log in through Caddy; return the session cookie's value."""
        visitor.login(self.url, user)
        cookie = visitor.cookie("bff")
        assert cookie, "no session cookie after the login"
        return cookie


def proxied_requests(metrics: str) -> int:
    """`bff_proxy_requests_total` in a replica's `/metrics` text, summed over routes and statuses."""
    return sum(int(float(n)) for n in re.findall(r"^bff_proxy_requests_total\{[^}]*\} ([0-9.]+)$", metrics, re.M))


@contextlib.contextmanager
def running_cluster(root: Path, name: str, *, provider: OidcProvider, api: JwtApi, echo_url: str) -> Iterator[Cluster]:
    """Redis, two replicas with the same `secret_keys` on it and Caddy (plain http) in front;
    stopped when the block ends."""
    redis = PersistentRedis(redis_server_or_skip(), root / "redis")
    redis.start()
    caddy_port = free_port()
    public_url = f"http://127.0.0.1:{caddy_port}"
    client = provider.register_client(f"{name}-{caddy_port}", public_url)
    secret_keys = [new_secret_key()]
    replicas: list[BffProcess] = []
    caddy: Caddy | None = None
    try:
        for replica in ("replica-a", "replica-b"):
            config = replica_config(
                public_url=public_url,
                provider=provider,
                client=client,
                api=api,
                echo_url=echo_url,
                store=redis.url,
                secret_keys=secret_keys,
                trusted_proxies=["127.0.0.1"],
            )
            replicas.append(new_replica(root / replica, config))
            replicas[-1].start()
        caddy = Caddy(root / "caddy", [f"127.0.0.1:{r.port}" for r in replicas], port=caddy_port)
        caddy.start()
        yield Cluster(caddy, (replicas[0], replicas[1]), redis, client)
    finally:
        if caddy is not None:
            caddy.stop()
        for process in replicas:
            process.stop()
        redis.stop()
