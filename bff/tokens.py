"""TokenManager: the access token for each proxied request, refreshed when due, one refresh at a time.

The proxy asks `bearer()` before forwarding and `bearer_after_rejection()` after an upstream 401
(the `BearerSource` protocol, below and in docs/architecture.md). For `user` routes the token comes from the
session named by the cookie; for `client` routes it is the BFF's own client-credentials token.

Single flight, because with refresh-token rotation a second refresh with the same (now used)
refresh token reads as theft at the provider and kills the session:
  * in-process, every request of one session that needs a refresh awaits one shared task;
  * across workers and replicas, that task holds the session's refresh lease
    (`Sessions.refreshing`), which yields its newest state, and refreshes only if its access
    token is still the stale one; else another worker refreshed it already and its result is
    used (lock, reload, re-check, refresh, save). Where that state lives is the `Sessions`' business,
    who renews the tokens the `LoginSource`'s.

A `Bearer` carries the `Set-Cookie` values a changed session needs (cookie mode: the resealed
cookie after a refresh), which the proxy adds to the upstream's response.

`invalid_grant` ends the session (401 `session_expired`, with the clearing `Set-Cookie`); a
provider that is down or answers 5xx does not (503 with `Retry-After`, session kept).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from bff.config import RouteSettings
from bff.errors import BffError, IdPError, NotAuthenticated, ProviderUnavailable, RefreshRejected, SessionExpired
from bff.headers import RawHeaders
from bff.login import LoginSource
from bff.metrics import Metrics
from bff.request_ids import note_session
from bff.session import Session, Sessions
from bff.tokenset import TokenSet

__all__ = ["CLIENT_TOKEN_SKEW", "Bearer", "BearerSource", "TokenManager"]

log = logging.getLogger("bff.tokens")

T = TypeVar("T")
CLIENT_TOKEN_SKEW = 30.0
"""A client-credentials token is replaced this long before it expires."""


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 4x, and one is built per proxied request
class Bearer:
    """The access token for one proxied request, and what the response must carry besides."""

    token: str
    set_cookies: Sequence[str] = ()
    """`Set-Cookie` values for the browser: the session changed while getting the token."""
    session: Session | None = None
    """The session the token belongs to (None for a client-credentials token)."""
    loaded: Session | None = None
    """That session as the browser's cookie held it."""
    token_type: str = "Bearer"
    """The scheme the token goes with: "Bearer", or "DPoP" with a proof of `dpop_key` (`bff.upstream_auth`)."""
    dpop_key: str | None = field(default=None, repr=False)


class BearerSource(Protocol):
    """What `bff.proxy.ProxyApp` asks for the token of a proxied request; `TokenManager` is one."""

    async def bearer(self, route: RouteSettings, headers: RawHeaders) -> Bearer | None:
        """Access token for this request (None: forward without Authorization), with the
        `Set-Cookie` values the response must carry. Raises NotAuthenticated,
        SessionExpired/RefreshRejected (with a clearing Set-Cookie in .headers),
        ProviderUnavailable, StoreUnavailable."""

    async def bearer_after_rejection(self, route: RouteSettings, rejected: Bearer) -> Bearer | None:
        """The upstream answered 401 to `rejected`: refresh once (single flight) and return the new
        token, or None when there is nothing better to try."""


