"""Smoke run of the benchmark harness (`python -m bench`): the command starts the upstream, Caddy and
the BFF, drives each with wrk for a second and prints the table. No timing is asserted here: the
numbers come from the full run (see bench/README.md)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bff.config import Settings
from tests.support.oidc_provider import node_or_skip
from tests.support.readme_configs import readme_config
from tests.support.redis_server import redis_server_or_skip
from tests.support.token_apis import FLASK_JWT, packages_or_skip
from tests.support.tools import find_tool

REPO = Path(__file__).resolve().parents[1]


def test_bench_quick_run_prints_the_table(tmp_path: Path) -> None:
    for tool in ("wrk", "caddy"):
        find_tool([tool], f"BENCHMARK SMOKE TEST NOT RUN: {tool} is not installed (apt-get install {tool})")
    results = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--duration", "1", "--warmup", "0", "--json", str(results)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "machine: " in completed.stdout
    for setup in ("upstream", "caddy", "bff"):
        assert f"  {setup} " in completed.stdout, output
    assert "BFF / Caddy" in completed.stdout, output
    data = json.loads(results.read_text(encoding="utf-8"))
    assert {row["setup"] for row in data["summary"]} == {"upstream", "caddy", "bff"}
    assert all(row["errors"] == 0 and row["rps"] > 0 for row in data["summary"])
    assert data["ratios"]
    assert data["ratios"][0]["concurrency"] == 8


def test_bench_logged_in_setups_run_in_server_cookie_and_token_api_mode(tmp_path: Path) -> None:
    """`bff-user` and `bff-cookie` log in at the bench's provider (server mode, then cookie mode),
    `bff-tokenapi` through `POST /bff/login` at the flask-jwt-extended test API, and all three are
    measured side by side, with the cookie / server mode and token-API / OIDC tables under them."""
    find_tool(["wrk"], "BENCHMARK SMOKE TEST NOT RUN: wrk is not installed (apt-get install wrk)")
    packages_or_skip(FLASK_JWT)
    results = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "bench", "--quick", "--duration", "1", "--warmup", "0"]
    argv += ["--setups", "bff-user,bff-cookie,bff-tokenapi", "--json", str(results)]
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    for setup in ("bff-user", "bff-cookie", "bff-tokenapi"):
        assert f"  {setup} " in completed.stdout, output
    assert "Cookie mode" in completed.stdout, output
    assert "Token-API mode" in completed.stdout, output
    data = json.loads(results.read_text(encoding="utf-8"))
    assert {row["setup"] for row in data["summary"]} == {"upstream", "bff-user", "bff-cookie", "bff-tokenapi"}
    assert all(row["errors"] == 0 and row["rps"] > 0 for row in data["summary"])
    assert [row["concurrency"] for row in data["ratios_cookie"]] == [8]
    assert [row["concurrency"] for row in data["ratios_tokenapi"]] == [8]


def test_bench_default_setup_and_caddy_forward_auth_run_at_the_real_provider(tmp_path: Path) -> None:
    """`bff-oidc` (README's minimal [oidc], the default store and log level) and `caddy-auth`
    (README's forward_auth example in front of the BFF in auth-request mode) log in at
    oidc-provider; the upstream gets a Bearer token through both, and both tables are printed.
    `bff-oidc-none` is bff-oidc's own `token = "none"` route: the token path's cost, run-paired."""
    for tool in ("wrk", "caddy"):
        find_tool([tool], f"BENCHMARK SMOKE TEST NOT RUN: {tool} is not installed (apt-get install {tool})")
    results = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "bench", "--quick", "--duration", "1", "--warmup", "0"]
    argv += ["--setups", "caddy,bff,bff-oidc-none,caddy-auth", "--json", str(results)]  # bff-oidc comes with it
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    for setup in ("bff-oidc", "caddy-auth"):
        assert f"bench: {setup}: the upstream got Bearer with a" in completed.stderr, output
    assert "The default set-up's authenticated GET" in completed.stdout, output
    assert "Auth-request mode" in completed.stdout, output
    assert '"+us" over token = "none" (bff-oidc-none in the same worker, paired runs;' in completed.stdout, output
    data = json.loads(results.read_text(encoding="utf-8"))
    setups = {"upstream", "caddy", "bff", "bff-oidc", "bff-oidc-none", "caddy-auth"}
    assert {row["setup"] for row in data["summary"]} == setups
    assert all(row["errors"] == 0 and row["rps"] > 0 for row in data["summary"])
    assert list(data["auth_extra_us"]) == ["8"]
    assert [row["concurrency"] for row in data["ratios_oidc"]] == [8]
    assert [row["concurrency"] for row in data["ratios_auth_edge"]] == [8]


def test_bench_runs_every_mode_at_the_real_provider(tmp_path: Path) -> None:
    """`bff-oidc` (server mode, SQLite), `bff-redis` (server mode on a redis-server of its own)
    and `bff-oidc-cookie` (cookie mode) log in at the tests' oidc-provider, the upstream gets a
    Bearer JWT from each, and the every-mode table compares them; the Redis set-up's sessions are
    in Redis, not in a SQLite file."""
    find_tool(["wrk"], "BENCHMARK SMOKE TEST NOT RUN: wrk is not installed (apt-get install wrk)")
    node_or_skip()
    redis_server_or_skip()
    results = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "bench", "--quick", "--duration", "1", "--warmup", "0", "--keep"]
    argv += ["--setups", "bff-oidc,bff-redis,bff-oidc-cookie", "--json", str(results)]
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    output = completed.stdout + completed.stderr
    kept = re.search(r"working directory kept: (\S+)", completed.stderr)
    assert kept is not None, output
    workdir = Path(kept.group(1))
    try:
        assert completed.returncode == 0, output
        for setup in ("bff-oidc", "bff-redis", "bff-oidc-cookie"):
            assert f"bench: {setup}: the upstream got Bearer with a " in completed.stderr, output
            assert f"{setup} / bff-oidc " in completed.stdout, output
        assert "Every mode / server mode on SQLite" in completed.stdout, output
        assert 'session_store = "redis://127.0.0.1:' in (workdir / "bff-redis.toml").read_text(encoding="utf-8")
        assert (workdir / "bff-oidc" / ".bff" / "sessions.db").exists()
        assert not (workdir / "bff-redis" / ".bff" / "sessions.db").exists()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    data = json.loads(results.read_text(encoding="utf-8"))
    assert {row["setup"] for row in data["summary"]} == {"upstream", "bff-oidc", "bff-redis", "bff-oidc-cookie"}
    assert all(row["errors"] == 0 and row["rps"] > 0 for row in data["summary"])
    assert [row["concurrency"] for row in data["ratios_redis"]] == [8]
    assert [row["concurrency"] for row in data["ratios_oidc_cookie"]] == [8]
    assert data["ratios_peer"] == []


def test_the_peer_is_configured_for_the_same_provider_upstream_and_its_own_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer (measured by hand: it installs from PyPI) gets the provider, the upstream under
    `/api` and its Redis through its `OIDC_BFF_*` variables, no `PYTHONPATH`, and a venv once
    made (its marker written) is used again without pip."""
    from bench import peer

    env = peer.peer_environment(
        {"PATH": "/bin", "PYTHONPATH": "/repo"},
        8000,
        "http://127.0.0.1:1",
        ("id", "s"),
        "http://127.0.0.1:2",
        "redis://r",
    )
    assert "PYTHONPATH" not in env
    assert env["PATH"] == "/bin"
    assert json.loads(env["OIDC_BFF_PROVIDERS"]) == {
        "bench": {
            "server_metadata_url": "http://127.0.0.1:1/.well-known/openid-configuration",
            "client_id": "id",
            "client_secret": "s",
        }
    }
    assert env["OIDC_BFF_DEFAULT_PROVIDER"] == "bench"
    assert env["OIDC_BFF_UPSTREAM_API_URL"] == "http://127.0.0.1:2/api"
    assert (env["OIDC_BFF_APP_BASE_URL"], env["OIDC_BFF_REDIS_URL"]) == ("http://127.0.0.1:8000", "redis://r")
    monkeypatch.setattr(peer, "CACHE", tmp_path)
    venv = tmp_path / "peer-venv-1.0.0-sniffio"
    venv.mkdir()
    (venv / ".bench-ready").write_text("made\n", encoding="utf-8")
    assert peer.peer_python(sniffio=True) == venv / "bin" / "python"


def test_every_setup_has_a_starter_and_the_cookie_setup_differs_only_in_token_storage() -> None:
    from bench import setups, table
    from bench.processes import OPEN_REQUEST_PATH

    assert table.SETUPS == (
        "upstream",
        "caddy",
        "bff",
        "bff-user",
        "bff-cookie",
        "bff-tokenapi",
        "bff-oidc",
        "bff-oidc-none",
        "bff-dpop",
        "bff-redis",
        "bff-oidc-cookie",
        "peer",
        "peer-sniffio",
        "minimal",
        "caddy-auth",
    )
    assert set(table.DEFAULT_SETUPS) <= set(table.SETUPS)
    assert set(table.SETUPS) == {"upstream", *table.STARTERS, *table.VIEWS}
    oidc = {"issuer": "http://127.0.0.1:1/idp", "client_id": "bench-bff", "client_secret": "s"}
    user = setups.bff_settings(8000, 9000, oidc)
    cookie = setups.bff_settings(8000, 9000, oidc, token_storage="cookie")
    assert {k: v for k, v in cookie.items() if k != "token_storage"} == user
    assert 'token_storage = "cookie"' in setups.to_toml(cookie)
    setups.with_open_route(user)  # bff-oidc's second route: the same upstream, no token
    assert user["routes"][1] == {**user["routes"][0], "path": "/pub", "token": "none"}
    assert OPEN_REQUEST_PATH == "/pub/items"


def test_the_token_paths_cost_is_the_median_of_the_differences_run_by_run() -> None:
    from bench.measure import Sample
    from bench.summary import paired_extra

    def sample(setup: str, concurrency: int, run: int, cpu: float) -> Sample:
        return Sample(setup, concurrency, run, 1000, 1.0, 1000.0, 1, 1, 1, 1, 0, cpu, 99, 8, 1.0, 0, 0, 1)

    runs = [(1, 100, 90), (2, 130, 118), (3, 95, 91)]  # the second run slow for both: paired, it still says +12
    samples = [sample(name, 8, run, cpu) for run, user, none in runs for name, cpu in (("a", user), ("b", none))]
    samples += [sample("a", 32, 1, 80.0)]  # no reference in that run: no figure
    assert paired_extra(samples, "a", "b") == {8: 10.0}


def test_the_token_api_setup_is_the_readmes_flask_jwt_configuration_with_bff_users_route() -> None:
    """`bff-tokenapi` logs in with README.md's `[token_api]` and `[session]` for flask-jwt-extended
    and proxies the same `token = "user"` route to the bench upstream as `bff-user`."""
    from bench import setups

    api = "http://127.0.0.1:7000"
    oidc = {"issuer": "http://127.0.0.1:1/idp", "client_id": "bench-bff", "client_secret": "s"}
    user = setups.bff_settings(8000, 9000, oidc)
    token_api = setups.token_api_settings(8000, 9000, api)
    readme = readme_config("flask_jwt", api_url=api)
    assert token_api["token_api"] == readme["token_api"]
    assert token_api["session"] == readme["session"]
    assert token_api["token_api"]["login_url"] == f"{api}/auth/login"
    assert "oidc" not in token_api
    for key in ("routes", "secret_keys", "public_url"):
        assert token_api[key] == user[key], key
    # The same store: README's flask-jwt configuration names the default one, bff_settings leaves it out.
    default_store = Settings.session_store
    assert token_api.get("session_store", default_store) == user.get("session_store", default_store)
    assert "[token_api]" in setups.to_toml(token_api)


def test_the_provider_setups_are_the_minimal_oidc_configuration_with_and_without_dpop() -> None:
    """`bff-oidc` is `bff-user`'s configuration with the real provider's issuer and client, nothing
    more in `[oidc]`; `bff-dpop` differs from it in `oidc.dpop = true` alone."""
    from bench import setups

    oidc = {"issuer": "http://127.0.0.1:1", "client_id": "bench-bff", "client_secret": "s"}
    bearer = setups.provider_settings(8000, 9000, oidc, dpop=False)
    dpop = setups.provider_settings(8000, 9000, oidc, dpop=True)
    assert bearer == setups.bff_settings(8000, 9000, oidc)
    assert bearer["oidc"] == oidc
    assert dpop["oidc"] == {**oidc, "dpop": True}
    assert {k: v for k, v in dpop.items() if k != "oidc"} == {k: v for k, v in bearer.items() if k != "oidc"}
    assert "dpop = true" in setups.to_toml(dpop)


def test_a_provider_setup_without_the_providers_packages_fails_naming_npm_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import setups, table
    from tests.support import oidc_provider

    monkeypatch.setattr(oidc_provider, "PROVIDER_DIR", tmp_path / "oidc_provider")
    ctx = setups.Context(tmp_path, {}, {0}, {0}, upstream_port=1)
    for name in ("bff-oidc", "bff-dpop", "caddy-auth"):
        target = table.STARTERS[name](ctx)
        assert target.process is None
        assert target.failure is not None
        assert "`npm ci`" in target.failure, target.failure
        assert str(tmp_path / "oidc_provider") in target.failure


def test_the_upstream_echoes_the_head_of_a_request_to_its_echo_path(tmp_path: Path) -> None:
    """What the provider set-ups read to check that the BFF sent `Authorization: DPoP` and a
    proof; every other path still gets the 1 KiB."""
    from bench import processes, provider, setups
    from bench.upstream import ECHO_PATH

    upstream = setups.start_upstream(tmp_path, processes.child_env(tmp_path), {0})
    try:
        assert upstream.failure is None, upstream.failure
        headers = [("Authorization", "DPoP a.b.c"), ("DPoP", "proof")]
        target = processes.Target("probe", upstream.url, headers=headers)
        head = provider.upstream_head(target)
        assert head.startswith(f"GET {ECHO_PATH} HTTP/1.1\r\n".encode()), head
        assert provider.request_headers(head)["dpop"] == "proof"
        status, body, _ = processes.probe(upstream.url)
        assert (status, len(body)) == (200, processes.RESPONSE_SIZE)
    finally:
        processes.stop_targets([upstream])


def _jwt(alg: str) -> str:
    header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "typ": "at+jwt"}).encode()).decode().rstrip("=")
    return f"{header}.e30.c2ln"


