"""Servers the tests run as child processes, with their output appended to a log file.

`free_port` picks a loopback port for one, `start_logged` starts it (in its own session by
default, so that `stop_process(..., group=True)` ends its workers too), `wait_until_ready` polls it and fails with
the end of its log when it exits or stays silent, `log_tail` reads that end. `BffProcess`,
`Caddy` and `OidcProvider` keep their own commands and readiness checks.
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
