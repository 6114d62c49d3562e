"""Debian's `nginx` (`nginx-light` has the `auth_request` module) in front of a BFF, for the
deployment tests of the README's auth-request example.

`Nginx` wraps `server` (the directives of one `server { }` block, e.g. the README's `location`s
with their addresses moved) in a minimal main configuration of its own: a loopback `listen`, the
pid file, logs and temporary directories in the work directory (nothing under /var), no daemon
and no master process (one process the test starts and stops; as root a master would hand the
work to `nobody`, who cannot write into the test's directory).

nginx missing: `nginx_or_skip()` skips with a loud reason, and under `CI=true` fails instead,
because CI must run these tests. `BFF_TEST_NGINX` names another executable.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.processes import AnsweringServer, free_port
from tests.support.tools import find_tool

# Debian puts nginx in /usr/sbin, which is not on a normal user's PATH.
NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx", "/usr/local/sbin/nginx")


def nginx_or_skip() -> str:
    """Path of `nginx` (or of `$BFF_TEST_NGINX`)."""
    return find_tool(
        NGINX_CANDIDATES,
        "NGINX DEPLOYMENT TESTS NOT RUN: nginx is not installed (apt-get install nginx-light); "
        "the README's nginx auth_request example is untested in this run",
        override_variable="BFF_TEST_NGINX",
    )


class Nginx(AnsweringServer):
    """One `nginx -c nginx.conf` serving `server` at `http://127.0.0.1:<port>`; ready once
    `/healthz` goes through it (to the BFF)."""

    def __init__(self, workdir: Path, server: str, *, port: int | None = None, executable: str | None = None) -> None:
        self.workdir = workdir
        self.server = server
        self.port = port or free_port()
        self.executable = executable or nginx_or_skip()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = workdir / "nginx.log"
        self._process = None
        self._http = httpx.Client(base_url=self.url, timeout=2)

    def configuration(self) -> str:
        temp = self.workdir / "temp"
        temp_paths = "\n".join(
            f"    {kind}_temp_path {temp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            "daemon off;\n"
            "master_process off;\n"
            f"pid {self.workdir / 'nginx.pid'};\n"
            f"error_log {self.log_file} info;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {self.workdir / 'access.log'};\n"
            f"{temp_paths}\n"
            "    server {\n"
            f"        listen 127.0.0.1:{self.port};\n"
            f"{self.server}"
            "    }\n"
            "}\n"
        )

    def start(self, timeout: float = 20) -> None:
        if self.running:
            return
        (self.workdir / "temp").mkdir(parents=True, exist_ok=True)
        config = self.workdir / "nginx.conf"
        config.write_text(self.configuration(), encoding="utf-8")
        # -e: the error log before the configuration is read (else /var/log/nginx/error.log).
        command = [self.executable, "-p", str(self.workdir), "-c", str(config), "-e", str(self.log_file)]
        self.launch(command, cwd=self.workdir, env={}, name="nginx", ready_path="/healthz", timeout=timeout)