@pytest.mark.parametrize(
    ("headers", "scheme", "problem"),
    [
        ({"authorization": f"Bearer {_jwt('RS256')}"}, "Bearer", None),
        ({"authorization": f"DPoP {_jwt('RS256')}", "dpop": "proof"}, "DPoP", None),
        ({"authorization": f"Bearer {_jwt('RS256')}"}, "DPoP", "Authorization is Bearer, not DPoP; no DPoP header"),
        ({"authorization": f"DPoP {_jwt('RS256')}"}, "DPoP", "no DPoP header"),
        ({"authorization": f"Bearer {_jwt('RS256')}", "dpop": "p"}, "Bearer", "a DPoP proof header came"),
        ({"authorization": f"Bearer {_jwt('HS256')}"}, "Bearer", "no RS256 JWT"),
        ({}, "DPoP", "Authorization is missing"),
    ],
)
def test_the_upstream_check_names_what_is_missing(headers: dict[str, str], scheme: str, problem: str | None) -> None:
    from bench.provider import authorization_problem

    found = authorization_problem(headers, scheme)
    assert found is None if problem is None else (found is not None and problem in found), found


def test_a_refresh_storm_at_two_workers_makes_one_refresh_and_answers_every_request(tmp_path: Path) -> None:
    """`python -m bench.storm`: 20 concurrent requests of one session just after its access token
    expired, at `bff serve --workers 2` and the real provider: the provider saw exactly one refresh,
    every request got its 200, the table and the JSON say so (it waits ~40 s for the token)."""
    from tests.support.oidc_provider import node_or_skip

    node_or_skip()
    results = tmp_path / "storm.json"
    argv = [
        sys.executable,
        "-m",
        "bench.storm",
        "--requests",
        "20",
        "--workers",
        "2",
        "--control",
        "--json",
        str(results),
    ]
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    output = completed.stdout + completed.stderr
    assert "refreshes" in completed.stdout, output
    assert "provider refresh ms" in completed.stdout, output
    result = json.loads(results.read_text(encoding="utf-8"))["result"]
    assert (result["requests"], result["workers"]) == (20, 2)
    assert result["refreshes"] == 1, output
    assert result["answered"] == 20, output
    assert result["statuses"] == {"200": 20}, output
    assert result["provider_refresh_ms"] > 0
    assert result["slowest_ms"] >= result["median_ms"] > 0
    assert result["metrics"]["bff_refresh_seconds_count"] == 1, output
    assert result["control_slowest_ms"] > 0  # the burst before the expiry: no refresh (else no result)


