"""Debian's `caddy` in front of one or several `bff serve` replicas, for the deployment tests.

`Caddy` writes a Caddyfile like the repository's own `Caddyfile` (`reverse_proxy` to the replicas
with `flush_interval -1`, `lb_policy round_robin` and `health_uri /healthz`), but for a test: the
admin endpoint off, no access log, no automatic HTTPS redirects, listening only on a free
`127.0.0.1` port. With `tls=True` the site is `https://` with a certificate from Caddy's own local
CA (`tls internal`, kept in the work directory and never installed into a trust store);
`ssl_context()` trusts that CA, as a browser that trusts the site would.

Caddy's runtime log (not an access log) goes to `caddy.log` in the work directory. HOME and the XDG
directories point there too, so nothing is written outside it.

caddy missing: `caddy_or_skip()` skips with a loud reason, and under `CI=true` fails instead,
because CI must run these tests. `BFF_TEST_CADDY` names another executable.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.processes import free_port, log_tail, start_logged, stop_group, wait_until_ready
from tests.support.tools import find_tool

CADDY_CANDIDATES = ("caddy", "/usr/bin/caddy", "/usr/local/bin/caddy")


def caddy_or_skip() -> str:
    """Path of `caddy` (or of `$BFF_TEST_CADDY`)."""
    return find_tool(
        CADDY_CANDIDATES,
        "DEPLOYMENT TESTS NOT RUN: caddy is not installed (apt-get install caddy); "
        "the deployment behind Caddy is untested in this run",
        override_variable="BFF_TEST_CADDY",
    )


@dataclass
class Caddy:
    """One `caddy run` on `127.0.0.1:<port>`, reverse-proxying to `upstreams` ("127.0.0.1:8000")."""

    workdir: Path
    upstreams: Sequence[str]
    port: int = field(default_factory=free_port)
    tls: bool = False
    health_uri: str | None = "/healthz"
    executable: str = field(default_factory=caddy_or_skip)
    _process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The public URL: what the BFF's `public_url` must be."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def caddyfile(self) -> Path:
        return self.workdir / "Caddyfile"

    @property
    def log_file(self) -> Path:
        return self.workdir / "caddy.log"

    @property
    def ca_file(self) -> Path:
        """Root certificate of Caddy's local CA (exists once Caddy has started with `tls=True`)."""
        return self.workdir / "data" / "pki" / "authorities" / "local" / "root.crt"

    def caddyfile_text(self) -> str:
        global_options = [
            "admin off",
            # No redirect listener on :80; with TLS the certificate is still managed (tls internal).
            "auto_https disable_redirects" if self.tls else "auto_https off",
            f"storage file_system {self.workdir / 'data'}",
            "servers {",
            "\tprotocols h1 h2",  # no HTTP/3 (UDP) listener in tests
            "}",
        ]
        if self.tls:
            global_options += ["local_certs", "skip_install_trust"]
        proxy_options = ["flush_interval -1", "lb_policy round_robin"]
        if self.health_uri:
            proxy_options += [f"health_uri {self.health_uri}", "health_interval 5s"]
        site = [
            "bind 127.0.0.1",
            *(["tls internal"] if self.tls else []),
            f"reverse_proxy {' '.join(self.upstreams)} {{",
            *(f"\t{option}" for option in proxy_options),
            "}",
        ]
        lines = [
            "# Written by tests/support/caddy.py. No `log` directive: no access log.",
            "{",
            *(f"\t{line}" for line in global_options),
            "}",
            "",
            f"{self.url} {{",
            *(f"\t{line}" for line in site),
            "}",
        ]
        return "\n".join(lines) + "\n"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts Caddy's local CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def start(self, timeout: float = 20) -> None:
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.caddyfile.write_text(self.caddyfile_text(), encoding="utf-8")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "XDG_DATA_HOME": str(self.workdir / "xdg-data"),
            "XDG_CONFIG_HOME": str(self.workdir / "xdg-config"),
        }
        command = [self.executable, "run", "--config", str(self.caddyfile), "--adapter", "caddyfile"]
        self._process = start_logged(command, cwd=self.workdir, env=env, log_file=self.log_file)
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
        stop_group(process)

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
