"""`bff sessions list|revoke` in-process (`cli.main`) against the stores a config names: SQLite
in `tmp_path` and a real redis-server (database 2, emptied per test); cookie mode's records; the
exit codes and messages of every refusal."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bff.admin import format_table, format_time
from bff.cli import main
from bff.config import Settings, load_settings
from bff.cookie_sessions import CookieSessions
from bff.cookies import CookieCodec
from bff.login import LoginResult
from bff.server_sessions import ServerSessions
from bff.session import Session
from bff.session_record import encode_record
from bff.stores import open_store
from bff.tokenset import TokenSet
from tests.support.redis_server import RedisServer

SECRET = "a-secret-key-of-at-least-32-characters"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0"
TOKENS = TokenSet(access_token="access-token-never-printed", refresh_token="refresh-token-never-printed")


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sessions.db'}"
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    url = server.url[: -len("/0")] + "/2"  # a database of its own: the CLI's store uses the "bff:" prefix
    _flush(url)
    yield url
    _flush(url)


def _flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


def write_config(tmp_path: Path, store_url: str, *, token_storage: str = "server") -> Path:
    path = tmp_path / "bff.toml"
    path.write_text(
        f'secret_keys = ["{SECRET}"]\nsession_store = "{store_url}"\ntoken_storage = "{token_storage}"\n'
        '[oidc]\nissuer = "https://idp.example.com"\nclient_id = "bff"\nclient_secret = "s"\n',
        encoding="utf-8",
    )
    return path


def settings_of(config: Path) -> Settings:
    return load_settings({}, str(config))


def log_in(config: Path, logins: list[tuple[str, str | None, str]], *, at: float) -> list[Session]:
    """Sessions created at `at` for (sub, provider sid, user agent), the way the BFF creates them."""
    settings = settings_of(config)

    async def create() -> list[Session]:
        store = open_store(settings.session_store)
        await store.open()
        kind = CookieSessions if settings.token_storage == "cookie" else ServerSessions
        sessions = kind(store, CookieCodec(settings), settings.session, clock=lambda: at)
        created = []
        for sub, sid, agent in logins:
            login = LoginResult(sub=sub, provider_sid=sid, claims={"sub": sub}, tokens=TOKENS)
            session, _ = await sessions.create(login, [(b"user-agent", agent.encode())])
            created.append(session)
        await store.close()
        return created

    return asyncio.run(create())


def bff(*args: str, config: Path) -> list[str]:
    return ["sessions", *args, "--config", str(config)]


# -- list -------------------------------------------------------------------------------------


def test_format_time_is_utc_to_the_second() -> None:
    assert format_time(1_800_000_000.7) == "2027-01-15T08:00:00Z"


def test_format_table_aligns_columns_and_neutralises_terminal_escapes() -> None:
    assert format_table([["abc", "alice\x1b[31m", "-", "t1", "t2", "t3", "Chrome 1 on Linux"]]).splitlines() == [
        "HANDLE  SUB         PROVIDER SID  CREATED  LAST USED  EXPIRES  DEVICE",
        "abc     alice?[31m  -             t1       t2         t3       Chrome 1 on Linux",
    ]


def test_list_shows_every_live_session_as_an_aligned_table(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, store_url)
    at = float(int(time.time()) - 100)
    [laptop] = log_in(config, [("alice", "sid-1", CHROME)], at=at)
    [phone] = log_in(config, [("bob", None, FIREFOX)], at=at + 30)
    [later] = log_in(config, [("alice", "sid-2", "integration-browser")], at=at + 60)
    assert main(bff("list", config=config)) == 0
    t0, t30, t60 = (format_time(at + offset) for offset in (0, 30, 60))
    e0, e30, e60 = (format_time(at + offset + 30 * 86400) for offset in (0, 30, 60))  # the idle end comes first
    assert capsys.readouterr().out.splitlines() == [
        "HANDLE        SUB    PROVIDER SID  CREATED               LAST USED             EXPIRES               DEVICE",
        f"{later.key[:12]}  alice  sid-2         {t60}  {t60}  {e60}  Unknown device",
        f"{phone.key[:12]}  bob    -             {t30}  {t30}  {e30}  Firefox 127 on Windows",
        f"{laptop.key[:12]}  alice  sid-1         {t0}  {t0}  {e0}  Chrome 126 on Linux",
    ]


def test_list_json_has_full_handles_and_never_a_secret(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, store_url)
    at = float(int(time.time()) - 100)
    alice, _ = log_in(config, [("alice", "sid-1", CHROME), ("bob", "sid-2", FIREFOX)], at=at)
    assert main(bff("list", "--sub", "alice", "--json", config=config)) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == [
        {
            "handle": alice.key,
            "sub": "alice",
            "sid": "sid-1",
            "createdAt": at,
            "lastUsedAt": at,
            "expiresAt": at + 30 * 86400,
            "userAgent": CHROME,
            "device": "Chrome 126 on Linux",
        }
    ]
    assert alice.id not in out
    assert "never-printed" not in out


def test_list_of_an_empty_store_says_so(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, store_url)
    assert main(bff("list", config=config)) == 0
    assert main(bff("list", "--sub", "carol", config=config)) == 0
    assert main(bff("list", "--json", config=config)) == 0
    assert capsys.readouterr().out == (
        "bff: sessions: no live sessions\nbff: sessions: no live sessions of sub 'carol'\n[]\n"
    )


def test_list_in_cookie_mode_says_cookie_sessions_cannot_be_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}", token_storage="cookie")
    assert main(bff("list", config=config)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        'bff: sessions: token_storage = "cookie": cookie sessions live in the browsers and cannot be listed '
        "(revoke --sub and --handle still work)\n"
    )


# -- revoke -----------------------------------------------------------------------------------


def test_revoke_sub_ends_exactly_that_users_sessions(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, store_url)
    log_in(config, [("alice", "sid-1", CHROME), ("alice", "sid-2", FIREFOX), ("bob", "sid-3", CHROME)], at=time.time())
    assert main(bff("revoke", "--sub", "alice", config=config)) == 0
    assert main(bff("revoke", "--sub", "alice", config=config)) == 1
    assert main(bff("list", "--json", config=config)) == 0
    out = capsys.readouterr().out.split("\n", 2)
    assert out[:2] == [
        "bff: sessions: 2 ended (sub 'alice'): their records are deleted; every replica refuses them from their "
        "next request on",
        "bff: sessions: 0 ended (sub 'alice'): no live session matched",
    ]
    assert [row["sub"] for row in json.loads(out[2])] == ["bob"]


def test_revoke_handle_takes_the_full_key_or_a_unique_prefix(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, store_url)
    first, second, third = log_in(config, [("alice", "sid-1", CHROME)] * 3, at=time.time())
    assert main(bff("revoke", "--handle", first.key, config=config)) == 0
    assert main(bff("revoke", "--handle", second.key[:8].upper(), config=config)) == 0
    assert main(bff("revoke", "--handle", first.key, config=config)) == 1
    assert main(bff("list", "--json", config=config)) == 0
    out = capsys.readouterr().out.split("\n", 3)
    tail = "their records are deleted; every replica refuses them from their next request on"
    assert out[:3] == [
        f"bff: sessions: 1 ended (handle '{first.key}'): {tail}",
        f"bff: sessions: 1 ended (handle '{second.key[:8].upper()}'): {tail}",
        f"bff: sessions: 0 ended (handle '{first.key}'): no live session matched",
    ]
    assert [row["handle"] for row in json.loads(out[3])] == [third.key]


def test_an_ambiguous_handle_prefix_ends_nothing(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, store_url)
    [session] = log_in(config, [("alice", "sid-1", CHROME)], at=time.time())
    settings = settings_of(config)

    async def twins() -> None:  # two records whose handles share their first 10 characters
        store = open_store(settings.session_store)
        await store.open()
        for key in ("abcdef0123" + "0" * 54, "abcdef0123" + "1" * 54):
            await store.set(key, encode_record(dataclasses.replace(session, key=key)), 600, sub="alice")
        await store.close()

    asyncio.run(twins())
    assert main(bff("revoke", "--handle", "abcdef0123", config=config)) == 2
    assert capsys.readouterr().err == "bff: sessions: --handle: 'abcdef0123' matches 2 sessions; give more characters\n"
    assert main(bff("revoke", "--handle", "abcdef01231", config=config)) == 0
    assert main(bff("list", "--json", config=config)) == 0
    assert len(json.loads(capsys.readouterr().out.split("\n", 1)[1])) == 2


@pytest.mark.parametrize("handle", ["abc1234", "not-hex-at-all", "a" * 65])
def test_a_handle_that_is_not_8_to_64_hex_characters_is_a_usage_problem(
    handle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    assert main(bff("revoke", "--handle", handle, config=config)) == 2
    assert capsys.readouterr().err == f"bff: sessions: --handle: {handle!r} is not 8 to 64 hex characters\n"


def test_revoke_in_cookie_mode_marks_the_records_ended_and_the_cookies_stop_working(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, store_url, token_storage="cookie")
    settings = settings_of(config)
    codec = CookieCodec(settings)
    logins = [("alice", "sid-1", CHROME), ("alice", "sid-2", FIREFOX), ("bob", "sid-3", CHROME)]

    async def create() -> list[list[str]]:
        store = open_store(settings.session_store)
        await store.open()
        sessions = CookieSessions(store, codec, settings.session)
        cookies = []
        for sub, sid, agent in logins:
            login = LoginResult(sub=sub, provider_sid=sid, claims={"sub": sub}, tokens=TOKENS)
            cookies.append((await sessions.create(login, [(b"user-agent", agent.encode())]))[1])
        await store.close()
        return cookies

    async def live(cookies: list[list[str]]) -> list[bool]:
        store = open_store(settings.session_store)
        await store.open()
        sessions = CookieSessions(store, codec, settings.session)
        headers = [[(b"cookie", "; ".join(c.split(";")[0] for c in set_cookies).encode())] for set_cookies in cookies]
        loaded = [await sessions.load(header) is not None for header in headers]
        await store.close()
        return loaded

    cookies = asyncio.run(create())
    assert asyncio.run(live(cookies)) == [True, True, True]
    assert main(bff("revoke", "--sub", "alice", config=config)) == 0
    assert asyncio.run(live(cookies)) == [False, False, True]
    bob = log_in(config, [("bob", "sid-4", CHROME)], at=time.time())[0]
    assert main(bff("revoke", "--handle", bob.key[:12], config=config)) == 0
    assert main(bff("revoke", "--handle", bob.key[:12], config=config)) == 1
    tail = "their cookie-session records are marked ended; every replica refuses them from their next request on"
    assert capsys.readouterr().out.splitlines() == [
        f"bff: sessions: 2 ended (sub 'alice'): {tail}",
        f"bff: sessions: 1 ended (handle '{bob.key[:12]}'): {tail}",
        f"bff: sessions: 0 ended (handle '{bob.key[:12]}'): no live session matched",
    ]


# -- refusals ---------------------------------------------------------------------------------


def test_a_memory_store_has_nothing_to_list_from_outside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "memory://")
    assert main(bff("list", config=config)) == 2
    assert main(bff("revoke", "--sub", "alice", config=config)) == 2
    message = "bff: sessions: session_store is memory://: its sessions live inside each bff process, not here\n"
    assert capsys.readouterr().err == message * 2


def test_a_store_that_does_not_answer_is_exit_code_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.processes import free_port

    config = write_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    assert main(bff("list", config=config)) == 3
    err = capsys.readouterr().err
    assert err.startswith("bff: store: session store redis: ")
    assert len(err.splitlines()) == 1


def test_a_configuration_problem_is_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bff.toml"
    config.write_text('session_store = "sqlite:///s.db"\n', encoding="utf-8")
    assert main(bff("list", config=config)) == 2
    assert "bff: config: secret_keys" in capsys.readouterr().err


def test_revoke_needs_exactly_one_of_sub_and_handle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    for args in (["revoke"], ["revoke", "--sub", "a", "--handle", "abcdef01"]):
        with pytest.raises(SystemExit) as exit_:
            main(bff(*args, config=config))
        assert exit_.value.code == 2
    assert "one of the arguments --sub --handle is required" in capsys.readouterr().err