def test_bodies_of_8_mib_go_through_caddy_and_the_bff_every_byte_checked(tmp_path: Path) -> None:
    """`python -m bench.bodies --size 8MiB --verify`: a download and an upload through each set-up,
    the upstream's count and SHA-256 (and the client's, for the download) matching what was sent;
    through Caddy's forward_auth too, the upstream getting the BFF's Bearer token."""
    find_tool(["caddy"], "BENCHMARK SMOKE TEST NOT RUN: caddy is not installed (apt-get install caddy)")
    _provider_or_skip()
    results = tmp_path / "bodies.json"
    argv = [sys.executable, "-m", "bench.bodies", "--size", "8MiB", "--runs", "1", "--verify", "--json", str(results)]
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    data = json.loads(results.read_text(encoding="utf-8"))
    setups = ("upstream", "caddy", "bff", "bff-user", "caddy-auth")
    assert {(t["direction"], t["setup"]) for t in data["transfers"]} == {
        (direction, setup) for direction in ("download", "upload") for setup in setups
    }
    assert all(t["problem"] is None for t in data["transfers"]), output
    assert all(t["size"] == 8 * 1024 * 1024 for t in data["transfers"]), output
    assert data["failures"] == {}
    for setup in setups:
        assert f" {setup} " in completed.stdout, output
    assert "bench: caddy-auth: the upstream got Bearer with a" in completed.stderr, output


