"""Servers the tests run as child processes, with their output appended to a log file.

`free_port` picks a loopback port for one, `start_logged` starts it (in its own session by
default, so that `stop_process(..., group=True)` ends its workers too), `wait_until_ready` polls it and fails with
the end of its log when it exits or stays silent, `log_tail` reads that end. `AnsweringServer` is
the start-and-wait-for-an-answer of an HTTP server (`OidcProvider`, `TokenApi`); `BffProcess`
and `Caddy` keep their own readiness checks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's choice) on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_logged(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_file: Path,
    banner: str = "",
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """`command` with stdout and stderr appended to `log_file` (after `banner`, if any)."""
    with log_file.open("ab") as log:
        if banner:
            log.write(banner.encode())
            log.flush()
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=new_session
        )


def wait_until_ready(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    name: str,
    waiting_for: str,
    timeout: float,
    stop: Callable[[], None],
    log_tail: Callable[[], str],
) -> None:
    """Poll `ready()` until it is true; raise with the log's end if the process exits first, or
    stop it and raise when `timeout` seconds pass ("{name} did not {waiting_for} within ...")."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log_tail()}")
        if ready():
            return
        if time.monotonic() > deadline:
            stop()
            raise RuntimeError(f"{name} did not {waiting_for} within {timeout}s:\n{log_tail()}")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen[bytes] | None, *, group: bool = False, timeout: float = 10.0) -> None:
    """SIGTERM, SIGKILL after `timeout` seconds; with `group`, to the process's whole group (a
    server's worker processes too: the process must lead a session of its own)."""
    if process is None or process.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)

    send(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout=5)


def log_tail(log_file: Path, lines: int) -> str:
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class AnsweringServer:
    """An HTTP server in a child process, its output in `log_file`, ready once `GET ready_path`
    on `_http` answers 200. Subclasses set the attributes below (and `stop_timeout`, how long a
    SIGTERM may take before SIGKILL)."""

    log_file: Path
    _process: subprocess.Popen[bytes] | None
    _http: httpx.Client
    stop_timeout: float = 10.0
    _own_group = True  # launched as a session leader: stopping signals its worker processes too

    def launch(
        self,
        command: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        name: str,
        ready_path: str,
        timeout: float,
        banner: str = "",
        new_session: bool = True,
    ) -> None:
        """`start_logged(command, ...)`, then wait until the server answers (see `wait_until_ready`)."""
        self._own_group = new_session
        self._process = start_logged(
            command, cwd=cwd, env=env, log_file=self.log_file, banner=banner, new_session=new_session
        )
        wait_until_ready(
            self._process,
            lambda: self._answers(ready_path),
            name=name,
            waiting_for="answer",
            timeout=timeout,
            stop=self.stop,
            log_tail=self.log_tail,
        )

    def _answers(self, path: str) -> bool:
        with contextlib.suppress(httpx.TransportError):
            return self._http.get(path).status_code == 200
        return False

    def stop(self) -> None:
        """Stop the process (what it keeps on disk stays); the port stops answering at once."""
        process, self._process = self._process, None
        stop_process(process, group=self._own_group, timeout=self.stop_timeout)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The running server's process id (the benchmark pins it to a CPU)."""
        if self._process is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return self._process.pid

    def close(self) -> None:
        self.stop()
        self._http.close()

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_file, lines)
