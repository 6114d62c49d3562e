"""CookieSessions: the whole session sealed into the browser's cookies (`token_storage = "cookie"`).

Owns the cookie-mode lifecycle. The session (id, claims, tokens, times) is JSON sealed with
AES-GCM under a key derived from `secret_keys` (`CookieCodec.sealer`: the first key seals, every
listed key opens, a retired key's cookie reads as no session), base64url, split into numbered
chunks (`bff.cookies`) when it is larger than one cookie holds.

The store keeps nothing a session needs to load, so a restart with an empty store keeps every
user signed in. It keeps three short things, when there is a store to keep them in:
  * `successor:<sha256(refresh token)>`: "this refresh token was exchanged; here is the
    result", sealed under a key derived from that refresh token, for `SUCCESSOR_TTL` seconds.
    A request carrying the pre-refresh cookie (concurrent, or on another worker or replica)
    takes the new tokens from it instead of refreshing again, which a rotating provider would
    read as theft;
  * `cookie-session:<key>`, indexed by `sub` and the provider's `sid`: `live`, or `ended` after
    logout or back-channel logout. A cookie whose record says `ended` is refused, so a copied
    cookie dies at logout on every worker that shares the store;
  * the refresh lease `refresh:<sha256(refresh token)>`.
Opened cookies are cached by their exact value, as server mode caches decoded records, and loads
are memoised by the request's `Cookie` header as in server mode (`bff.session_memo`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from bff.config import SessionSettings
from bff.cookies import MAX_CHUNKS, CookieCodec
from bff.errors import SessionTooLarge, StoreUnavailable
from bff.headers import RawHeaders
from bff.login import LoginResult
from bff.sealing import Sealer
from bff.server_sessions import DECODED_CACHE_SIZE, SLIDE_INTERVAL
from bff.session import Session, new_session, session_from_fields, session_key
from bff.session_memo import SessionMemo
from bff.stores import Store
from bff.stores.common import require_criterion
from bff.stores.read_cache import ReadCache
from bff.tokenset import TokenSet

__all__ = ["RECORD_PREFIX", "SUCCESSOR_TTL", "CookieSessions"]

log = logging.getLogger("bff.session")

SUCCESSOR_TTL = 120.0
"""How long a successor record answers for a used refresh token: longer than any request that
set out with the pre-refresh cookie can take to arrive."""

_PURPOSE = "session cookie"
_AAD = b"bff session cookie v1"
_SUCCESSOR_SALT = b"bff-proxy successor"
_SUCCESSOR_INFO = b"bff refreshed session"
_LIVE, _ENDED = b"live", b"ended"
RECORD_PREFIX = "cookie-session:"
"""Store keys of the records that say whether a cookie session is `live` or `ended`."""


class CookieSessions:
    """The `Sessions` of cookie mode; `store` holds only the short records described above."""

    def __init__(
        self,
        store: Store,
        cookies: CookieCodec,
        settings: SessionSettings,
        *,
        lease_ttl: float = 15.0,
        keep_id_token: bool = False,
        clock: Callable[[], float] = time.time,
        cache_size: int = DECODED_CACHE_SIZE,
    ) -> None:
        self.store = store
        self._reads = ReadCache(store)
        # The ID token repeats the claims (doubling the cookie); only an end-session URL with
        # `id_token_hint` needs it.
        self._keep_id_token = keep_id_token
        self._cookies = cookies
        self._sealer = cookies.sealer(_PURPOSE)
        self._settings = settings
        self._lease_ttl = lease_ttl
        self._clock = clock
        self._slide_interval = min(SLIDE_INTERVAL, settings.idle_timeout / 4)
        # the cookie's exact value -> the session it opened to; most recent last.
        self._opened: OrderedDict[str, Session] = OrderedDict()
        self._cache_size = cache_size
        self._memo = SessionMemo(store, clock)
        self.known = self._memo.known  # `Sessions.known`, bound: one call less per proxied request

    def __repr__(self) -> str:
        return f"CookieSessions(store={self.store!r})"

    async def create(self, login: LoginResult, headers: RawHeaders) -> tuple[Session, list[str]]:
        now = self._clock()
        session = new_session(login, headers, now=now, lifetime=self._settings.absolute_timeout)
        # The browser may still hold the chunks of an earlier, larger session (another user, a
        # session ended elsewhere) that this login does not overwrite: those are deleted.
        # Too large: fails before anything is kept.
        held = self._cookies.chunks_held(headers, self._cookies.session_cookie_name)
        cookies = self._set_cookies(session, previous_chunks=held)
        await self.store.set(
            _record_key(session.key), _LIVE, session.expires_at - now, sub=session.sub, sid=session.sid
        )
        log.info("Session created. sub: '%s', sid: '%s', session: '%s'", session.sub, session.sid, session.key[:12])
        return session, cookies

    async def load(self, headers: RawHeaders) -> Session | None:
        return await self._memo.load(headers, self._full_load)

    async def _full_load(self, headers: RawHeaders) -> tuple[Session | None, float]:
        session = await self._opened_session(headers)
        if session is None or session.reissue:  # a reissued session's new cookie is on its way
            return session, 0.0
        # The next slide comes before the idle end.
        return session, min(session.expires_at, session.last_used_at + self._slide_interval)

    async def _opened_session(self, headers: RawHeaders) -> Session | None:
        found = self._cookies.read_chunked(headers, self._cookies.session_cookie_name)
        if found is None:
            return None
        value, chunks = found
        session = self._opened.get(value)
        if session is None:
            opened = self._open(value)
            if opened is None:
                return None
            session = dataclasses.replace(opened, cookie_chunks=chunks)
            self._remember(value, session)
        else:
            self._opened.move_to_end(value)
            if session.cookie_chunks != chunks:
                session = dataclasses.replace(session, cookie_chunks=chunks)
        now = self._clock()
        if now >= session.expires_at or now - session.last_used_at >= self._settings.idle_timeout:
            return None
        if await self._reads.get(_record_key(session.key)) == _ENDED:
            return None
        if now - session.last_used_at >= self._slide_interval:
            # This worker saw the use: requests still carrying this cookie (concurrent ones, or a
            # client that did not take the re-sent cookie) slide from here, as server mode's
            # record does, instead of sealing a new cookie each (~170 us) until it arrives.
            self._opened[value] = dataclasses.replace(session, last_used_at=now)
            session = dataclasses.replace(session, last_used_at=now, reissue=True)
        return session

    @contextlib.asynccontextmanager
    async def refreshing(self, stale: Session) -> AsyncIterator[Session | None]:
        name = _token_hash(stale.tokens)
        async with self.store.lock(f"refresh:{name}", ttl=self._lease_ttl, wait=self._lease_ttl):
            yield await self._successor(stale) or stale

    async def save(self, session: Session, *, replacing: Session) -> None:
        """The new tokens reach this browser in its cookie (`cookies_for`); the successor record
        hands them to every other request still carrying `replacing`'s."""
        material = replacing.tokens.refresh_token or replacing.tokens.access_token
        box = Sealer([material.encode()], salt=_SUCCESSOR_SALT, info=_SUCCESSOR_INFO)
        sealed = box.seal(_encode(session, keep_id_token=self._keep_id_token))
        try:
            await self.store.set(f"successor:{_token_hash(replacing.tokens)}", sealed, SUCCESSOR_TTL)
        except StoreUnavailable:
            # This browser still gets its new cookie; only requests already under way with the old
            # one would refresh again.
            log.warning("Refresh result not shared: store unavailable. session: '%s'", session.key[:12])

    def cookies_for(self, session: Session, *, loaded: Session) -> list[str]:
        if session is loaded and not loaded.reissue:
            return []
        return self._set_cookies(session, previous_chunks=loaded.cookie_chunks)

    async def destroy(self, session: Session) -> list[str]:
        await self._end(session)
        log.info("Session ended. session: '%s'", session.key[:12])
        return self.clear_cookies(session)

    def clear_cookies(self, session: Session | None = None) -> list[str]:
        # Without the session in hand the browser's chunk count is unknown: clear every name.
        chunks = session.cookie_chunks if session is not None and session.cookie_chunks else MAX_CHUNKS
        return self._cookies.clear_chunked(self._cookies.session_cookie_name, chunks)

    async def destroy_where(self, *, sub: str | None = None, sid: str | None = None) -> int:
        require_criterion("destroy_where", sub, sid)
        count = 0
        for key in await self.store.keys_where(sub=sub, sid=sid):
            if await self.store.get(key) == _LIVE:
                await self.store.set(key, _ENDED, self._settings.absolute_timeout, sub=sub, sid=sid)
                count += 1
        log.info("Sessions ended. sub: '%s', sid: '%s', count: %d", sub, sid, count)
        return count

    async def alive(self, handles: Mapping[str, float]) -> set[str]:
        """Live: before its absolute end, and its record not `ended`. (The idle clock slides in
        the browser's cookie, which only the requests carrying it show.)"""
        now = self._clock()
        records = await asyncio.gather(*(self.store.get(_record_key(key)) for key in handles))
        ends = handles.items()
        return {key for (key, end), record in zip(ends, records, strict=True) if now < end and record != _ENDED}

    async def destroy_handle(self, key: str) -> bool:
        """Mark the session with handle `key` ended if it is live (`bff sessions revoke
        --handle`); return whether it was."""
        ended = await self.store.replace(_record_key(key), _ENDED, self._settings.absolute_timeout, expected=_LIVE)
        if ended:
            log.info("Session ended. session: '%s'", key[:12])
        return ended

    # -- helpers --------------------------------------------------------------------------------

    async def _end(self, session: Session) -> None:
        try:
            await self.store.set(_record_key(session.key), _ENDED, max(1.0, session.expires_at - self._clock()))
        except StoreUnavailable:
            log.warning("Session end not recorded: store unavailable; a copy of its cookie stays valid")

    def _set_cookies(self, session: Session, *, previous_chunks: int) -> list[str]:
        sealed = self._sealer.seal(_encode(session, keep_id_token=self._keep_id_token), _AAD)
        value = base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")
        max_age = max(0, int(session.expires_at - self._clock()))
        cookies = self._cookies.set_chunked(
            self._cookies.session_cookie_name, value, max_age=max_age, previous_chunks=previous_chunks
        )
        if cookies is None:
            raise SessionTooLarge(
                f"the session is {len(value)} bytes sealed, more than {MAX_CHUNKS} cookies hold; keep fewer "
                'claims with session.keep_claims, or use token_storage = "server"'
            )
        return cookies

    def _open(self, value: str) -> Session | None:
        try:
            sealed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            return None
        plaintext = self._sealer.open(sealed, _AAD)
        return None if plaintext is None else _decode(plaintext)

    async def _successor(self, stale: Session) -> Session | None:
        sealed = await self.store.get(f"successor:{_token_hash(stale.tokens)}")
        if sealed is None:
            return None
        material = stale.tokens.refresh_token or stale.tokens.access_token
        plaintext = Sealer([material.encode()], salt=_SUCCESSOR_SALT, info=_SUCCESSOR_INFO).open(sealed)
        successor = None if plaintext is None else _decode(plaintext)
        if successor is None or successor.key != stale.key:
            return None
        return dataclasses.replace(successor, cookie_chunks=stale.cookie_chunks)

    def _remember(self, value: str, session: Session) -> None:
        self._opened[value] = session
        if len(self._opened) > self._cache_size:
            self._opened.popitem(last=False)


def _record_key(key: str) -> str:
    return RECORD_PREFIX + key


def _token_hash(tokens: TokenSet) -> str:
    """Names the refresh lease and the successor record; never the token itself in the store."""
    return hashlib.sha256((tokens.refresh_token or tokens.access_token).encode()).hexdigest()


def _encode(session: Session, *, keep_id_token: bool) -> bytes:
    tokens = session.tokens if keep_id_token else dataclasses.replace(session.tokens, id_token=None)
    data: dict[str, Any] = {
        "v": 1,
        "id": session.id,
        "sub": session.sub,
        "sid": session.sid,
        "claims": dict(session.claims),
        "tokens": tokens.to_dict(),
        "created_at": session.created_at,
        "last_used_at": session.last_used_at,
        "expires_at": session.expires_at,
        "user_agent": session.user_agent,
    }
    return json.dumps(data, separators=(",", ":")).encode()


def _decode(plaintext: bytes) -> Session | None:
    try:
        data = json.loads(plaintext)
        if data.get("v") != 1:
            return None
        return session_from_fields(data["id"], session_key(data["id"]), data, data)
    except (AttributeError, KeyError, TypeError, ValueError, UnicodeError):
        return None
