"""Real JWT login APIs for the token-API mode: SimpleJWT (Django REST framework) and
flask-jwt-extended, each a child process under waitress on a free loopback port.

`TokenApi` starts one (`tests/token_apis/`), waits until it answers, and reads its test-only
request counters. What differs between the two is in its `Flavour` (`SIMPLEJWT`, `FLASK_JWT`):
SimpleJWT takes the refresh token in the JSON body and rotates it (the old one is blacklisted),
flask-jwt-extended takes it as `Authorization: Bearer` and answers a new access token only.

Fixtures: `simplejwt_api` and `flask_jwt_api` (one server each for the session, counters reset
before each test), `token_api` (both, as a parameter), and `token_api_factory` for a server of a
test's own (another access-token lifetime, a padding claim), stopped after the test. Django or
Flask not installed: the tests that need them skip with the reason, except under `CI=true`,
where they fail, because CI must run them (`pip install -e '.[test]'` installs them).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

import httpx
import pytest

from tests.support.processes import AnsweringServer, free_port
from tests.support.tools import missing_tool

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ACCESS_LIFETIME = 4
DEFAULT_REFRESH_LIFETIME = 3600
USERNAME = "alice"


@dataclass(frozen=True)
class Flavour:
    """One kind of test API: how it is run, its paths and the shape of its token exchanges."""

    name: str
    module: str
    """Run as `python -m <module>` from the repository root."""
    requires: tuple[str, ...]
    login_path: str
    refresh_path: str
    logout_path: str
    logout_method: str
    me_path: str
    access_field: str
    refresh_field: str
    refresh_token_in: Literal["body", "bearer"]
    """Where the refresh (and logout) request carries the refresh token: the JSON body's
    `refresh` member, or `Authorization: Bearer`."""
    rotates: bool
    """A refresh answers a new refresh token and the old one is refused from then on."""


SIMPLEJWT = Flavour(
    name="simplejwt",
    module="tests.token_apis.simplejwt_project.serve",
    requires=("django", "rest_framework", "rest_framework_simplejwt", "waitress"),
    login_path="/api/token/",
    refresh_path="/api/token/refresh/",
    logout_path="/api/token/blacklist/",
    logout_method="POST",
    me_path="/api/me/",
    access_field="access",
    refresh_field="refresh",
    refresh_token_in="body",
    rotates=True,
)
FLASK_JWT = Flavour(
    name="flask_jwt",
    module="tests.token_apis.flask_jwt_app",
    requires=("flask", "flask_jwt_extended", "waitress"),
    login_path="/auth/login",
    refresh_path="/auth/refresh",
    logout_path="/auth/logout",
    logout_method="DELETE",
    me_path="/api/me",
    access_field="access_token",
    refresh_field="refresh_token",
    refresh_token_in="bearer",
    rotates=False,
)
FLAVOURS = {flavour.name: flavour for flavour in (SIMPLEJWT, FLASK_JWT)}


class Tokens(NamedTuple):
    access: str
    refresh: str


def packages_or_skip(flavour: Flavour) -> None:
    missing = [name for name in flavour.requires if importlib.util.find_spec(name) is None]
    if missing:
        missing_tool(
            f"TOKEN-API TESTS NOT RUN: {', '.join(missing)} not installed (pip install -e '.[test]'); "
            f"the {flavour.name} test API cannot start"
        )


class TokenApi(AnsweringServer):
    """One test API process on `port`, its database (SimpleJWT) and log in `state_dir`.

    The user is `username` with `password` (random per server unless given: a test fixture)."""

    def __init__(
        self,
        flavour: Flavour,
        state_dir: Path,
        *,
        access_lifetime: int = DEFAULT_ACCESS_LIFETIME,
        refresh_lifetime: int = DEFAULT_REFRESH_LIFETIME,
        extra_claim_bytes: int = 0,
        password: str | None = None,
        port: int | None = None,
    ) -> None:
        packages_or_skip(flavour)
        self.flavour = flavour
        self.state_dir = state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = state_dir / f"{flavour.name}.log"
        self.access_lifetime = access_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.extra_claim_bytes = extra_claim_bytes
        self.username = USERNAME
        self.password = password or secrets.token_urlsafe(12)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.login_url = self.url + flavour.login_path
        self.refresh_url = self.url + flavour.refresh_path
        self.logout_url = self.url + flavour.logout_path
        self.me_url = self.url + flavour.me_path
        self._process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.url, timeout=10)

    # ------------------------------------------------------------------ process

    def start(self, timeout: float = 30) -> None:
        if self.running:
            return
        env = {
            **_inherited_environment(),
            "TOKEN_API_PORT": str(self.port),
            "TOKEN_API_DB_DIR": str(self.state_dir),
            "TOKEN_API_ACCESS_LIFETIME": str(self.access_lifetime),
            "TOKEN_API_REFRESH_LIFETIME": str(self.refresh_lifetime),
            "TOKEN_API_EXTRA_CLAIM_BYTES": str(self.extra_claim_bytes),
            "TOKEN_API_PASSWORD": self.password,
        }
        command = [sys.executable, "-m", self.flavour.module]
        self.launch(
            command,
            cwd=ROOT,
            env=env,
            name=f"{self.flavour.name} test API",
            ready_path="/test/counts",
            timeout=timeout,
            banner=f"== {' '.join(command)} on port {self.port}\n",
        )

    # ------------------------------------------------------------------ what the API saw

    def counts(self) -> dict[str, int]:
        """Requests per path (answered or refused) since the start or the last `reset()`."""
        return {
            str(path): int(count) for path, count in self._http.get("/test/counts").raise_for_status().json().items()
        }

    def reset(self) -> None:
        self._http.post("/test/reset").raise_for_status()

    # ------------------------------------------------------------------ the API's own endpoints

    def login(self) -> Tokens:
        """Log `username` in directly (not through the BFF)."""
        response = self._http.post(self.login_url, json={"username": self.username, "password": self.password})
        body = response.raise_for_status().json()
        return Tokens(body[self.flavour.access_field], body[self.flavour.refresh_field])

    def refresh(self, refresh_token: str) -> httpx.Response:
        """The API's refresh request for `refresh_token`, sent as the flavour wants it."""
        return self._send_refresh_token("POST", self.refresh_url, refresh_token)

    def logout(self, refresh_token: str) -> httpx.Response:
        """Revoke `refresh_token` at the API (SimpleJWT's blacklist, flask-jwt-extended's blocklist)."""
        return self._send_refresh_token(self.flavour.logout_method, self.logout_url, refresh_token)

    def _send_refresh_token(self, method: str, url: str, refresh_token: str) -> httpx.Response:
        if self.flavour.refresh_token_in == "body":
            return self._http.request(method, url, json={"refresh": refresh_token})
        return self._http.request(method, url, headers={"Authorization": f"Bearer {refresh_token}"})


