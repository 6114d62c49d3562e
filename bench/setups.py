"""The set-ups: what each one starts, and the table of them (`STARTERS`, in table order).

`upstream` (bench/upstream.py) comes first, since every other set-up proxies to it; then `caddy`
(bench/Caddyfile.template), `bff` (`bff serve`, `token = "none"`), the logged-in `bff-user` and
`bff-cookie` (a session at bench/idp.py, server mode and cookie mode), `bff-tokenapi` (a session
from README.md's `[token_api]` at the tests' flask-jwt-extended API), the set-ups at the tests'
oidc-provider (`bff-oidc`: server mode on the default SQLite store; `bff-dpop`; `bff-redis`: the
store on a redis-server of its own; `bff-oidc-cookie`: cookie mode), the peer (`peer`,
`peer-sniffio`: axmp-oidc-bff-provider, bench/peer.py) and `minimal` (bench/minimal_proxy.py).
Each start function returns its `Target`, with `failure` set when it did not come up.

What every start function shares is bench/starting.py's; the login flows, bench/login.py's; the
real provider, bench/provider.py's; the processes, bench/processes.py's.
"""

from __future__ import annotations

import importlib.util
import secrets
import string
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from bench.login import log_in, provider_log_in, token_api_log_in
from bench.processes import (
    BENCH_DIR,
    OPEN_REQUEST_PATH,
    RESPONSE_SIZE,
    Target,
    pin_threads,
    running,
    spawn,
    start_redis,
    wait_ready,
)
from bench.provider import check_upstream, start_provider
from bench.starting import BENCH_KEY as BENCH_KEY  # re-exported, with the rest of how a set-up starts
from bench.starting import Context as Context
from bench.starting import bff_settings as bff_settings
from bench.starting import start_bff as start_bff
from bench.starting import start_server as start_server
from bench.starting import with_session
from tests.support.bff_process import to_toml as to_toml  # re-exported: the tests read the bench TOML
from tests.support.processes import free_port

if TYPE_CHECKING:  # tests.support.oidc_provider needs pytest: imported when a set-up starts it
    from tests.support.oidc_provider import Client, OidcProvider

__all__ = [
    "BENCH_KEY",
    "Context",
    "bff_settings",
    "provider_settings",
    "start_bff",
    "start_bff_at_provider",
    "start_bff_logged_in",
    "start_bff_provider",
    "start_bff_redis",
    "start_bff_token_api",
    "start_caddy",
    "start_minimal",
    "start_plain_bff",
    "start_server",
    "start_upstream",
    "token_api_settings",
    "with_open_route",
]


def start_upstream(workdir: Path, env: dict[str, str], cpus: set[int]) -> Target:
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "upstream.py"), "--port", str(port), "--size", str(RESPONSE_SIZE)]
    return start_server("upstream", port, argv, workdir, env, cpus)


def start_caddy(ctx: Context) -> Target:
    port = free_port()
    template = string.Template((BENCH_DIR / "Caddyfile.template").read_text(encoding="utf-8"))
    caddyfile = ctx.workdir / "Caddyfile"
    caddyfile.write_text(template.substitute(port=port, upstream_port=ctx.upstream_port), encoding="utf-8")
    argv = ["caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
    return start_server("caddy", port, argv, ctx.workdir, ctx.env, ctx.proxy_cpus)


def start_minimal(ctx: Context) -> Target:
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "minimal_proxy.py"), "--port", str(port)]
    argv += ["--upstream", f"http://127.0.0.1:{ctx.upstream_port}"]
    return start_server("minimal", port, argv, ctx.workdir, ctx.env, ctx.proxy_cpus)


