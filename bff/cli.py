"""The `bff` command: `serve`, `check`, `demo`, `sessions` (in `bff.admin`) and `keys` (in `bff.keys_command`).

Configuration problems end the process with exit code 2 and one line per problem on stderr,
never a traceback. Only argument parsing and dispatch: running the server is `bff.server`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from bff.admin import add_sessions_parser, run_sessions
from bff.config import Settings, load_settings
from bff.errors import BffError, ConfigError
from bff.keys_command import add_keys_parser, run_keys
from bff.server import CONFIG_FILE_VARIABLE, serve

__all__ = ["EXIT_CONFIG", "main"]

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bff", description="Backend-for-Frontend proxy for single-page apps.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the BFF")
    serve.add_argument("--config", help="bff.toml; BFF_... environment variables override it")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-level", default="info")

    check = commands.add_parser("check", help="validate the configuration and reach the provider")
    check.add_argument("--config", help="bff.toml; BFF_... environment variables override it")

    demo = commands.add_parser("demo", help="BFF, development identity provider, demo API and SPA on one port")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--access-ttl", type=int, default=60, help="access-token lifetime in seconds (default 60)")
    demo.add_argument("--data-dir", default=".bff", help="where the demo keeps its SQLite store and keys")
    demo.add_argument(
        "--token-storage",
        choices=["server", "cookie"],
        default="server",
        help="server: sessions in the SQLite store (default); cookie: sealed into the browser's cookies",
    )

    add_sessions_parser(commands)
    add_keys_parser(commands)

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "check":
            return _check(args)
        if args.command == "sessions":
            return run_sessions(args)
        if args.command == "keys":
            return run_keys(args)
        from bff.demo.run import run_demo  # only the demo pulls in the development provider

        return run_demo(
            host=args.host,
            port=args.port,
            access_ttl=args.access_ttl,
            data_dir=args.data_dir,
            token_storage=args.token_storage,
        )
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"bff: config: {problem}", file=sys.stderr)
        return EXIT_CONFIG


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(os.environ, args.config)  # fail fast in the parent, before any worker starts
    if args.config:
        os.environ[CONFIG_FILE_VARIABLE] = os.path.abspath(args.config)
    serve(
        "bff.server:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_format=settings.log_format,
        shutdown_timeout=settings.shutdown_timeout,
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    settings = load_settings(os.environ, args.config)
    print(f"bff: config: ok ({len(settings.routes)} routes, store {_store_kind(settings)})")
    name = _provider_name(settings)
    if name is None:
        return 0
    try:
        asyncio.run(_reach_provider(settings))
    except BffError as exc:
        print(f"bff: provider: {exc.detail}", file=sys.stderr)
        return 1
    print(f"bff: provider: ok ({name})")
    return 0


def _provider_name(settings: Settings) -> str | None:
    """How `bff check` names the login source: the issuer, or the token API's host and port."""
    if settings.oidc is not None:
        return settings.oidc.issuer
    if settings.token_api is not None:
        return urlsplit(settings.token_api.login_url).netloc
    return None


async def _reach_provider(settings: Settings) -> None:
    import httpx

    from bff.app import DEFAULT_SOURCE_TIMEOUT, build_login_source

    source_settings = settings.oidc or settings.token_api
    timeout = source_settings.timeout if source_settings is not None else DEFAULT_SOURCE_TIMEOUT
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http:
        source = build_login_source(settings, http)
        if source is not None:
            await source.ready()


def _store_kind(settings: Settings) -> str:
    return settings.session_store.split(":", 1)[0]
