"""Settings loading: TOML, environment overrides, and one clear line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bff.config import load_settings
from bff.errors import ConfigError
from bff.settings_reader import parse_bytesize, parse_duration

REPO = Path(__file__).resolve().parent.parent
KEY = "k" * 40
GOOD = f"""
secret_keys = ["{KEY}"]
public_url = "https://app.example.com"

[session]
idle_timeout = "15m"

[[routes]]
path = "/api"
upstream = "http://127.0.0.1:9000"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bff.toml"
    path.write_text(text)
    return path


def test_good_file_loads_with_defaults(tmp_path: Path) -> None:
    settings = load_settings({}, write(tmp_path, GOOD))
    assert settings.session.idle_timeout == 900
    assert settings.session.absolute_timeout == 90 * 86400
    assert settings.routes[0].token == "none"
    assert settings.session_cookie_name == "__Host-bff"
    assert settings.origins == ("https://app.example.com",)
    assert "k" not in repr(settings.secret_keys)


def test_environment_overrides_nested_keys_and_list_items(tmp_path: Path) -> None:
    environ = {
        "BFF_SESSION__SAME_SITE": "lax",
        "BFF_ROUTES__0__UPSTREAM": "http://127.0.0.1:9100",
        "BFF_ROUTES__0__READ_TIMEOUT": "2m",
        "BFF_ROUTES__1__PATH": "/files",
        "BFF_ROUTES__1__UPSTREAM": "http://127.0.0.1:9200",
        "BFF_ROUTES__1__STRIP_PREFIX": "true",
        "BFF_MAX_REPLAY_BODY": "64KiB",
        "BFF_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.2",
        "OTHER": "ignored",
    }
    settings = load_settings(environ, write(tmp_path, GOOD))
    assert settings.session.same_site == "lax"
    assert settings.routes[0].upstream == "http://127.0.0.1:9100"
    assert settings.routes[0].read_timeout == 120
    assert settings.routes[1].strip_prefix is True
    assert settings.max_replay_body == 64 * 1024
    assert settings.trusted_proxies == ("10.0.0.1", "10.0.0.2")


@pytest.mark.parametrize(("written", "read"), [("DELETE", "DELETE"), ("delete", "DELETE"), ("Post", "POST")])
def test_choices_match_whatever_their_case_and_read_as_declared(written: str, read: str) -> None:
    settings = load_settings(
        {
            "BFF_SECRET_KEYS": f'["{KEY}"]',
            "BFF_SESSION__SAME_SITE": "Lax",
            "BFF_TOKEN_API__LOGIN_URL": "http://127.0.0.1:8001/login",
            "BFF_TOKEN_API__REFRESH_URL": "http://127.0.0.1:8001/refresh",
            "BFF_TOKEN_API__LOGOUT_METHOD": written,
        }
    )
    assert settings.token_api is not None
    assert settings.token_api.logout_method == read
    assert settings.session.same_site == "lax"


def test_environment_alone_is_enough() -> None:
    settings = load_settings(
        {
            "BFF_SECRET_KEYS": f'["{KEY}", "{"o" * 32}"]',
            "BFF_OIDC__ISSUER": "https://idp.example",
            "BFF_OIDC__CLIENT_ID": "bff",
            "BFF_OIDC__CLIENT_SECRET": "s3cret",
        }
    )
    assert len(settings.secret_keys) == 2
    assert settings.oidc is not None
    assert str(settings.oidc.client_secret) == "s3cret"
    assert "s3cret" not in repr(settings)