def _inherited_environment() -> dict[str, str]:
    """The test process's environment, less a Django settings module of its own, if any."""
    return {name: value for name, value in os.environ.items() if name != "DJANGO_SETTINGS_MODULE"}


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (the tests' own look at a token)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def wait_until_expired(token: str, margin: float = 0.1) -> None:
    """Sleep until the JWT's `exp` has passed (the test APIs allow no leeway)."""
    exp: float = jwt_claims(token)["exp"]
    time.sleep(max(0.0, exp - time.time() + margin))


# ---------------------------------------------------------------------- fixtures


class TokenApiFactory(Protocol):
    def __call__(
        self,
        flavour: str,
        *,
        access_lifetime: int = DEFAULT_ACCESS_LIFETIME,
        refresh_lifetime: int = DEFAULT_REFRESH_LIFETIME,
        extra_claim_bytes: int = 0,
        password: str | None = None,
    ) -> TokenApi: ...


def _serving(api: TokenApi) -> Iterator[TokenApi]:
    try:
        api.start()
        yield api
    finally:
        api.close()


@pytest.fixture(scope="session")
def simplejwt_api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenApi]:
    """The session's SimpleJWT API (access tokens live `DEFAULT_ACCESS_LIFETIME` seconds)."""
    yield from _serving(TokenApi(SIMPLEJWT, tmp_path_factory.mktemp("simplejwt")))


@pytest.fixture(scope="session")
def flask_jwt_api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenApi]:
    """The session's flask-jwt-extended API (access tokens live `DEFAULT_ACCESS_LIFETIME` seconds)."""
    yield from _serving(TokenApi(FLASK_JWT, tmp_path_factory.mktemp("flask_jwt")))


@pytest.fixture
def simplejwt_api(simplejwt_api_server: TokenApi) -> TokenApi:
    """The session's SimpleJWT API, its counters reset for this test."""
    simplejwt_api_server.reset()
    return simplejwt_api_server


@pytest.fixture
def flask_jwt_api(flask_jwt_api_server: TokenApi) -> TokenApi:
    """The session's flask-jwt-extended API, its counters reset for this test."""
    flask_jwt_api_server.reset()
    return flask_jwt_api_server


@pytest.fixture(params=list(FLAVOURS))
def token_api(request: pytest.FixtureRequest) -> TokenApi:
    """Each of the session's APIs in turn (`simplejwt`, `flask_jwt`), counters reset."""
    api: TokenApi = request.getfixturevalue(f"{request.param}_api")
    return api


@pytest.fixture
def token_api_factory(tmp_path: Path) -> Iterator[TokenApiFactory]:
    """`make("simplejwt" | "flask_jwt", access_lifetime=2, extra_claim_bytes=..., ...)`: a started
    API of this test's own, stopped after it."""
    started: list[TokenApi] = []

    def make(
        flavour: str,
        *,
        access_lifetime: int = DEFAULT_ACCESS_LIFETIME,
        refresh_lifetime: int = DEFAULT_REFRESH_LIFETIME,
        extra_claim_bytes: int = 0,
        password: str | None = None,
    ) -> TokenApi:
        api = TokenApi(
            FLAVOURS[flavour],
            tmp_path / f"{flavour}-{len(started)}",
            access_lifetime=access_lifetime,
            refresh_lifetime=refresh_lifetime,
            extra_claim_bytes=extra_claim_bytes,
            password=password,
        )
        started.append(api)
        api.start()
        return api

    try:
        yield make
    finally:
        for api in started:
            api.close()
