"""A real `redis-server` for the store tests, on a free loopback port, with no persistence.

`RedisServer` starts and stops one server (`stop()` then `start()` brings it back on the same
port, for outage tests). The `redis_server` fixture is one server for the whole session; tests
keep apart by key prefix, not by flushing. redis-server missing: the tests that need it skip
with the reason, except under `CI=true`, where they fail, because CI must run them.
`BFF_TEST_REDIS_SERVER` names another executable.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.processes import free_port
from tests.support.tools import find_tool

REDIS_SERVER_CANDIDATES = ("redis-server", "/usr/bin/redis-server", "/usr/local/bin/redis-server")


def redis_server_or_skip() -> str:
    """Path of `redis-server` (or of `$BFF_TEST_REDIS_SERVER`)."""
    return find_tool(
        REDIS_SERVER_CANDIDATES,
        "REDIS TESTS NOT RUN: redis-server is not installed (apt-get install redis-server); "
        "the Redis store is untested in this run",
        override_variable="BFF_TEST_REDIS_SERVER",
    )


class RedisServer:
    def __init__(self, executable: str, directory: Path, port: int | None = None, args: Sequence[str] = ()) -> None:
        self.executable = executable
        self.directory = directory
        self.port = port or free_port()
        self.args = list(args)
        """More command-line options (`--cluster-enabled yes`, `--replicaof ...`)."""
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """A server that keeps nothing on disk."""
        return [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--daemonize",
            "no",
            *self.args,
        ]

    def start(self, timeout: float = 10.0) -> None:
        self._process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self._process.returncode}: {stderr}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash (no goodbye to replicas or clients)."""
        if self._process is not None:
            self._process.kill()
        self.stop()

    def stop(self) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole test session."""
    server = RedisServer(redis_server_or_skip(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