def test_the_bulk_upstream_counts_and_hashes_what_it_gets_and_streams_what_is_asked(tmp_path: Path) -> None:
    """What `bench.bodies` checks a transfer against: the upload's count and SHA-256 answered by
    the upstream, and a download of exactly N bytes of the known pattern (the 1 KiB elsewhere)."""
    import hashlib

    import uvloop

    from bench import processes, setups
    from bench.bulk_upstream import BULK_PATH, blocks, expected_sha256
    from bench.http_client import connect
    from tests.support.processes import free_port

    port = free_port()
    argv = [sys.executable, str(processes.BENCH_DIR / "bulk_upstream.py"), "--port", str(port), "--hash"]
    upstream = setups.start_server("upstream", port, argv, tmp_path, processes.child_env(tmp_path), {0})
    size = 3 * 1024 * 1024 + 5

    async def exchange() -> tuple[int, str, dict[str, object]]:
        connection = await connect("127.0.0.1", port)
        try:
            digest = hashlib.sha256()
            download = await connection.send("GET", f"{BULK_PATH}{size}", sink=digest.update)
            answer = connection.send("PUT", f"{BULK_PATH}up", length=size)
            await connection.stream(blocks(size))
            return download.length, digest.hexdigest(), json.loads((await answer).body)
        finally:
            connection.close()

    try:
        assert upstream.failure is None, upstream.failure
        length, sha, counted = uvloop.run(exchange())
        assert (length, sha) == (size, expected_sha256(size))
        assert counted == {"bytes": size, "sha256": expected_sha256(size)}
        assert processes.probe(upstream.url)[:2] == (200, b"0123456789abcdef" * 64)
        status, head, _ = processes.probe(f"http://127.0.0.1:{port}/api/request-head", [("X-Probe", "yes")])
        assert status == 200
        assert head.startswith(b"GET /api/request-head HTTP/1.1\r\n")
        assert b"\r\nX-Probe: yes" in head
    finally:
        processes.stop_targets([upstream])


