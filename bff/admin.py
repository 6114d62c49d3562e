"""`bff sessions list` and `bff sessions revoke`: the operator's view of the configured store.

Owns the two commands, their output and their exit codes; what a session is, and how one ends,
stays `ServerSessions`' and `CookieSessions`' business. The commands read and write the same
store the replicas do, and every replica reads the store on every request, so a revoked session
ends everywhere at its next request.

Exit codes: 0 done (at least one session ended), 1 nothing matched, 2 a configuration or usage
problem (a message on stderr), 3 the store did not answer. Nothing printed is a token, a cookie
value or a session id; handles are the public `Session.key`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from bff.config import Settings, load_settings
from bff.cookie_sessions import RECORD_PREFIX, CookieSessions
from bff.cookies import CookieCodec
from bff.devices import describe_device
from bff.errors import StoreUnavailable
from bff.server_sessions import ServerSessions
from bff.session import SessionInfo
from bff.stores import Store, open_store

__all__ = [
    "EXIT_NONE_MATCHED",
    "EXIT_STORE",
    "EXIT_USAGE",
    "MIN_HANDLE_PREFIX",
    "SHOWN_HANDLE",
    "UsageProblem",
    "add_sessions_parser",
    "format_table",
    "format_time",
    "run_sessions",
]

EXIT_NONE_MATCHED = 1
EXIT_USAGE = 2
EXIT_STORE = 3
MIN_HANDLE_PREFIX = 8
SHOWN_HANDLE = 12
"""Characters of a handle the table shows (the logs show the same prefix)."""

_HANDLE = re.compile(r"[0-9a-f]{8,64}")
_KEY = re.compile(r"[0-9a-f]{64}")
_COLUMNS = ("HANDLE", "SUB", "PROVIDER SID", "CREATED", "LAST USED", "EXPIRES", "DEVICE")


class UsageProblem(Exception):
    """A request the store cannot answer as asked (exit 2): an ambiguous handle, a mode that
    keeps no list."""


def add_sessions_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sessions = commands.add_parser("sessions", help="list or end sessions in the configured store")
    actions = sessions.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the live sessions, most recently used first")
    listing.add_argument("--sub", help="only this user's sessions")
    listing.add_argument("--json", action="store_true", help="a JSON array with full handles")
    listing.add_argument("--config", help="bff.toml; BFF_... environment variables override it")
    revoke = actions.add_parser("revoke", help="end sessions, on every replica at their next request")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--sub", help="every session of this user")
    which.add_argument("--handle", help=f"one session: its handle, or a unique prefix of {MIN_HANDLE_PREFIX}+ chars")
    revoke.add_argument("--config", help="bff.toml; BFF_... environment variables override it")


def run_sessions(args: argparse.Namespace) -> int:
    """`bff sessions ...`; a `ConfigError` reaches the caller, which prints it (exit 2)."""
    settings = load_settings(os.environ, args.config)
    try:
        if settings.session_store.startswith("memory:"):
            raise UsageProblem("session_store is memory://: its sessions live inside each bff process, not here")
        handle = getattr(args, "handle", None)
        if handle is not None and not _HANDLE.fullmatch(handle.lower()):
            raise UsageProblem(f"--handle: {handle!r} is not {MIN_HANDLE_PREFIX} to 64 hex characters")
        if args.action == "list" and settings.token_storage == "cookie":
            raise UsageProblem(
                'token_storage = "cookie": cookie sessions live in the browsers and cannot be listed '
                "(revoke --sub and --handle still work)"
            )
        return asyncio.run(_run(settings, args))
    except UsageProblem as exc:
        print(f"bff: sessions: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as exc:
        print(f"bff: store: {exc.detail}", file=sys.stderr)
        return EXIT_STORE


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings.session_store)
    await store.open()
    try:
        if args.action == "list":
            return await _list(_server_sessions(settings, store), settings, sub=args.sub, as_json=args.json)
        return await _revoke(settings, store, sub=args.sub, handle=args.handle)
    finally:
        await store.close()


def _server_sessions(settings: Settings, store: Store) -> ServerSessions:
    return ServerSessions(store, CookieCodec(settings), settings.session)


# -- list -------------------------------------------------------------------------------------


async def _list(sessions: ServerSessions, settings: Settings, *, sub: str | None, as_json: bool) -> int:
    infos = await (sessions.list_for(sub) if sub is not None else sessions.list_all())
    idle = settings.session.idle_timeout
    if as_json:
        print(json.dumps([_json_row(info, idle) for info in infos], indent=2))
    elif not infos:
        print("bff: sessions: no live sessions" + (f" of sub {sub!r}" if sub is not None else ""))
    else:
        print(format_table([_text_row(info, idle) for info in infos]))
    return 0


def _ends_at(info: SessionInfo, idle_timeout: float) -> float:
    """The idle or the absolute end, whichever comes first."""
    return min(info.expires_at, info.last_used_at + idle_timeout)


def _json_row(info: SessionInfo, idle_timeout: float) -> dict[str, Any]:
    return {
        "handle": info.key,
        "sub": info.sub,
        "sid": info.sid,
        "createdAt": info.created_at,
        "lastUsedAt": info.last_used_at,
        "expiresAt": _ends_at(info, idle_timeout),
        "userAgent": info.user_agent,
        "device": describe_device(info.user_agent),
    }


def _text_row(info: SessionInfo, idle_timeout: float) -> list[str]:
    times = (info.created_at, info.last_used_at, _ends_at(info, idle_timeout))
    return [
        info.key[:SHOWN_HANDLE],
        info.sub,
        info.sid or "-",
        *(format_time(moment) for moment in times),
        describe_device(info.user_agent),
    ]


def format_time(moment: float) -> str:
    """UTC to the second: `2027-01-15T08:00:00Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """`_COLUMNS` over `rows`, each column as wide as its widest cell, two spaces apart, no
    trailing spaces. Characters a terminal would act on (escapes, newlines) show as `?`: a user
    agent or a `sub` is whatever a browser or a provider sent."""
    lines = [list(_COLUMNS), *([_printable(cell) for cell in row] for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def _printable(text: str) -> str:
    return "".join(char if char.isprintable() else "?" for char in text)


# -- revoke -----------------------------------------------------------------------------------


async def _revoke(settings: Settings, store: Store, *, sub: str | None, handle: str | None) -> int:
    cookie_mode = settings.token_storage == "cookie"
    if cookie_mode:
        cookie_sessions = CookieSessions(store, CookieCodec(settings), settings.session)
        if sub is not None:
            ended = await cookie_sessions.destroy_where(sub=sub)
        else:
            assert handle is not None
            keys = [
                key.removeprefix(RECORD_PREFIX) for key in await store.indexed_keys() if key.startswith(RECORD_PREFIX)
            ]
            key = _resolve(handle, keys)
            ended = int(key is not None and await cookie_sessions.destroy_handle(key))
    else:
        sessions = _server_sessions(settings, store)
        if sub is not None:
            ended = await sessions.destroy_where(sub=sub)
        else:
            assert handle is not None
            owners = {info.key: info.sub for info in await sessions.list_all()}
            key = _resolve(handle, list(owners))
            ended = int(key is not None and await sessions.destroy_own(key, sub=owners[key]))
    what = f"sub {sub!r}" if sub is not None else f"handle {handle!r}"
    if not ended:
        print(f"bff: sessions: 0 ended ({what}): no live session matched")
        return EXIT_NONE_MATCHED
    how = "their cookie-session records are marked ended" if cookie_mode else "their records are deleted"
    print(f"bff: sessions: {ended} ended ({what}): {how}; every replica refuses them from their next request on")
    return 0


def _resolve(handle: str, keys: Sequence[str]) -> str | None:
    """The one key `handle` names (the full key, or a unique prefix), None when none does."""
    handle = handle.lower()
    matches = [key for key in keys if _KEY.fullmatch(key) and key.startswith(handle)]
    if len(matches) > 1:
        raise UsageProblem(f"--handle: {handle!r} matches {len(matches)} sessions; give more characters")
    return matches[0] if matches else None