class TokenManager:
    def __init__(
        self,
        sessions: Sessions,
        source: LoginSource | None,
        metrics: Metrics,
        *,
        client_credentials: Callable[[], Awaitable[TokenSet]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self._source = source
        self._client_credentials = client_credentials
        self._metrics = metrics
        self._clock = clock
        self._skew = source.refresh_skew if source is not None else 0.0
        self._refreshing: dict[tuple[str, str], asyncio.Task[Session]] = {}
        self._client_tokens: TokenSet | None = None
        self._client_task: asyncio.Task[TokenSet] | None = None

    # -- BearerSource ---------------------------------------------------------------------------

    async def bearer(self, route: RouteSettings, headers: RawHeaders) -> Bearer | None:
        """The access token for a request on `route`; None forwards without `Authorization`."""
        if route.token == "none":
            return None
        if route.token == "client":
            return Bearer((await self.client_tokens()).access_token)
        loaded = self._sessions.known(headers)  # most requests: no coroutine for load
        if loaded is None:
            loaded = await self._sessions.load(headers)
            if loaded is None:
                if route.token == "user":
                    raise NotAuthenticated("this route needs a signed-in user")
                return None
        note_session(loaded.key, loaded.sub)
        if not self._refresh_due(loaded):  # most requests: no coroutine for fresh_session
            return self._bearer_of(loaded, loaded)
        return self._bearer_of(await self.fresh_session(loaded), loaded)

    async def bearer_after_rejection(self, route: RouteSettings, rejected: Bearer) -> Bearer | None:
        """The upstream answered 401 to `rejected`: a newer token, or None when there is none."""
        if rejected.session is None or rejected.loaded is None:
            if route.token != "client":
                return None
            if self._client_tokens is not None and self._client_tokens.access_token == rejected.token:
                self._client_tokens = None
            token = (await self.client_tokens()).access_token
            return Bearer(token) if token != rejected.token else None
        session = await self._refresh(rejected.session)
        if session.tokens.access_token == rejected.token:
            return None
        return self._bearer_of(session, rejected.loaded)

    def _bearer_of(self, session: Session, loaded: Session) -> Bearer:
        cookies = self._sessions.cookies_for(session, loaded=loaded)
        tokens = session.tokens
        return Bearer(tokens.access_token, cookies, session, loaded, tokens.token_type, tokens.dpop_key)

    # -- sessions -------------------------------------------------------------------------------

    async def fresh_session(self, session: Session) -> Session:
        """`session`, refreshed first when its access token expires within the skew. With the
        skew at 0 (proactive refresh off) refreshing waits for the upstream's 401."""
        if self._refresh_due(session):
            try:
                return await self._refresh(session)
            except ProviderUnavailable:
                if session.tokens.expires_within(0, self._clock()):
                    raise
                return session  # the provider is down but the token still works: use it meanwhile
        return session

    def _refresh_due(self, session: Session) -> bool:
        expires_at = session.tokens.expires_at  # `TokenSet.expires_within`, one call less per request
        return self._skew > 0 and expires_at is not None and expires_at - self._skew <= self._clock()

    async def _refresh(self, session: Session) -> Session:
        """Single flight in this process: callers holding the same stale state share one task,
        which survives any one caller being cancelled (a browser that went away)."""
        flight = (session.key, session.tokens.access_token)
        task = self._refreshing.get(flight)
        if task is None:
            # The task copies this request's context: its log lines carry this request's id.
            task = _detached_task(self._refresh_with_lease(session))
            self._refreshing[flight] = task
            task.add_done_callback(functools.partial(self._forget, flight))
            return await asyncio.shield(task)
        start = time.perf_counter()
        try:
            return await asyncio.shield(task)
        finally:
            self._metrics.waited_for_refresh(time.perf_counter() - start)

    def _forget(self, flight: tuple[str, str], task: asyncio.Task[Session]) -> None:
        if self._refreshing.get(flight) is task:
            del self._refreshing[flight]

    async def _refresh_with_lease(self, stale: Session) -> Session:
        """Lock, reload, re-check, refresh, save: across workers one refresh per stale token."""
        if self._source is None:
            raise BffError("refreshing a session needs a login source")
        async with self._sessions.refreshing(stale) as session:
            if session is None:
                raise SessionExpired("the session has ended", headers=self._clearing(stale))
            if session.tokens.access_token != stale.tokens.access_token:
                self._metrics.refreshed("shared")  # another worker refreshed it meanwhile
                return session
            if not session.tokens.refresh_token:
                return self._without_refresh_token(session)
            start = time.perf_counter()
            try:
                tokens = await self._source.refresh(session.tokens)
            except RefreshRejected as exc:
                self._metrics.refreshed("rejected")
                cleared = await self._sessions.destroy(session)
                log.info("Refresh rejected, session ended. sub: '%s', sid: '%s'", session.sub, session.sid)
                raise RefreshRejected(
                    "the session can no longer be refreshed; sign in again",
                    error=exc.error,
                    status=exc.status,
                    headers=[("set-cookie", cookie) for cookie in cleared],
                ) from None
            except ProviderUnavailable:
                self._metrics.refreshed("unavailable")
                log.warning("Refresh failed, provider unavailable; session kept. sub: '%s'", session.sub)
                raise
            except IdPError as exc:
                self._metrics.refreshed("error")
                log.warning("Refresh failed: %s. sub: '%s'", exc.detail, session.sub)
                raise
            finally:
                self._metrics.refresh_took(time.perf_counter() - start)
            refreshed = session.with_tokens(tokens)
            await self._sessions.save(refreshed, replacing=session)
            self._metrics.refreshed("success")
            log.info("Access token refreshed. sub: '%s', sid: '%s'", refreshed.sub, refreshed.sid)
            return refreshed

    def _without_refresh_token(self, session: Session) -> Session:
        """No refresh token (no `offline_access`): the access token is used until it expires,
        then the session is over."""
        if session.tokens.expires_within(0, self._clock()):
            raise SessionExpired(
                "the access token expired and there is no refresh token", headers=self._clearing(session)
            )
        return session

    def _clearing(self, session: Session) -> list[tuple[str, str]]:
        return [("set-cookie", cookie) for cookie in self._sessions.clear_cookies(session)]

    # -- the BFF's own token ----------------------------------------------------------------------

    async def client_tokens(self) -> TokenSet:
        """The client-credentials token, cached until `CLIENT_TOKEN_SKEW` before it expires;
        concurrent callers share one request."""
        cached = self._client_tokens
        if cached is not None and not cached.expires_within(CLIENT_TOKEN_SKEW, self._clock()):
            return cached
        if self._client_credentials is None:
            raise BffError("a client-credentials route needs an [oidc] section")
        if self._client_task is None or self._client_task.done():
            self._client_task = _detached_task(self._fetch_client_tokens(self._client_credentials))
        return await asyncio.shield(self._client_task)

    async def _fetch_client_tokens(self, fetch: Callable[[], Awaitable[TokenSet]]) -> TokenSet:
        tokens = await fetch()
        self._client_tokens = tokens
        return tokens


def _detached_task(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    task = asyncio.ensure_future(coro)
    # Retrieve the outcome even when every waiter went away, so nothing logs "never retrieved".
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task