def token_api_settings(port: int, upstream_port: int, api_url: str) -> dict[str, Any]:
    """README.md's flask-jwt-extended configuration (`<!-- config: flask_jwt -->`: its `[session]`
    and `[token_api]` as they are, the API at `api_url`), with what `bff-user` has of its own: the
    bench's secret and address, the default store, and the same `token = "user"` route to the
    bench upstream (the JWT API is only where the session comes from)."""
    from tests.support.readme_configs import readme_config

    settings = readme_config("flask_jwt", api_url=api_url)
    settings.update(
        secret_keys=[BENCH_KEY],
        public_url=f"http://127.0.0.1:{port}",
        routes=[{"path": "/api", "upstream": f"http://127.0.0.1:{upstream_port}", "token": "user"}],
    )
    return settings


def provider_settings(
    port: int, upstream_port: int, oidc: dict[str, Any], *, dpop: bool, **extra: Any
) -> dict[str, Any]:
    """`bff-oidc` and `bff-dpop`: README's minimal `[oidc]` (issuer, client id and secret; `oidc`
    has just these) and, for `bff-dpop`, `dpop = true`; the rest as `bff-user` (`extra`: more
    top-level settings)."""
    return bff_settings(port, upstream_port, {**oidc, "dpop": True} if dpop else oidc, **extra)


def start_plain_bff(ctx: Context) -> Target:
    """`bff`: the pass-through, a `token = "none"` route."""
    port = free_port()
    return start_bff("bff", ctx.workdir, ctx.env, ctx.proxy_cpus, bff_settings(port, ctx.upstream_port), port)


def start_bff_logged_in(ctx: Context, name: str, extra: dict[str, Any]) -> Target:
    """The opt-in logged-in set-ups (`bff-user`, `bff-cookie`): a `token = "user"` route, a session
    logged in at `bench/idp.py` (the development provider, on the client CPU), its cookie sent by
    wrk; `extra` are further settings (`token_storage`)."""
    port, idp_port = free_port(), free_port()
    secret = secrets.token_urlsafe(24)
    idp_log = ctx.workdir / f"{name}-idp.log"
    idp_argv = [sys.executable, str(BENCH_DIR / "idp.py"), "--port", str(idp_port), f"--client-secret={secret}"]
    idp_argv += ["--redirect-uri", f"http://127.0.0.1:{port}/bff/callback"]
    idp = spawn(idp_argv, cpus=ctx.client_cpus, log=idp_log, cwd=ctx.workdir, env=ctx.env)
    issuer = f"http://127.0.0.1:{idp_port}/idp"
    discovery = Target("idp", f"{issuer}/.well-known/openid-configuration", process=idp, headers=[], log=idp_log)
    wait_ready(discovery, expect_size=None)
    if discovery.failure is not None:
        return Target(name, "", process=idp, failure=f"identity provider: {discovery.failure}", log=idp_log)
    oidc = {"issuer": issuer, "client_id": "bench-bff", "client_secret": secret}
    settings = bff_settings(port, ctx.upstream_port, oidc, **extra)
    target = start_bff(name, ctx.workdir, ctx.env, ctx.proxy_cpus, settings, port)
    target.helpers.append(idp)
    return with_session(target, lambda: log_in(f"http://127.0.0.1:{port}"), (OSError, ValueError, KeyError))


def start_bff_token_api(ctx: Context, name: str = "bff-tokenapi") -> Target:
    """`bff-tokenapi`: the flask-jwt-extended API of tests/token_apis/, started by the tests' own
    `TokenApi` (waitress, moved to the client CPU), the BFF with README's `[token_api]` for it, a
    session logged in through `POST /bff/login`, its cookie sent by wrk. The API's access tokens
    live an hour, so no refresh falls into the runs: the proxied path alone is measured."""
    from tests.support.token_apis import FLASK_JWT, TokenApi

    missing = [module for module in FLASK_JWT.requires if importlib.util.find_spec(module) is None]
    if missing:
        return Target(name, "", failure=f"{', '.join(missing)} not installed (pip install -e '.[test]')")
    api = TokenApi(FLASK_JWT, ctx.workdir / f"{name}-api", access_lifetime=3600)
    try:
        api.start()
    except RuntimeError as exc:
        api.close()
        return Target(name, "", failure=f"token API: {exc}", log=api.log_file)
    pin_threads(api.pid, ctx.client_cpus)
    port = free_port()
    settings = token_api_settings(port, ctx.upstream_port, api.url)
    target = start_bff(name, ctx.workdir, ctx.env, ctx.proxy_cpus, settings, port)
    target.closers.append(api.close)

    def login() -> str:
        return token_api_log_in(f"http://127.0.0.1:{port}", api.username, api.password)

    return with_session(target, login, (OSError, ValueError))


