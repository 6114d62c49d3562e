"""TokenManager: the access token for each proxied request, refreshed when due, one refresh at a time.

The proxy asks `bearer()` before forwarding and `bearer_after_rejection()` after an upstream 401
(the `BearerSource` protocol of docs/architecture.md). For `user` routes the token comes from the
session named by the cookie; for `client` routes it is the BFF's own client-credentials token.

Single flight, because with refresh-token rotation a second refresh with the same (now used)
refresh token reads as theft at the provider and kills the session:
  * in-process, every request of one session that needs a refresh awaits one shared task;
  * across workers and replicas, that task holds the store lease `refresh:<key>`, then reloads
    the session and refreshes only if its access token is still the stale one; else another
    worker refreshed it already and its result is used (lock, reload, re-check, refresh, save).

`invalid_grant` ends the session (401 `session_expired`, with the clearing `Set-Cookie`); a
provider that is down or answers 5xx does not (503 with `Retry-After`, session kept).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from bff.config import RouteSettings, Settings
from bff.errors import BffError, IdPError, NotAuthenticated, ProviderUnavailable, RefreshRejected, SessionExpired
from bff.metrics import Metrics
from bff.oidc import OIDCClient
from bff.session import Session, SessionManager
from bff.tokenset import TokenSet

__all__ = ["TokenManager"]

log = logging.getLogger("bff.tokens")

T = TypeVar("T")
RawHeaders = Sequence[tuple[bytes, bytes]]
CLIENT_TOKEN_SKEW = 30.0
"""A client-credentials token is replaced this long before it expires."""


class TokenManager:
    def __init__(
        self,
        settings: Settings,
        sessions: SessionManager,
        oidc: OIDCClient | None,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._oidc = oidc
        self._metrics = metrics
        self._clock = clock
        self._skew = settings.oidc.refresh_skew if settings.oidc else 0.0
        timeout = settings.oidc.timeout if settings.oidc else 10.0
        # The lease outlives one refresh call (so it never lapses under a live holder); a waiter
        # gives up (503) a little after a holder would have timed out.
        self._lock_ttl = timeout + 5.0
        self._lock_wait = timeout + 5.0
        self._refreshing: dict[str, asyncio.Task[Session]] = {}
        self._client_tokens: TokenSet | None = None
        self._client_task: asyncio.Task[TokenSet] | None = None

    # -- BearerSource ---------------------------------------------------------------------------

    async def bearer(self, route: RouteSettings, headers: RawHeaders) -> str | None:
        """The access token for a request on `route`; None forwards without `Authorization`."""
        if route.token == "none":
            return None
        if route.token == "client":
            return (await self.client_tokens()).access_token
        session = await self._sessions.load_from_headers(headers)
        if session is None:
            if route.token == "user":
                raise NotAuthenticated("this route needs a signed-in user")
            return None
        return (await self.fresh_session(session)).tokens.access_token

    async def bearer_after_rejection(self, route: RouteSettings, headers: RawHeaders, rejected: str) -> str | None:
        """The upstream answered 401 to `rejected`: a newer token, or None when there is none."""
        if route.token == "none":
            return None
        if route.token == "client":
            if self._client_tokens is not None and self._client_tokens.access_token == rejected:
                self._client_tokens = None
            token = (await self.client_tokens()).access_token
            return token if token != rejected else None
        session = await self._sessions.load_from_headers(headers)
        if session is None:
            return None
        if session.tokens.access_token == rejected:
            session = await self._refresh(session)
        token = session.tokens.access_token
        return token if token != rejected else None

    # -- sessions -------------------------------------------------------------------------------

    async def fresh_session(self, session: Session) -> Session:
        """`session`, refreshed first when its access token expires within the skew. With the
        skew at 0 (proactive refresh off) refreshing waits for the upstream's 401."""
        now = self._clock()
        if self._skew > 0 and session.tokens.expires_within(self._skew, now):
            try:
                return await self._refresh(session)
            except ProviderUnavailable:
                if session.tokens.expires_within(0, self._clock()):
                    raise
                return session  # the provider is down but the token still works: use it meanwhile
        return session

    async def _refresh(self, session: Session) -> Session:
        """Single flight in this process: callers for one session share one task, which survives
        any one caller being cancelled (a browser that went away)."""
        task = self._refreshing.get(session.key)
        if task is None:
            task = _start(self._refresh_with_lease(session))
            self._refreshing[session.key] = task
            task.add_done_callback(functools.partial(self._forget, session.key))
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[Session]) -> None:
        if self._refreshing.get(key) is task:
            del self._refreshing[key]

    async def _refresh_with_lease(self, stale: Session) -> Session:
        """Lock, reload, re-check, refresh, save: across workers one refresh per stale token."""
        assert self._oidc is not None
        async with self._sessions.store.lock(f"refresh:{stale.key}", ttl=self._lock_ttl, wait=self._lock_wait):
            session = await self._sessions.load(stale.id)
            if session is None:
                raise SessionExpired("the session has ended", headers=[self._clear_cookie()])
            if session.tokens.access_token != stale.tokens.access_token:
                self._metrics.refreshed("shared")  # another worker refreshed it meanwhile
                return session
            refresh_token = session.tokens.refresh_token
            if not refresh_token:
                return self._without_refresh_token(session)
            try:
                tokens = await self._oidc.refresh(refresh_token)
            except RefreshRejected as exc:
                self._metrics.refreshed("rejected")
                await self._sessions.destroy(session)
                log.info("Refresh rejected, session ended. sub: '%s', sid: '%s'", session.sub, session.sid)
                raise RefreshRejected(
                    "the session can no longer be refreshed; sign in again",
                    error=exc.error,
                    status=exc.status,
                    headers=[self._clear_cookie()],
                ) from None
            except ProviderUnavailable:
                self._metrics.refreshed("unavailable")
                log.warning("Refresh failed, provider unavailable; session kept. sub: '%s'", session.sub)
                raise
            except IdPError as exc:
                self._metrics.refreshed("error")
                log.warning("Refresh failed: %s. sub: '%s'", exc.detail, session.sub)
                raise
            session = session.with_tokens(tokens)
            await self._sessions.save(session)
            self._metrics.refreshed("success")
            log.info("Access token refreshed. sub: '%s', sid: '%s'", session.sub, session.sid)
            return session

    def _without_refresh_token(self, session: Session) -> Session:
        """No refresh token (no `offline_access`): the access token is used until it expires,
        then the session is over."""
        if session.tokens.expires_within(0, self._clock()):
            raise SessionExpired(
                "the access token expired and there is no refresh token", headers=[self._clear_cookie()]
            )
        return session

    def _clear_cookie(self) -> tuple[str, str]:
        return ("set-cookie", self._sessions.clear_cookie_header())

    # -- the BFF's own token ----------------------------------------------------------------------

    async def client_tokens(self) -> TokenSet:
        """The client-credentials token, cached until `CLIENT_TOKEN_SKEW` before it expires;
        concurrent callers share one request."""
        cached = self._client_tokens
        if cached is not None and not cached.expires_within(CLIENT_TOKEN_SKEW, self._clock()):
            return cached
        if self._oidc is None:
            raise BffError("a client-credentials route needs an [oidc] section")
        if self._client_task is None or self._client_task.done():
            self._client_task = _start(self._fetch_client_tokens())
        return await asyncio.shield(self._client_task)

    async def _fetch_client_tokens(self) -> TokenSet:
        assert self._oidc is not None
        tokens = await self._oidc.client_credentials()
        self._client_tokens = tokens
        return tokens


def _start(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    task = asyncio.ensure_future(coro)
    # Retrieve the outcome even when every waiter went away, so nothing logs "never retrieved".
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task
