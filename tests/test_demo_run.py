"""`bff demo` as a newcomer runs it: one subprocess, one port; login through the development
provider's login page with a plain HTTP client, the demo API through the BFF, a transparent
refresh after the access token's 2 seconds, logout."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bff.demo.run import build_demo, load_or_create_secret
from bff.errors import ConfigError
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[1]
CSRF = {"X-CSRF": "1"}
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


class DemoProcess:
    """`bff demo --access-ttl 2` as a subprocess on a free port; `restart()` keeps its data directory."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "data"
        self.stdout, self.stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        self.process: subprocess.Popen[bytes] | None = None

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def start(self) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("BFF_")}
        argv = [sys.executable, "-m", "bff", "demo", "--port", str(self.port), "--access-ttl", "2"]
        with self.stdout.open("ab") as out, self.stderr.open("ab") as err:
            self.process = subprocess.Popen(
                [*argv, "--data-dir", str(self.data_dir)], cwd=REPO, env=env, stdout=out, stderr=err
            )
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, f"bff demo exited early:\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"bff demo not ready:\n{self.output()}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # Ctrl+C: a clean shutdown
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoProcess]:
    running = DemoProcess(tmp_path)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def login(client: httpx.Client, username: str) -> httpx.Response:
    """Follow /bff/login to the provider's page, post its form, follow the redirects home."""
    page = client.get("/bff/login", params={"returnTo": "/"})
    assert page.status_code == 200
    assert page.url.path == "/idp/authorize"
    assert "not for production" in page.text
    transaction = re.search(r'name="transaction" value="([^"]+)"', page.text)
    assert transaction is not None
    home = client.post("/idp/authorize", data={"transaction": transaction[1], "username": username})
    assert home.status_code == 200
    assert [response.url.path for response in home.history] == ["/idp/authorize", "/bff/callback"]
    assert home.url.path == "/"
    return home


def test_demo_login_api_refresh_and_logout(demo: DemoProcess) -> None:
    with httpx.Client(base_url=demo.url, follow_redirects=True, timeout=10) as browser:
        bodies: list[str] = []
        browser.event_hooks["response"] = [lambda response: bodies.append(response.read().decode(errors="replace"))]
        assert 'id="todo-list"' in login(browser, "alice").text
        user = browser.get("/bff/user").json()
        assert user["sub"] == "alice"
        me = browser.get("/api/me", headers=CSRF)
        assert me.status_code == 200, me.text
        assert me.json()["sub"] == "alice"
        first_expiry = me.json()["tokenExpiresAt"]
        assert browser.post("/api/todos", json={"text": "before"}, headers=CSRF).status_code == 201

        time.sleep(3)  # the 2-second access token is gone: the BFF must refresh by itself
        added = browser.post("/api/todos", json={"text": "after"}, headers=CSRF)
        assert added.status_code == 201, added.text
        me = browser.get("/api/me", headers=CSRF)
        assert me.status_code == 200, me.text
        assert me.json()["tokenExpiresAt"] > first_expiry
        assert [todo["text"] for todo in browser.get("/api/todos", headers=CSRF).json()] == ["before", "after"]
        assert browser.get("/bff/user").json()["accessTokenExpiresAt"] > first_expiry

        logout = browser.post("/bff/logout", headers=CSRF)
        assert logout.status_code == 200
        assert browser.get(logout.json()["logoutUrl"]).url == httpx.URL(demo.url + "/")
        assert browser.get("/api/me", headers=CSRF).status_code == 401
        assert not [body for body in bodies if JWT.search(body)], "a token reached the client"

    assert "Open " + demo.url + "/" in demo.output()
    assert "not for production" in demo.output().lower()


def test_a_restart_keeps_the_session_and_its_refresh(demo: DemoProcess) -> None:
    with httpx.Client(base_url=demo.url, follow_redirects=True, timeout=10) as browser:
        login(browser, "grace")
        assert browser.get("/api/me", headers=CSRF).status_code == 200
        demo.restart()
        me = browser.get("/api/me", headers=CSRF)
        assert me.status_code == 200, me.text
        assert me.json()["sub"] == "grace"
        time.sleep(2.5)  # and the refresh token issued before the restart still works
        me = browser.get("/api/me", headers=CSRF)
        assert me.status_code == 200, me.text
    for name in ("demo-secret", "demo-idp-key.pem", "demo-idp-state.json"):
        assert stat.S_IMODE((demo.data_dir / name).stat().st_mode) == 0o600, name
    assert load_or_create_secret(demo.data_dir) == (demo.data_dir / "demo-secret").read_text().strip()


def test_vite_origin_becomes_the_public_url(tmp_path: Path) -> None:
    built = build_demo(
        host="0.0.0.0",
        port=8123,
        access_ttl=60,
        data_dir=tmp_path,
        environ={"BFF_PUBLIC_URL": "http://127.0.0.1:5173/"},
    )
    assert built.settings.public_url == "http://127.0.0.1:5173"
    assert built.settings.origins == ("http://127.0.0.1:5173", "http://127.0.0.1:8123")
    assert built.settings.oidc is not None
    assert built.settings.oidc.issuer == "http://127.0.0.1:8123/idp"  # the provider is not proxied
    assert built.settings.routes[0].upstream == "http://127.0.0.1:8123/demo-api"
    assert built.idp.metadata()["issuer"] == "http://127.0.0.1:8123/idp"


def test_a_malformed_public_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BFF_PUBLIC_URL"):
        build_demo(host="127.0.0.1", port=1, access_ttl=60, data_dir=tmp_path, environ={"BFF_PUBLIC_URL": "vite"})