def with_open_route(settings: dict[str, Any]) -> None:
    """`bff-oidc`'s second route, `OPEN_REQUEST_PATH`'s: the same upstream with `token = "none"`, so
    that `bff-oidc-none` measures the same worker, cookie and request without the token path.
    It comes after `/api` in the route table, so `/api` requests never look at it."""
    settings["routes"].append({**settings["routes"][0], "path": OPEN_REQUEST_PATH.rsplit("/", 1)[0], "token": "none"})


def start_bff_provider(
    ctx: Context, name: str, *, dpop: bool, configure: Callable[[dict[str, Any]], None] | None = None, **extra: Any
) -> Target:
    """`bff-oidc`, `bff-dpop`, `bff-oidc-cookie` and `bff-redis`: the tests' panva oidc-provider
    (node, on the client CPU; RS256 JWT access tokens of an hour, so no refresh falls into the
    runs; DPoP offered for `bff-dpop`) and `start_bff_at_provider` (`extra`: `token_storage`,
    `session_store`, `auth_request`)."""
    provider = start_provider(ctx.workdir / f"{name}-provider", ctx.client_cpus, dpop=dpop)
    if isinstance(provider, str):
        return Target(name, "", failure=provider)
    target, _ = start_bff_at_provider(ctx, name, provider, dpop=dpop, configure=configure, **extra)
    target.closers.append(provider.close)
    return target


def start_bff_at_provider(
    ctx: Context,
    name: str,
    provider: OidcProvider,
    *,
    dpop: bool,
    workers: int = 1,
    configure: Callable[[dict[str, Any]], None] | None = None,
    **extra: Any,
) -> tuple[Target, Client | None]:
    """The BFF registered at the running `provider` with `provider_settings`, a session logged in
    through the provider's sign-in and consent pages, its cookie sent by wrk; and the client
    registration (None when it failed). One request first checks what the upstream gets:
    `Authorization: Bearer`, or `Authorization: DPoP` and a `DPoP` proof. Stopping the provider
    is the caller's."""
    port = free_port()
    try:
        client = provider.register_client("bench-bff", f"http://127.0.0.1:{port}")
    except httpx.HTTPError as exc:
        return Target(
            name, "", failure=f"client registration at the provider failed: {exc}", log=provider.log_file
        ), None
    oidc = {"issuer": provider.issuer, "client_id": client.client_id, "client_secret": client.client_secret}
    settings = provider_settings(port, ctx.upstream_port, oidc, dpop=dpop, **extra)
    if configure is not None:  # bench/million.py's store, bench/streams.py's pool
        configure(settings)
    target = start_bff(name, ctx.workdir, ctx.env, ctx.proxy_cpus, settings, port, workers)
    # The tests' Browser says what went wrong in an AssertionError.
    errors = (OSError, ValueError, KeyError, AssertionError, httpx.HTTPError)
    scheme = "DPoP" if dpop else "Bearer"
    target = with_session(
        target, lambda: provider_log_in(f"http://127.0.0.1:{port}"), errors, lambda: check_upstream(target, scheme)
    )
    return target, client


def start_bff_redis(ctx: Context, name: str = "bff-redis") -> Target:
    """`bff-redis`: `bff-oidc` with `session_store` on a redis-server of its own (no persistence,
    on the client CPU), stopped with the BFF."""
    redis = start_redis(ctx.workdir / f"{name}-redis", ctx.client_cpus, ctx.env)
    if redis.failure is not None:
        return Target(name, "", failure=redis.failure, log=redis.log)
    target = start_bff_provider(ctx, name, dpop=False, session_store=redis.url)
    target.helpers.append(running(redis))
    return target
