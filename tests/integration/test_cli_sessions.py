"""`bff sessions list|revoke` as an operator runs them, beside a running `bff serve` logged in
through the real provider: on SQLite and on a real redis-server, a revoked user's next proxied
request is 401 while everyone else stays signed in."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.oidc_harness import Bff, Run, user_name
from tests.integration.oidc_helpers import leaks, logged_in, secret_fragments
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"


def bff_sessions(bff: Bff, *args: str) -> subprocess.CompletedProcess[str]:
    """`bff sessions ...` with the serving process's own bff.toml, as a separate process."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("BFF_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "bff", "sessions", *args, "--config", str(bff.process.config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=bff.process.workdir,
        env=env,
        check=False,
    )


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return "sqlite"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url[: -len("/0")] + "/3"  # a database of its own: the BFF's keys use the "bff:" prefix


def test_revoke_sub_ends_that_users_sessions_at_their_next_request(
    run: Run, new_bff: Callable[..., Bff], store: str, request: pytest.FixtureRequest
) -> None:
    bff = new_bff("cli-revoke", store=store)
    user, other = user_name(request), user_name(request, "-other")
    laptop = logged_in(run, bff, user, user_agent=CHROME)
    phone = logged_in(run, bff, user, user_agent="integration-phone")
    bystander = logged_in(run, bff, other)
    for browser in (laptop, phone, bystander):
        assert browser.api("GET", f"{bff.url}/api/before").status_code == 200

    listed = bff_sessions(bff, "list", "--sub", user, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert sorted((row["sub"], row["device"]) for row in rows) == [
        (user, "Chrome 126 on Linux"),
        (user, "Unknown device"),
    ]
    own_handles = {laptop.get(f"{bff.url}/bff/user").json()["sid"], phone.get(f"{bff.url}/bff/user").json()["sid"]}
    assert {row["handle"] for row in rows} == own_handles
    table = bff_sessions(bff, "list")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    columns = ["HANDLE", "SUB", "PROVIDER SID", "CREATED", "LAST USED", "EXPIRES", "DEVICE"]
    assert re.split(r" {2,}", header) == columns
    assert sorted(line[:12] for line in lines if f" {user} " in line) == sorted(h[:12] for h in own_handles)

    revoked = bff_sessions(bff, "revoke", "--sub", user)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"bff: sessions: 2 ended (sub '{user}'): ")
    for browser in (laptop, phone):
        response = browser.api("GET", f"{bff.url}/api/after")
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "not_authenticated"
    assert bystander.api("GET", f"{bff.url}/api/after").status_code == 200
    again = bff_sessions(bff, "revoke", "--sub", user)
    assert again.returncode == 1
    assert again.stdout == f"bff: sessions: 0 ended (sub '{user}'): no live session matched\n"

    outputs = [
        (f"bff sessions ({name})", (r.stdout + r.stderr).encode()) for name, r in [("list", listed), ("table", table)]
    ]
    assert not leaks(outputs, secret_fragments(run))


def test_revoke_handle_prefix_from_the_table_ends_one_device(
    run: Run, new_bff: Callable[..., Bff], request: pytest.FixtureRequest
) -> None:
    bff = new_bff("cli-handle")
    user = user_name(request)
    laptop = logged_in(run, bff, user, user_agent=CHROME)
    phone = logged_in(run, bff, user, user_agent="integration-phone")
    handle = phone.get(f"{bff.url}/bff/user").json()["sid"]
    revoked = bff_sessions(bff, "revoke", "--handle", handle[:12])
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith(f"bff: sessions: 1 ended (handle '{handle[:12]}'): ")
    assert phone.api("GET", f"{bff.url}/api/after").status_code == 401
    assert laptop.api("GET", f"{bff.url}/api/after").status_code == 200
