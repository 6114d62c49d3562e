"""ServerSessions: sessions kept in a `Store`, the cookie carrying only a signed random id.

Owns the server-mode lifecycle (create with a fresh id, load, slide, save, destroy), the refresh
lease `refresh:<key>` in the store, and the devices view (`list_for`, `destroy_own`; `list_all`
for the admin CLI). The store knows only `key = sha256(id)`; the record's bytes and their encryption are
`bff.session_record`'s, the cookie's attributes and signature `bff.cookies`'.

Decrypting and decoding a record costs more than the rest of a load, so each instance keeps the
last sessions it decoded (bounded, least recently used out), each with the exact record bytes
it came from. Every load asks the store for the record (through `ReadCache`, which answers from
memory while the store's version says no write happened anywhere): a record that changed
(refresh, slide) is other bytes and is decoded afresh, and one deleted by any worker (logout)
loads as None. In front of all that, `SessionMemo` gives a request with the same `Cookie` header
as an earlier one the same session while the store's version and the session's deadlines allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from bff.config import SessionSettings
from bff.cookies import SESSION_ID_PATTERN, CookieCodec
from bff.errors import StoreUnavailable
from bff.headers import RawHeaders
from bff.login import LoginResult
from bff.session import Session, SessionInfo, new_session, session_key
from bff.session_memo import SessionMemo
from bff.session_record import decode_record, encode_record, record_metadata, restamp
from bff.stores import Store
from bff.stores.common import require_criterion
from bff.stores.read_cache import ReadCache

__all__ = ["DECODED_CACHE_SIZE", "SLIDE_INTERVAL", "ServerSessions"]

log = logging.getLogger("bff.session")

SLIDE_INTERVAL = 60.0
"""`last_used_at` is written back at most this often (seconds; a quarter of the idle timeout when
that is shorter), so the hot path rarely writes."""

DECODED_CACHE_SIZE = 2048
"""How many decoded sessions an instance keeps. Each holds the record bytes and the decoded claims
and tokens, about 6 KiB with tokens of a typical size: some 13 MB per worker when full."""


class ServerSessions:
    """The `Sessions` and `Devices` of server mode."""

    def __init__(
        self,
        store: Store,
        cookies: CookieCodec,
        settings: SessionSettings,
        *,
        lease_ttl: float = 15.0,
        clock: Callable[[], float] = time.time,
        cache_size: int = DECODED_CACHE_SIZE,
    ) -> None:
        self.store = store
        self._reads = ReadCache(store)
        self._cookies = cookies
        self._settings = settings
        self._lease_ttl = lease_ttl
        self._clock = clock
        # With a short idle timeout (tests, kiosks) slide often enough that use keeps it alive.
        self._slide_interval = min(SLIDE_INTERVAL, settings.idle_timeout / 4)
        # store key -> (the record bytes as read, the session they decoded to); most recent last.
        self._decoded: OrderedDict[str, tuple[bytes, Session]] = OrderedDict()
        self._cache_size = cache_size
        self._memo = SessionMemo(store, clock)
        self.known = self._memo.known  # `Sessions.known`, bound: one call less per proxied request

    def __repr__(self) -> str:
        return f"ServerSessions(store={self.store!r})"

    # -- Sessions -------------------------------------------------------------------------------

    async def create(self, login: LoginResult, headers: RawHeaders) -> tuple[Session, list[str]]:
        now = self._clock()
        session = new_session(login, headers, now=now, lifetime=self._settings.absolute_timeout)
        await self.store.set(
            session.key, encode_record(session), self._ttl(session, now), sub=session.sub, sid=session.sid
        )
        log.info("Session created. sub: '%s', sid: '%s', session: '%s'", session.sub, session.sid, session.key[:12])
        max_age = max(0, int(session.expires_at - now))
        return session, [self._cookies.session_set_cookie(self._cookies.sign_session_id(session.id), max_age)]

    async def load(self, headers: RawHeaders) -> Session | None:
        return await self._memo.load(headers, self._full_load)

    async def _full_load(self, headers: RawHeaders) -> tuple[Session | None, float]:
        session_id = self._cookies.read_session_id(headers)
        return (None, 0.0) if session_id is None else await self._loaded(session_id)

    async def load_id(self, session_id: str) -> Session | None:
        """The live session for `session_id`, or None when it is missing, idle too long, past its
        absolute end, or its record does not decrypt. Slides `last_used_at` (written at most once
        per `SLIDE_INTERVAL`, and never over a newer record)."""
        return (await self._loaded(session_id))[0]

    async def _loaded(self, session_id: str) -> tuple[Session | None, float]:
        """`load_id`'s answer, and until when `SessionMemo` may give it again: the session's end
        or its next slide, whichever comes first (the slide comes before the idle end)."""
        if not SESSION_ID_PATTERN.fullmatch(session_id):
            return None, 0.0
        key = session_key(session_id)
        raw = await self._reads.get(key)
        if raw is None:
            self._decoded.pop(key, None)
            return None, 0.0
        session = self._decoded_session(raw, session_id, key)
        if session is None:
            return None, 0.0
        now = self._clock()
        if self._expired(session, now):
            self._decoded.pop(key, None)
            with contextlib.suppress(StoreUnavailable):  # the store's own ttl removes it anyway
                await self.store.delete(key)
            return None, 0.0
        stamped = session.last_used_at
        if now - stamped >= self._slide_interval:
            session = dataclasses.replace(session, last_used_at=now)
            try:
                # Only if the record is still the one read: a refresh may have saved new tokens.
                await self.store.replace(
                    key, restamp(raw, now), self._ttl(session, now), sub=session.sub, sid=session.sid, expected=raw
                )
                stamped = now
            except StoreUnavailable:
                # The session was read fine; a missed slide costs at most one interval of idle
                # time (the next request tries again: `stamped` keeps the stored last use).
                log.warning("Session use not recorded: store unavailable. session: '%s'", key[:12])
        return session, min(session.expires_at, stamped + self._slide_interval)

    @contextlib.asynccontextmanager
    async def refreshing(self, stale: Session) -> AsyncIterator[Session | None]:
        # The lease outlives one refresh call (so it never lapses under a live holder); a waiter
        # gives up (503) when a holder would have timed out.
        async with self.store.lock(f"refresh:{stale.key}", ttl=self._lease_ttl, wait=self._lease_ttl):
            yield await self.load_id(stale.id)

    async def save(self, session: Session, *, replacing: Session) -> None:  # noqa: ARG002 (the Sessions protocol's keyword)
        now = self._clock()
        ttl = self._ttl(session, now)
        if ttl <= 0:
            await self.store.delete(session.key)
            return
        written = await self.store.replace(session.key, encode_record(session), ttl, sub=session.sub, sid=session.sid)
        if not written:
            log.info("Session not saved: it ended meanwhile. sub: '%s', session: '%s'", session.sub, session.key[:12])

    def cookies_for(self, session: Session, *, loaded: Session) -> list[str]:  # noqa: ARG002 (Sessions protocol; the cookie only names the record)
        return []

    async def destroy(self, session: Session) -> list[str]:
        self._decoded.pop(session.key, None)
        if await self.store.delete(session.key):
            log.info("Session ended. session: '%s'", session.key[:12])
        return self.clear_cookies(session)

    def clear_cookies(self, session: Session | None = None) -> list[str]:  # noqa: ARG002 (Sessions protocol; one cookie whoever it held)
        return [self._cookies.session_clear_cookie()]

    async def destroy_where(self, *, sub: str | None = None, sid: str | None = None) -> int:
        require_criterion("destroy_where", sub, sid)
        count = 0
        for key in await self.store.keys_where(sub=sub, sid=sid):
            self._decoded.pop(key, None)
            if await self.store.delete(key):
                count += 1
        log.info("Sessions ended. sub: '%s', sid: '%s', count: %d", sub, sid, count)
        return count

    async def alive(self, handles: Mapping[str, float]) -> set[str]:
        now = self._clock()
        records = await asyncio.gather(*(self.store.get(key) for key in handles))
        return {
            key
            for key, raw in zip(handles, records, strict=True)
            if raw is not None and (meta := record_metadata(raw)) is not None and self._live(meta, now)
        }

    # -- Devices --------------------------------------------------------------------------------

    async def list_for(self, sub: str) -> list[SessionInfo]:
        return await self._infos(await self.store.keys_where(sub=sub), sub=sub)

    async def list_all(self) -> list[SessionInfo]:
        """Every live session of every user, most recently used first (`bff sessions list`):
        reads the whole store, so never on a request's path."""
        return await self._infos(await self.store.indexed_keys())

    async def _infos(self, keys: list[str], *, sub: str | None = None) -> list[SessionInfo]:
        """The live sessions among `keys` (of `sub`, when given), most recently used first.
        Keys that hold no session record (cookie mode's short records) are left out."""
        now = self._clock()
        infos: list[SessionInfo] = []
        for key in keys:
            raw = await self.store.get(key)
            meta = record_metadata(raw) if raw is not None else None
            if meta is None or (sub is not None and meta["sub"] != sub):
                continue
            info = SessionInfo(
                key=key,
                sub=meta["sub"],
                sid=meta["sid"],
                created_at=meta["created_at"],
                last_used_at=meta["last_used_at"],
                user_agent=meta["user_agent"],
                expires_at=meta["expires_at"],
            )
            if self._live(meta, now):
                infos.append(info)
        infos.sort(key=lambda info: info.last_used_at, reverse=True)
        return infos

    async def destroy_own(self, key: str, *, sub: str) -> bool:
        raw = await self.store.get(key)
        meta = record_metadata(raw) if raw is not None else None
        if meta is None or meta.get("sub") != sub:
            return False
        self._decoded.pop(key, None)
        deleted = await self.store.delete(key)
        if deleted:
            log.info("Session ended. session: '%s'", key[:12])
        return deleted

    # -- helpers --------------------------------------------------------------------------------

    def _decoded_session(self, raw: bytes, session_id: str, key: str) -> Session | None:
        """`decode_record(raw, ...)`, or the session these very bytes decoded to before. Only a
        record that decoded is kept; its expiry is checked by the caller on every load all the same."""
        cached = self._decoded.get(key)
        if cached is not None and cached[0] == raw and cached[1].id == session_id:
            self._decoded.move_to_end(key)
            return cached[1]
        session = decode_record(raw, session_id, key)
        if session is None:
            self._decoded.pop(key, None)
        else:
            self._decoded[key] = (raw, session)
            self._decoded.move_to_end(key)
            if len(self._decoded) > self._cache_size:
                self._decoded.popitem(last=False)
        return session

    def _live(self, meta: Mapping[str, Any], now: float) -> bool:
        """A record's public half says its session is neither past its end nor idle too long."""
        return bool(now < meta["expires_at"] and now - meta["last_used_at"] < self._settings.idle_timeout)

    def _expired(self, session: Session, now: float) -> bool:
        return now >= session.expires_at or now - session.last_used_at >= self._settings.idle_timeout

    def _ttl(self, session: Session, now: float) -> float:
        """Store ttl: whichever comes first, the idle or the absolute end."""
        return min(session.last_used_at + self._settings.idle_timeout, session.expires_at) - now
