"""Token-API mode end to end: `bff serve` in front of the real SimpleJWT and flask-jwt-extended
APIs of `tests/token_apis/`, configured as README.md's "Token-API mode" prints it.

One BFF process per API and `token_storage` serves the whole module; each test resets the API's
request counters, which are the proof of what the BFF sent (SimpleJWT itself does not refuse a
refresh token two requests send at the same moment). Access tokens live 4 s and the BFF
refreshes 1 s before they expire: the tests wait that out. What the BFF holds for a session is
read with the BFF's own code (`create_app(...).sessions`), so each mode is read its own way.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from bff import create_app, load_settings
from bff.app import BffApp
from bff.tokenset import TokenSet
from tests.support.bff_process import BffProcess, new_secret_key
from tests.support.processes import free_port
from tests.support.readme_configs import readme_config
from tests.support.token_apis import FLAVOURS, TokenApi, jwt_claims

pytestmark = pytest.mark.integration

STORAGE_MODES = ["server", "cookie"]
"""The `token_storage` values every test runs under."""
REFRESH_SKEW = 1.0
CSRF = {"X-CSRF": "1"}
COOKIE = "bff"
"""The session cookie's name over http (README's examples keep the default)."""
WRONG_PASSWORD = "not-alices-password-4711"
CLAIMS = {"simplejwt": {"user_id": "1"}, "flask_jwt": {"sub": "1"}}
"""What `/bff/user` shows: SimpleJWT's access-token claims less the bookkeeping; for
flask-jwt-extended what README's `keep_claims` leaves."""
JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}")


@dataclass
class Served:
    """One BFF process in front of one API, and what the tests learnt that must never be logged."""

    api: TokenApi
    process: BffProcess
    reader: TestClient
    """An app of the same configuration in this process, to read the sessions the BFF holds."""
    secrets: set[str] = field(default_factory=set)

    @property
    def flavour(self) -> str:
        return self.api.flavour.name

    def browser(self) -> httpx.Client:
        return httpx.Client(base_url=self.process.url, headers=CSRF, timeout=30)

    def log_in(self, browser: httpx.Client, password: str | None = None) -> httpx.Response:
        password = self.api.password if password is None else password
        self.secrets.add(password)
        response = browser.post("/bff/login", json={"username": self.api.username, "password": password})
        self.secrets.update(value for value in browser.cookies.values() if value)
        # Server mode: the session id before the signature; cookie mode: the sealed part after the
        # chunk count. Either way the longer part is the secret one.
        parts = (part for value in browser.cookies.values() for part in value.split("."))
        self.secrets.update(part for part in parts if len(part) >= 16)
        return response

    def held(self, browser: httpx.Client) -> TokenSet:
        """The tokens the BFF holds for the browser's session."""
        app = self.reader.app
        assert isinstance(app, BffApp)
        assert self.reader.portal is not None
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
        session = self.reader.portal.call(app.sessions.load, [(b"cookie", cookie.encode())])
        assert session is not None, "the BFF holds no session for this browser"
        self.secrets.update(token for token in (session.tokens.access_token, session.tokens.refresh_token) if token)
        return session.tokens

    def me(self, browser: httpx.Client) -> httpx.Response:
        return browser.get(self.api.flavour.me_path)


@pytest.fixture(
    scope="module",
    params=[(flavour, mode) for flavour in FLAVOURS for mode in STORAGE_MODES],
    ids=lambda param: "-".join(param),
)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    flavour, mode = request.param
    api: TokenApi = request.getfixturevalue(f"{flavour}_api_server")
    workdir = tmp_path_factory.mktemp(f"bff-{flavour}-{mode}")
    port = free_port()
    config = readme_config(flavour, api_url=api.url)
    config.update(
        public_url=f"http://127.0.0.1:{port}",
        secret_keys=[new_secret_key()],
        session_store=f"sqlite:///{workdir / 'sessions.db'}",
        token_storage=mode,
    )
    config["token_api"]["refresh_skew"] = f"{REFRESH_SKEW:g}s"
    process = BffProcess(workdir, config, port=port, name=f"bff-{flavour}-{mode}")
    process.start()
    try:
        settings = load_settings({}, process.config_file)
        with TestClient(create_app(settings)) as reader:
            yield Served(api, process, reader)
    finally:
        process.stop()