BAD_FILES = [
    ("unknown top-level key", 'secret_keys = ["' + KEY + '"]\nsesion_store = "memory://"', "sesion_store: unknown key"),
    ("unknown nested key", 'secret_keys = ["' + KEY + '"]\n[session]\nidle = "1d"', "session.idle: unknown key"),
    ("missing secret", "", "secret_keys: missing (required)"),
    ("short secret", 'secret_keys = ["short"]', "secret_keys[0]: must be at least 32 characters"),
    (
        "route without upstream",
        'secret_keys = ["' + KEY + '"]\n[[routes]]\npath = "/api"',
        "routes[0].upstream: missing (required)",
    ),
    (
        "malformed upstream URL",
        'secret_keys = ["' + KEY + '"]\n[[routes]]\npath = "/api"\nupstream = "localhost:9000"',
        "routes[0].upstream: 'localhost:9000' is not an absolute http(s) URL",
    ),
    (
        "malformed port",
        'secret_keys = ["' + KEY + '"]\n[[routes]]\npath = "/api"\nupstream = "http://127.0.0.1:99999"',
        "routes[0].upstream: 'http://127.0.0.1:99999' has a malformed port",
    ),
    (
        "malformed duration",
        'secret_keys = ["' + KEY + '"]\n[session]\nidle_timeout = "3 weeks"',
        "session.idle_timeout: '3 weeks' is not a duration (expected e.g. 30s, 15m, 12h, 30d)",
    ),
    (
        "wrong choice",
        'secret_keys = ["' + KEY + '"]\n[session]\nsame_site = "none"',
        "session.same_site: 'none' is not one of strict, lax",
    ),
    (
        "wrong type",
        'secret_keys = ["' + KEY + '"]\n[[routes]]\npath = "/api"\nupstream = "http://a"\nstrip_prefix = "yes"',
        "routes[0].strip_prefix: expected true or false, got a string",
    ),
    (
        "user token without oidc",
        'secret_keys = ["' + KEY + '"]\n[[routes]]\npath = "/api"\nupstream = "http://a"\ntoken = "user"',
        "routes[0].token: 'user' needs a login source, an [oidc] or a [token_api] section",
    ),
    (
        "route under the BFF prefix",
        'secret_keys = ["' + KEY + '"]\n[[routes]]\npath = "/bff/x"\nupstream = "http://a"',
        "routes[0].path: '/bff/x' overlaps the BFF's own prefix '/bff'",
    ),
    (
        "route with trailing slash",
        'secret_keys = ["' + KEY + '"]\n[[routes]]\npath = "/api/"\nupstream = "http://a"',
        "routes[0].path: '/api/' must be a path prefix such as /api (no trailing slash)",
    ),
    ("empty key list", "secret_keys = []", "secret_keys: at least one key is required"),
    ("bad prefix", 'secret_keys = ["' + KEY + '"]\nprefix = "bff/"', "prefix: 'bff/' must be a path such as /bff"),
    (
        "bad anti-forgery header name",
        'secret_keys = ["' + KEY + '"]\ncsrf_header = "X CSRF"',
        "csrf_header: 'X CSRF' is not a valid header name",
    ),
    (
        "bad cookie name",
        'secret_keys = ["' + KEY + '"]\n[session]\ncookie_name = "bff;x"',
        "session.cookie_name: 'bff;x' is not a valid cookie name",
    ),
    (
        "timeouts not positive",
        'secret_keys = ["' + KEY + '"]\n[session]\nidle_timeout = 0',
        "session: idle_timeout and absolute_timeout must be positive",
    ),
    (
        "duplicate route",
        'secret_keys = ["' + KEY + '"]\n[[routes]]\npath = "/api"\nupstream = "http://a"\n'
        '[[routes]]\npath = "/api"\nupstream = "http://b"',
        "routes[1].path: '/api' is configured twice",
    ),
    (
        "pool of no connections",
        'secret_keys = ["' + KEY + '"]\n[[routes]]\npath = "/api"\nupstream = "http://a"\nmax_connections = 0',
        "routes[0].max_connections: must be at least 1",
    ),
    (
        "client token with a token API",
        'secret_keys = ["' + KEY + '"]\n[token_api]\nlogin_url = "http://a/login"\nrefresh_url = "http://a/refresh"\n'
        '[[routes]]\npath = "/api"\nupstream = "http://a"\ntoken = "client"',
        "routes[0].token: 'client' needs an [oidc] section (client credentials)",
    ),
    (
        "two login sources",
        'secret_keys = ["' + KEY + '"]\n[token_api]\nlogin_url = "http://a/login"\nrefresh_url = "http://a/refresh"\n'
        '[oidc]\nissuer = "https://idp.example"\nclient_id = "bff"\nclient_secret = "s"',
        "token_api: choose one login source, [oidc] or [token_api], not both",
    ),
    (
        "auth-request mode with tokens in the cookie",
        'secret_keys = ["' + KEY + '"]\nauth_request = true\ntoken_storage = "cookie"',
        'auth_request: needs token_storage = "server" (edges drop the auth answer\'s Set-Cookie)',
    ),
    (
        "oidc without secret",
        'secret_keys = ["' + KEY + '"]\n[oidc]\nissuer = "https://idp.example"\nclient_id = "bff"',
        "oidc.client_secret: missing (required for a confidential client)",
    ),
    (
        "bad store URL",
        'secret_keys = ["' + KEY + '"]\nsession_store = "postgres://x"',
        "session_store: 'postgres://x' must start with memory://, sqlite:///, redis://, rediss://, "
        "redis+sentinel:// or redis+cluster://",
    ),
    (
        "sentinel URL without a master name, password not shown",
        'secret_keys = ["' + KEY + '"]\nsession_store = "redis+sentinel://:hunter2@10.0.0.1:26379"',
        "session_store: 'redis+sentinel://***@10.0.0.1:26379' needs the master's name and at most a database "
        "number after it; expected redis+sentinel://[[user]:password@]host:port[,host:port...]/<master-name>[/<db>]",
    ),
    (
        "cluster URL with a database",
        'secret_keys = ["' + KEY + '"]\nsession_store = "redis+cluster://10.0.0.1:7000,10.0.0.2:7000/1"',
        "session_store: 'redis+cluster://10.0.0.1:7000,10.0.0.2:7000/1' has a path, but Redis Cluster has only "
        "database 0; expected redis+cluster://[[user]:password@]host:port[,host:port...]/",
    ),
    ("not TOML", "secret_keys = [", "config file"),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_file_names_the_key_and_the_problem(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, write(tmp_path, text))
    assert any(problem.startswith(expected) for problem in caught.value.problems), caught.value.problems


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    text = 'secret_keys = ["' + KEY + '"]\nfoo = 1\n[session]\nidle_timeout = "x"\n[[routes]]\npath = "/a"'
    with pytest.raises(ConfigError) as caught:
        load_settings({}, write(tmp_path, text))
    assert len(caught.value.problems) == 3


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({}, tmp_path / "nope.toml")
    assert caught.value.problems == [f"config file {str(tmp_path / 'nope.toml')!r}: not found"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("12h", 43200), ("30d", 2592000), ("250ms", 0.25), (5, 5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "size"), [("512", 512), ("64KiB", 65536), ("1MiB", 1048576), (10, 10)])
def test_sizes(text: str, size: int) -> None:
    assert parse_bytesize(text) == size


@pytest.mark.parametrize("command", ["check", "serve"])
def test_cli_exits_2_with_one_line_per_problem_and_no_traceback(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, 'secret_keys = ["short"]\n[[routes]]\npath = "/api"\nupstream = "ftp://x"')
    result = subprocess.run(
        [sys.executable, "-m", "bff", command, "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "bff: config: routes[0].upstream: 'ftp://x' is not an absolute http(s) URL",
        "bff: config: secret_keys[0]: must be at least 32 characters",
    ]


def test_cli_check_accepts_a_good_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bff", "check", "--config", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "config: ok" in result.stdout
