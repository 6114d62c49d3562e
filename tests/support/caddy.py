"""Debian's `caddy` in front of one or several `bff serve` replicas, for the deployment tests.

`Caddy` runs the repository's own `Caddyfile`, unchanged, the way production does: with its
environment variables. `CADDY_SITE` is a free `127.0.0.1` port (`https://` with `tls=True`, else
`http://`, where Caddy ignores `tls`), `CADDY_UPSTREAMS` the replicas. `CADDY_BIND=127.0.0.1`,
`CADDY_ADMIN=off` and a free `CADDY_HTTP_PORT` (where an https site's redirect listener goes)
keep several Caddys, and other programs' sockets, from colliding on a wildcard port,
`localhost:2019` and `:80`. The certificate comes from Caddy's local CA (the file's
`tls internal`), which the file never installs into a trust store; `ssl_context()` trusts that CA,
as a browser that trusts the site would.

Caddy's runtime log (the file has no access log) goes to `caddy.log` in the work directory. HOME
and the XDG directories point there too, so Caddy's storage (its CA, certificates, autosaved
config) stays in it.

caddy missing: `caddy_or_skip()` skips with a loud reason, and under `CI=true` fails instead,
because CI must run these tests. `BFF_TEST_CADDY` names another executable.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import free_port, log_tail, start_logged, stop_process, wait_until_ready
from tests.support.tools import find_tool

CADDY_CANDIDATES = ("caddy", "/usr/bin/caddy", "/usr/local/bin/caddy")
CADDYFILE = Path(__file__).resolve().parents[2] / "Caddyfile"
"""The repository's Caddyfile: what the README tells an operator to run."""


def caddy_or_skip() -> str:
    """Path of `caddy` (or of `$BFF_TEST_CADDY`)."""
    return find_tool(
        CADDY_CANDIDATES,
        "DEPLOYMENT TESTS NOT RUN: caddy is not installed (apt-get install caddy); "
        "the deployment behind Caddy is untested in this run",
        override_variable="BFF_TEST_CADDY",
    )


def adapt(executable: str, environment: Mapping[str, str]) -> dict[str, Any]:
    """The JSON config `caddy adapt` makes of the repository's Caddyfile under `environment`."""
    command = [executable, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"]
    adapted = subprocess.run(command, env=dict(environment), capture_output=True, check=True, timeout=30)
    config: dict[str, Any] = json.loads(adapted.stdout)
    return config


@dataclass
class Caddy:
    """One `caddy run --config Caddyfile` for the site `127.0.0.1:<port>`, reverse-proxying to
    `upstreams` ("127.0.0.1:8000"); with another `caddyfile`, whatever that file says (it must
    answer `/healthz` at `url`)."""

    workdir: Path
    upstreams: Sequence[str]
    port: int = field(default_factory=free_port)
    tls: bool = False
    http_port: int = field(default_factory=free_port)
    """Caddy's `http_port`: with `tls`, its http->https redirect listens there (not on :80)."""
    executable: str = field(default_factory=caddy_or_skip)
    caddyfile: Path = CADDYFILE
    """The file `caddy run` reads: the repository's, or one a test wrote (the README's examples)."""
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The public URL: what the BFF's `public_url` must be."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.workdir / "caddy.log"

    @property
    def ca_file(self) -> Path:
        """Root certificate of Caddy's local CA (exists once Caddy has started with `tls=True`)."""
        return self.workdir / "xdg-data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def environment(self) -> dict[str, str]:
        """What `caddy run` gets: PATH, the work directory as HOME and XDG dirs, and the
        Caddyfile's variables."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "XDG_DATA_HOME": str(self.workdir / "xdg-data"),
            "XDG_CONFIG_HOME": str(self.workdir / "xdg-config"),
            "CADDY_SITE": self.url,
            "CADDY_UPSTREAMS": " ".join(self.upstreams),
            "CADDY_BIND": "127.0.0.1",
            "CADDY_ADMIN": "off",
            "CADDY_HTTP_PORT": str(self.http_port),
        }

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts Caddy's local CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def start(self, timeout: float = 20) -> None:
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [self.executable, "run", "--config", str(self.caddyfile), "--adapter", "caddyfile"]
        self._process = start_logged(command, cwd=self.workdir, env=self.environment(), log_file=self.log_file)
        wait_until_ready(
            self._process,
            self._answers,
            name="caddy",
            waiting_for="proxy /healthz",
            timeout=timeout,
            stop=self.stop,
            log_tail=self.log_tail,
        )

    def _answers(self) -> bool:
        """True once `/healthz` goes through Caddy to a replica (over verified TLS with `tls`)."""
        if self.tls and not self.ca_file.exists():
            return False
        verify: ssl.SSLContext | bool = self.ssl_context() if self.tls else False
        with contextlib.suppress(httpx.TransportError, ssl.SSLError):
            return httpx.get(f"{self.url}/healthz", verify=verify, timeout=2).status_code == 200
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process, group=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_file, lines)


@contextlib.contextmanager
def running_caddy(caddy: Caddy) -> Iterator[Caddy]:
    caddy.start()
    try:
        yield caddy
    finally:
        caddy.stop()