def _provider_or_skip() -> None:
    from tests.support.oidc_provider import provider_missing

    find_tool(["wrk"], "BENCHMARK SMOKE TEST NOT RUN: wrk is not installed (apt-get install wrk)")
    missing = provider_missing()
    if missing is not None:
        pytest.skip(f"BENCHMARK SMOKE TEST NOT RUN: {missing}")


def test_bench_million_fills_the_store_and_the_sweep_deletes_the_expired_sessions(tmp_path: Path) -> None:
    """`python -m bench.million` at 2,000 sessions on Redis: the store holds the logged-in session
    and the filled ones, wrk saw no error at either size, and Redis's expiry deleted the expired
    ones while wrk ran. (SQLite's sweep is due only a minute after the BFF starts: a minute the
    suite does not wait here; tests/test_stores.py covers the batched sweep.)"""
    from tests.support.redis_server import redis_server_or_skip

    _provider_or_skip()
    redis_server_or_skip()
    results = tmp_path / "million.json"
    argv = [sys.executable, "-m", "bench.million", "--sessions", "2000", "--duration", "1", "--runs", "1"]
    argv += ["--attempts", "1", "--sweep-duration", "3", "--stores", "redis", "--json", str(results)]
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "req/s ratio" in completed.stdout, output
    stores = json.loads(results.read_text(encoding="utf-8"))["stores"]
    assert [store["store"] for store in stores] == ["redis"]
    for store in stores:
        assert "failure" not in store, store
        assert "trigger_error" not in store, store
        assert store["rows"] == 2000 + 1  # the filled sessions and the logged-in one
        assert store["expired"] == int(1999 * 0.9)
        assert store["rows_after_sweep"] <= store["rows"] - store["expired"] + 10, store
        assert all(sample["errors"] == 0 and sample["requests"] > 0 for sample in store["small"] + store["big"])
        assert store["sweep"]["errors"] == 0
        assert store["sweep"]["requests"] > 0


