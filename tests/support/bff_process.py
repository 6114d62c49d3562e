"""`bff serve` as a real process for the integration tests.

`BffProcess` writes a `bff.toml` from keyword arguments, runs `python -m bff serve --config FILE
--port N [--workers W]` with stdout and stderr going to a log file (the log check of the
integration tests reads every such file), waits for `/healthz`, and can stop and restart the
process on the same port and with the same SQLite file (a restart keeps the sessions).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import free_port, log_tail, start_logged, stop_process, wait_until_ready

REPO = Path(__file__).resolve().parents[2]


def new_secret_key() -> str:
    return secrets.token_urlsafe(48)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: Mapping[str, Any]) -> str:
    """The subset of TOML `bff.toml` needs: scalars and lists at the top, tables, arrays of tables."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    arrays: list[tuple[str, Sequence[Mapping[str, Any]]]] = []
    for key, value in config.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
            arrays.append((key, value))
        else:
            lines.append(f"{key} = {toml_value(value)}")
    for key, table in tables:
        lines += ["", f"[{key}]"]
        lines += [f"{name} = {toml_value(value)}" for name, value in table.items()]
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{key}]]"]
            lines += [f"{name} = {toml_value(value)}" for name, value in item.items()]
    return "\n".join(lines) + "\n"


@dataclass
class BffProcess:
    """One `bff serve`. `config` is the whole bff.toml as a dict; `public_url` defaults to
    `http://127.0.0.1:<port>`."""

    workdir: Path
    config: dict[str, Any]
    port: int = field(default_factory=free_port)
    workers: int = 1
    name: str = "bff"
    log_level: str = "debug"
    """Debug by default: the log check then covers what an operator who turns logging up sees."""
    _process: subprocess.Popen[bytes] | None = None
    _starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.workdir / f"{self.name}.toml"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def sqlite_path(self) -> Path | None:
        store = str(self.config.get("session_store", ""))
        return Path(store.removeprefix("sqlite:///")) if store.startswith("sqlite:///") else None

    def start(self, timeout: float = 30) -> None:
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(to_toml(self.config), encoding="utf-8")
        env = {key: value for key, value in os.environ.items() if not key.startswith("BFF_")}
        env["PYTHONUNBUFFERED"] = "1"
        # The working tree's `bff`, whether or not it is pip-installed (the process runs in workdir).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "bff", "serve", "--config", str(self.config_file), "--port", str(self.port)]
        command += ["--log-level", self.log_level]
        if self.workers != 1:
            command += ["--workers", str(self.workers)]
        self._starts += 1
        banner = f"===== start {self._starts}: {' '.join(command[1:])}\n"
        self._process = start_logged(command, cwd=self.workdir, env=env, log_file=self.log_file, banner=banner)
        wait_until_ready(
            self._process,
            self._answers,
            name="bff serve",
            waiting_for="answer /healthz",
            timeout=timeout,
            stop=self.stop,
            log_tail=self.log_tail,
        )

    def _answers(self) -> bool:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        return False

    def stop(self) -> None:
        # The whole process group: with --workers, uvicorn's worker processes too.
        process, self._process = self._process, None
        stop_process(process, group=True)

    def kill(self) -> int:
        """`kill -9` the whole process group, as a crash or the OOM killer would: no shutdown, no
        goodbye to open connections. Returns the exit status (-9)."""
        process, self._process = self._process, None
        assert process is not None, f"{self.name} is not running"
        assert process.poll() is None, f"{self.name} is not running"
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=10)

    def restart(self, **config_changes: Any) -> None:
        """Stop, apply top-level config changes (e.g. `secret_keys=[...]`), start on the same port."""
        self.stop()
        self.config.update(config_changes)
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_file, lines)


def bff_config(
    *,
    port: int,
    issuer: str,
    client_id: str,
    client_secret: str,
    api_url: str,
    store: str,
    public_url: str | None = None,
    secret_keys: Sequence[str] | None = None,
    auth_method: str = "client_secret_basic",
    refresh_skew: str = "1s",
    oidc_extra: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A bff.toml for the integration tests: one `token = "user"` route `/api` to the JWT API."""
    config: dict[str, Any] = {
        "public_url": public_url or f"http://127.0.0.1:{port}",
        "secret_keys": list(secret_keys or [new_secret_key()]),
        "session_store": store,
        **(extra or {}),
        "oidc": {
            "issuer": issuer,
            "client_id": client_id,
            "client_secret": client_secret,
            "token_endpoint_auth_method": auth_method,
            "scopes": ["openid", "profile", "offline_access"],
            "refresh_skew": refresh_skew,
            **(oidc_extra or {}),
        },
        "routes": [{"path": "/api", "upstream": api_url, "token": "user"}],
    }
    return config


@contextlib.contextmanager
def running_bff(process: BffProcess) -> Iterator[BffProcess]:
    process.start()
    try:
        yield process
    finally:
        process.stop()
