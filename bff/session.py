"""Sessions: the `Session` model, and the two protocols that say where one lives between requests.

`Sessions` is the seam between the request and its session: `ServerSessions`
(`bff.server_sessions`) keeps each session in a `Store` record named by a signed random id in
the cookie; `CookieSessions` (`bff.cookie_sessions`) seals the whole session into chunked
cookies. `Devices` is what only server mode can do: list a user's sessions and end one of them.
Methods that change what the browser holds return the `Set-Cookie` values to send; nothing
here builds a response. Refreshing tokens is `bff.tokens`' business, who issued them `bff.login`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from bff.headers import RawHeaders
from bff.login import LoginResult
from bff.tokenset import TokenSet

__all__ = [
    "MAX_USER_AGENT",
    "Devices",
    "Session",
    "SessionInfo",
    "Sessions",
    "new_session",
    "session_from_fields",
    "session_key",
]

MAX_USER_AGENT = 512
"""Characters of the browser's `User-Agent` a session keeps: enough to tell devices apart, and a
bound on what one request can make the store (or a cookie) hold."""


def session_key(session_id: str) -> str:
    """The store key of a session: the hex SHA-256 of its id (also its public handle)."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Session:
    id: str = field(repr=False)
    """The secret random 256-bit id; it lives only in the cookie."""
    key: str
    """`sha256(id)` in hex: the store key in server mode, and the public handle (`sid` in
    `/bff/user`, `id` in `/bff/sessions`) in both modes."""
    sub: str
    sid: str | None
    """The provider's session id, for back-channel logout; None for a token API."""
    claims: Mapping[str, Any] = field(repr=False)
    """The claims `/bff/user` shows."""
    tokens: TokenSet = field(repr=False)
    created_at: float
    last_used_at: float
    expires_at: float
    """The absolute end of the session; the idle timeout may end it sooner."""
    user_agent: str
    cookie_chunks: int = field(default=0, compare=False)
    """Cookie mode: how many chunk cookies the browser sent it in (0 in server mode), so that a
    smaller cookie deletes the chunks it no longer needs."""
    reissue: bool = field(default=False, compare=False)
    """Cookie mode: the browser's cookie is behind this state (its idle clock slid), so the
    response re-sends it."""

    def with_tokens(self, tokens: TokenSet) -> Session:
        """This session with refreshed tokens, keeping the refresh and ID tokens a refresh
        response left out."""
        return dataclasses.replace(self, tokens=self.tokens.merged_with(tokens))


def new_session(login: LoginResult, headers: RawHeaders, *, now: float, lifetime: float) -> Session:
    """A session for a login that just succeeded, with a new random id (never reuse one: no
    session fixation), ending `lifetime` seconds from `now` at the latest."""
    session_id = secrets.token_urlsafe(32)
    user_agent = next((value.decode("latin-1") for name, value in headers if name.lower() == b"user-agent"), "")
    return Session(
        id=session_id,
        key=session_key(session_id),
        sub=login.sub,
        sid=login.provider_sid,
        claims=dict(login.claims),
        tokens=login.tokens,
        created_at=now,
        last_used_at=now,
        expires_at=now + lifetime,
        user_agent=user_agent[:MAX_USER_AGENT],
    )


def session_from_fields(
    session_id: str, key: str, fields: Mapping[str, Any], secret_fields: Mapping[str, Any]
) -> Session:
    """A session read back from where it was kept (a store record, a sealed cookie): `fields`
    has `sub`, `sid`, the three times and `user_agent`, `secret_fields` the `claims` and the
    `tokens` (one mapping may hold both). Raises KeyError, TypeError or ValueError when they are
    not all there, or not of their kind."""
    return Session(
        id=session_id,
        key=key,
        sub=fields["sub"],
        sid=fields["sid"],
        claims=secret_fields["claims"],
        tokens=TokenSet.from_dict(secret_fields["tokens"]),
        created_at=fields["created_at"],
        last_used_at=fields["last_used_at"],
        expires_at=fields["expires_at"],
        user_agent=fields["user_agent"],
    )


@dataclass(frozen=True)
class SessionInfo:
    """One row of `/bff/sessions` (and of `bff sessions list`): no secret in it."""

    key: str
    sub: str
    sid: str | None
    created_at: float
    last_used_at: float
    user_agent: str
    expires_at: float


class Sessions(Protocol):
    """Where a session lives between requests: a store record named by a signed id
    (`ServerSessions`), or the whole session sealed into chunked cookies (`CookieSessions`)."""

    async def load(self, headers: RawHeaders) -> Session | None:
        """The live session the request's cookies name, or None (none, tampered, ended, idle
        too long, past its absolute end). Slides the idle clock."""

    def known(self, headers: RawHeaders) -> Session | None:
        """What `load(headers)` would give, when this process can tell without reading a cookie
        or the store (`bff.session_memo`); None: ask `load`."""

    async def create(self, login: LoginResult, headers: RawHeaders) -> tuple[Session, list[str]]:
        """A new session with a new random id (never reuse one: no session fixation) for the
        request with `headers` (its user agent; the cookies it replaces), and the `Set-Cookie`
        values that hand it to the browser."""

    def refreshing(self, stale: Session) -> AbstractAsyncContextManager[Session | None]:
        """Hold the refresh lease of `stale` across workers and replicas, and yield its newest
        state (None: it ended). When the yielded session's access token is no longer the stale
        one, someone else refreshed it meanwhile: use that, refresh nothing."""

    async def save(self, session: Session, *, replacing: Session) -> None:
        """Keep `session` (new tokens after refreshing `replacing`), inside `refreshing`. A
        session ended meanwhile stays ended: logout during a refresh wins."""

    def cookies_for(self, session: Session, *, loaded: Session) -> list[str]:
        """`Set-Cookie` values that bring a browser whose cookie held `loaded` up to `session`:
        none in server mode (the cookie only names the record)."""

    async def destroy(self, session: Session) -> list[str]:
        """End `session` (logout); return the `Set-Cookie` values that clear it."""

    def clear_cookies(self, session: Session | None = None) -> list[str]:
        """`Set-Cookie` values that clear the session cookie(s) of `session` (or of nobody in
        particular), for a session found dead."""

    async def destroy_where(self, *, sub: str | None = None, sid: str | None = None) -> int:
        """End every session of `sub` and/or provider session `sid` (back-channel logout);
        return how many ended, when that can be known."""

    async def alive(self, handles: Mapping[str, float]) -> set[str]:
        """Which of `handles` (session keys, each with its session's absolute end as its stream
        saw it) are still live sessions, however the others ended (on any worker, or straight
        in the store); for `bff.streams`, once per check for all of a process's open streams."""


class Devices(Protocol):
    """A user's sessions as devices (`/bff/sessions`): server mode only, where they are listed."""

    async def list_for(self, sub: str) -> list[SessionInfo]:
        """The live sessions of `sub`, most recently used first."""

    async def destroy_own(self, key: str, *, sub: str) -> bool:
        """End the session `key` if it is one of `sub`'s ("log out this device" must not reach
        another user's session); return whether it ended."""