def test_bench_streams_holds_every_sse_stream_and_websocket_without_a_stall(tmp_path: Path) -> None:
    """`python -m bench.streams` with 20 streams of each kind for 4 s: all opened, every one got an
    event (an echo) at least every `STALL_S`, and wrk's GETs were served meanwhile."""
    _provider_or_skip()
    results = tmp_path / "streams.json"
    argv = [sys.executable, "-m", "bench.streams", "--streams", "20", "--duration", "4", "--json", str(results)]
    completed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    phases = json.loads(results.read_text(encoding="utf-8"))["phases"]
    assert [phase["kind"] for phase in phases] == ["sse", "websocket"]
    for phase in phases:
        assert (phase["opened"], phase["stalled"], phase["errors"]) == (20, 0, []), phase
        assert phase["min_events"] >= 3, phase  # an event a second for 4 s
        assert phase["rss_peak_mib"] > 0, phase
        assert phase["fds_peak"] >= 40, phase  # two sockets per stream
        assert phase["wrk"]["requests"] > 0, phase
        assert phase["wrk"]["errors"] == 0, phase


def test_a_stream_is_stalled_when_it_saw_nothing_or_a_long_gap() -> None:
    from bench.streams import STALL_S, Stream

    stream = Stream(opened=True)
    assert stream.stalled(end=1.0)  # no event at all
    for now in (1.0, 2.0, 3.0):
        stream.saw(now)
    assert (stream.events, stream.max_gap) == (3, 1.0)
    assert not stream.stalled(end=3.0 + STALL_S)
    assert stream.stalled(end=3.0 + STALL_S + 0.1)  # silent at the end
    stream.saw(3.0 + STALL_S + 1)
    assert stream.stalled(end=3.0 + STALL_S + 1)  # a gap in the middle


def test_bench_token_path_prints_each_part_beside_the_reference() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.token_path", "--calls", "200", "--repeats", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    rows = [line.rsplit(None, 2)[0] for line in completed.stdout.splitlines()[1:]]
    assert rows == [
        "a bare ASGI call (reference)",
        "AccessLog around it",
        "bearer(), server mode on SQLite",
        "bearer(), server mode, full load",
        "bearer(), cookie mode on SQLite",
        "bearer(), cookie mode, full load",
    ]
    assert completed.stdout.splitlines()[1].endswith(" 1.0x")
