"""What the deployment tests build: a replica's bff.toml, a replica process, and a `redis-server`
that keeps its data across a restart (append-only file in its own directory)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from tests.support.bff_process import BffProcess, bff_config
from tests.support.jwt_api import JwtApi
from tests.support.oidc_provider import Client, OidcProvider
from tests.support.processes import free_port
from tests.support.redis_server import RedisServer


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
