"""SessionMemo: the sessions recent requests loaded, by their exact `Cookie` header.

A browser sends the same `Cookie` header request after request. While the store's `version()`
has not moved and none of the session's deadlines has come, loading that header again gives the
same session, so `ServerSessions.load` and `CookieSessions.load` answer from here: no cookie
parsing, signature or seal check, key hash, cache lookups or expiry arithmetic. Their `known`
is this memo's, without a coroutine: the proxy asks it first (`bff.tokens`). Measured inside
a running worker, those cost ~10 µs of an authenticated request; this lookup costs about 1 µs.

What keeps the answer the one a full load would give:
- the version is read before the full load and kept with its result; a write anywhere (a logout
  or revoke on another worker, a refresh, a slide) moves it, and the next request loads again;
- the deadline kept is the earliest of the session's absolute end and its next slide, which
  comes before its idle end: expiry and sliding happen on the full load, as before;
- nothing is kept for a store that cannot tell its version (None), a request with several
  `Cookie` headers or one longer than `MAX_COOKIE_HEADER`, or a load that found no session (a
  forged cookie cannot crowd out the real ones).

Bounded: `SIZE` entries, least recently used out (at most `SIZE * MAX_COOKIE_HEADER` bytes of
keys, 16 MiB; a server-mode cookie header is usually under 200 bytes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable

from bff.headers import RawHeaders
from bff.session import Session
from bff.stores import Store

__all__ = ["MAX_COOKIE_HEADER", "SIZE", "SessionMemo"]

SIZE = 2048
MAX_COOKIE_HEADER = 8192
_COOKIE = b"cookie"


class SessionMemo:
    def __init__(self, store: Store, clock: Callable[[], float], size: int = SIZE) -> None:
        self._store = store
        self._clock = clock
        self._size = size
        # Cookie header -> (the store's version before the load, deadline, session); most recent last.
        self._entries: OrderedDict[bytes, tuple[int, float, Session]] = OrderedDict()

    async def load(
        self, headers: RawHeaders, full_load: Callable[[RawHeaders], Awaitable[tuple[Session | None, float]]]
    ) -> Session | None:
        """The session for these request headers: the one kept for their `Cookie` header, or what
        `full_load(headers)` finds, kept until the deadline it gives with it (the session's end or
        next slide, whichever comes first; in the past: not kept)."""
        known = self.known(headers)
        if known is not None:
            return known
        cookie = self.cookie_header(headers)
        if cookie is None:
            return (await full_load(headers))[0]
        version = self._store.version()  # before the load: a write meanwhile moves it
        session, reusable_until = await full_load(headers)
        if session is not None:
            self.keep(cookie, version, reusable_until, session)
        return session

    @staticmethod
    def cookie_header(headers: RawHeaders) -> bytes | None:
        """The request's one `Cookie` header, or None (none, several, or too long to keep)."""
        found: bytes | None = None
        for name, value in headers:
            if len(name) == 6 and name.lower() == _COOKIE:
                if found is not None:
                    return None
                found = value
        return found if found is not None and len(found) <= MAX_COOKIE_HEADER else None

    def known(self, headers: RawHeaders) -> Session | None:
        """The session kept for the request's `Cookie` header, while the store's version and the
        deadline allow; None: `load` must look. No await, so the proxy's hot path asks this first."""
        cookie = self.cookie_header(headers)
        if cookie is None:
            return None
        entry = self._entries.get(cookie)
        if entry is None:
            return None
        if entry[0] != self._store.version() or self._clock() >= entry[1]:
            del self._entries[cookie]
            return None
        self._entries.move_to_end(cookie)
        return entry[2]

    def keep(self, cookie: bytes, version: int | None, deadline: float, session: Session) -> None:
        """Answer `cookie` with `session` until `deadline`, while the store stays at `version`."""
        if version is None or deadline <= self._clock():
            return
        self._entries[cookie] = (version, deadline, session)
        self._entries.move_to_end(cookie)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