@pytest.fixture
def bff(served: Served) -> Served:
    """The module's BFF for this API and mode, the API's counters reset for this test."""
    served.api.reset()
    return served


def wait_until_due(tokens: TokenSet, *, expired: bool = False) -> None:
    """Sleep until the BFF must refresh `tokens` (within the skew), or until they have expired."""
    exp: float = jwt_claims(tokens.access_token)["exp"]
    due = exp if expired else exp - REFRESH_SKEW
    time.sleep(max(0.0, due + 0.2 - time.time()))


def counts(bff: Served, *, login: int = 0, me: int = 0, refresh: int = 0, logout: int = 0) -> dict[str, int]:
    flavour = bff.api.flavour
    wanted = {
        flavour.login_path: login,
        flavour.me_path: me,
        flavour.refresh_path: refresh,
        flavour.logout_path: logout,
    }
    return {path: count for path, count in wanted.items() if count}


# ------------------------------------------------------------------------------------ logins


def test_login_answers_the_user_and_no_token(bff: Served) -> None:
    with bff.browser() as browser:
        response = bff.log_in(browser)

        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"sub", "sid", "claims", "createdAt", "expiresAt", "accessTokenExpiresAt", "logoutUrl"}
        assert (body["sub"], body["claims"], body["logoutUrl"]) == (
            "1",
            CLAIMS[bff.flavour],
            f"/bff/logout?sid={body['sid']}",
        )
        held = bff.held(browser)
        assert body["accessTokenExpiresAt"] == jwt_claims(held.access_token)["exp"]
        answer = response.text + repr(response.headers.multi_items())
        assert not JWT.search(answer.encode())
        assert held.access_token not in answer
        assert held.refresh_token
        assert held.refresh_token not in answer
        assert [header.split("=", 1)[0] for header in response.headers.get_list("set-cookie")] == [COOKIE]
        assert browser.get("/bff/user").json() == body
        assert bff.me(browser).status_code == 200
    assert bff.api.counts() == counts(bff, login=1, me=1)


def test_login_with_a_wrong_password_is_401_invalid_credentials(bff: Served) -> None:
    with bff.browser() as browser:
        response = bff.log_in(browser, WRONG_PASSWORD)

        assert response.status_code == 401
        assert response.json() == {"error": "invalid_credentials", "detail": "the login API refused the credentials"}
        assert response.headers.get_list("set-cookie") == []
        assert browser.get("/bff/user").status_code == 401
    assert bff.api.counts() == counts(bff, login=1)


# ---------------------------------------------------------------------------------- refreshes


def test_two_transparent_refreshes_in_a_row(bff: Served) -> None:
    with bff.browser() as browser:
        assert bff.log_in(browser).status_code == 200
        first = bff.held(browser)
        assert bff.me(browser).status_code == 200
        wait_until_due(first)
        assert bff.me(browser).status_code == 200
        second = bff.held(browser)
        wait_until_due(second)
        assert bff.me(browser).status_code == 200
        third = bff.held(browser)

    assert bff.api.counts() == counts(bff, login=1, me=3, refresh=2)
    assert len({first.access_token, second.access_token, third.access_token}) == 3
    if bff.api.flavour.rotates:
        # Each rotated refresh token was used once, and SimpleJWT blacklisted it after that use.
        assert len({first.refresh_token, second.refresh_token, third.refresh_token}) == 3
        assert first.refresh_token
        assert second.refresh_token
        assert bff.api.refresh(first.refresh_token).status_code == 401
        assert bff.api.refresh(second.refresh_token).status_code == 401
    else:
        assert first.refresh_token == second.refresh_token == third.refresh_token
        assert first.refresh_token
        assert bff.api.refresh(first.refresh_token).status_code == 200


def test_fifty_concurrent_requests_with_an_expired_token_cause_one_refresh(bff: Served) -> None:
    with bff.browser() as browser:
        assert bff.log_in(browser).status_code == 200
        stale = bff.held(browser)
        wait_until_due(stale, expired=True)
        cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())

        async def fire() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=50)
            headers = {**CSRF, "Cookie": cookie}
            async with httpx.AsyncClient(
                base_url=bff.process.url, headers=headers, limits=limits, timeout=60
            ) as client:
                return await asyncio.gather(*(client.get(bff.api.flavour.me_path) for _ in range(50)))

        statuses = [response.status_code for response in asyncio.run(fire())]
        # The browser itself, still with the pre-refresh cookie (cookie mode: the successor record
        # hands it the new tokens and cookie; server mode: the cookie names the refreshed record).
        assert bff.me(browser).status_code == 200
        fresh = bff.held(browser)

    assert statuses == [200] * 50
    assert bff.api.counts() == counts(bff, login=1, me=51, refresh=1)
    assert fresh.access_token != stale.access_token
    assert stale.refresh_token
    if bff.api.flavour.rotates:
        assert fresh.refresh_token != stale.refresh_token
        assert bff.api.refresh(stale.refresh_token).status_code == 401
    else:
        assert fresh.refresh_token == stale.refresh_token


# ------------------------------------------------------------------------------------- logout


def test_logout_revokes_the_refresh_token_at_the_api(bff: Served) -> None:
    with bff.browser() as browser:
        assert bff.log_in(browser).status_code == 200
        held = bff.held(browser)

        response = browser.post("/bff/logout")

        assert response.status_code == 200
        assert response.json() == {"logoutUrl": None}
        assert response.headers["set-cookie"].startswith(f"{COOKIE}=;")
        assert COOKIE not in browser.cookies
        assert browser.get("/bff/user").status_code == 401
        assert bff.me(browser).status_code == 401
    assert bff.api.counts() == counts(bff, login=1, logout=1)
    assert held.refresh_token
    assert bff.api.refresh(held.refresh_token).status_code == 401  # refused by the API itself


# --------------------------------------------------------------------------------- bff check


def bff_check(config_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bff", "check", "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )


def test_bff_check_reaches_the_api(bff: Served) -> None:
    result = bff_check(bff.process.config_file)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "bff: config: ok (1 routes, store sqlite)",
        f"bff: provider: ok (127.0.0.1:{bff.api.port})",
    ]
    assert bff.api.counts() == {bff.api.flavour.refresh_path: 1}  # the OPTIONS of ready()


def test_bff_check_with_the_api_down_says_so_in_one_line(bff: Served, tmp_path: Path) -> None:
    path = tmp_path / "bff.toml"
    down = f"http://127.0.0.1:{free_port()}"
    path.write_text(bff.process.config_file.read_text().replace(bff.api.url, down), encoding="utf-8")

    result = bff_check(path)

    assert result.returncode == 1
    assert result.stderr.splitlines() == ["bff: provider: token API unreachable at 127.0.0.1: ConnectError"]


# -------------------------------------------------------------------------------------- logs


def test_the_bff_log_holds_no_token_cookie_or_password(served: Served) -> None:
    """Runs last for each BFF (pytest keeps a module fixture's tests in file order)."""
    log = served.process.log_file.read_bytes()

    assert b"Login. sub: '1'" in log
    assert b"Access token refreshed." in log
    assert b"Login failed." in log
    assert not JWT.search(log)
    leaked = [f"{len(secret)} characters from {secret[:4]}" for secret in served.secrets if secret.encode() in log]
    assert leaked == []
    assert len(served.secrets) >= 10  # passwords, cookie values and tokens of every test before
