"""Sessions: the `Session` record, and `SessionManager`, which keeps them in a `Store`.

Owns the session's lifecycle (create with a fresh id, load, slide, save, destroy, list per user)
and its encryption at rest. The cookie carries the random session id; the store knows only
`key = sha256(id)`. Each record is public metadata (sub, sid, times, user agent: enough to list
a user's devices) plus a box holding the claims and tokens, sealed with AES-GCM under a key
derived by HKDF-SHA256 from the session id, with the store key as associated data. So a copy of
the store yields neither a usable cookie nor a token, and deleting a record makes its tokens
unrecoverable. Cookies are `bff.cookies`' business; refreshing tokens is `bff.tokens`'.

Decrypting and decoding a record costs more than the rest of a load, so each manager keeps the
last sessions it decoded (bounded, least recently used out), each with the exact record bytes
it came from. The store is still read on every load: a record that changed (refresh, slide) is
other bytes and is decoded afresh, and one deleted by any worker (logout) loads as None.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bff.config import SessionSettings
from bff.cookies import SESSION_ID_PATTERN, CookieCodec
from bff.errors import StoreUnavailable
from bff.stores import Store
from bff.tokenset import TokenSet

__all__ = ["DECODED_CACHE_SIZE", "SLIDE_INTERVAL", "Session", "SessionInfo", "SessionManager", "session_key"]

log = logging.getLogger("bff.session")

SLIDE_INTERVAL = 60.0
"""`last_used_at` is written back at most this often (seconds; a quarter of the idle timeout when
that is shorter), so the hot path rarely writes."""

DECODED_CACHE_SIZE = 2048
"""How many decoded sessions a manager keeps. Each holds the record bytes and the decoded claims
and tokens, about 6 KiB with tokens of a typical size: some 13 MB per worker when full."""

_RECORD_VERSION = 1
_NONCE_BYTES = 12
_BOX_SALT = b"bff-proxy session"
_BOX_INFO = b"bff session tokens"


def session_key(session_id: str) -> str:
    """The store key of a session: the hex SHA-256 of its id (also its public handle)."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class Session:
    id: str = field(repr=False)
    """The secret random 256-bit id; it lives only in the cookie."""
    key: str
    """The store key, `sha256(id)` in hex; also the public handle in `/bff/sessions`."""
    sub: str
    sid: str | None
    """The provider's session id, for back-channel logout."""
    claims: Mapping[str, Any] = field(repr=False)
    """The ID-token claims `/bff/user` shows."""
    tokens: TokenSet = field(repr=False)
    created_at: float
    last_used_at: float
    expires_at: float
    """The absolute end of the session; the idle timeout may end it sooner."""
    user_agent: str

    def with_tokens(self, tokens: TokenSet) -> Session:
        """This session with refreshed tokens, keeping the refresh and ID tokens a refresh
        response left out."""
        return dataclasses.replace(self, tokens=self.tokens.merged_with(tokens))


@dataclass(frozen=True)
class SessionInfo:
    """One row of `/bff/sessions`: no secret in it."""

    key: str
    created_at: float
    last_used_at: float
    user_agent: str
    expires_at: float


class SessionManager:
    def __init__(
        self,
        store: Store,
        cookies: CookieCodec,
        settings: SessionSettings,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = DECODED_CACHE_SIZE,
    ) -> None:
        self.store = store
        self._cookies = cookies
        self._settings = settings
        self._clock = clock
        # With a short idle timeout (tests, kiosks) slide often enough that use keeps it alive.
        self._slide_interval = min(SLIDE_INTERVAL, settings.idle_timeout / 4)
        # store key -> (the record bytes as read, the session they decoded to); most recent last.
        self._decoded: OrderedDict[str, tuple[bytes, Session]] = OrderedDict()
        self._cache_size = cache_size

    def __repr__(self) -> str:
        return f"SessionManager(store={self.store!r})"

    async def create(
        self,
        *,
        sub: str,
        sid: str | None,
        claims: Mapping[str, Any],
        tokens: TokenSet,
        user_agent: str,
    ) -> Session:
        """A new session with a new random id (never reuse one: no session fixation)."""
        now = self._clock()
        session_id = secrets.token_urlsafe(32)
        session = Session(
            id=session_id,
            key=session_key(session_id),
            sub=sub,
            sid=sid,
            claims=dict(claims),
            tokens=tokens,
            created_at=now,
            last_used_at=now,
            expires_at=now + self._settings.absolute_timeout,
            user_agent=user_agent[:512],
        )
        await self.store.set(session.key, _encode(session), self._ttl(session, now), sub=sub, sid=sid)
        log.info("Session created. sub: '%s', sid: '%s', session: '%s'", sub, sid, session.key[:12])
        return session

    async def load(self, session_id: str) -> Session | None:
        """The live session for `session_id`, or None when it is missing, idle too long, past its
        absolute end, or its record does not decrypt. Slides `last_used_at` (written at most once
        per `SLIDE_INTERVAL`, and never over a newer record)."""
        if not SESSION_ID_PATTERN.fullmatch(session_id):
            return None
        key = session_key(session_id)
        raw = await self.store.get(key)
        if raw is None:
            self._decoded.pop(key, None)
            return None
        session = self._decoded_session(raw, session_id, key)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            self._decoded.pop(key, None)
            with contextlib.suppress(StoreUnavailable):  # the store's own ttl removes it anyway
                await self.store.delete(key)
            return None
        if now - session.last_used_at >= self._slide_interval:
            session = dataclasses.replace(session, last_used_at=now)
            try:
                # Only if the record is still the one read: a refresh may have saved new tokens.
                await self.store.replace(
                    key, _restamp(raw, now), self._ttl(session, now), sub=session.sub, sid=session.sid, expected=raw
                )
            except StoreUnavailable:
                # The session was read fine; a missed slide costs at most one interval of idle time.
                log.warning("Session use not recorded: store unavailable. session: '%s'", key[:12])
        return session

    async def load_from_headers(self, headers: Sequence[tuple[bytes, bytes]]) -> Session | None:
        session_id = self._cookies.read_session_id(headers)
        return None if session_id is None else await self.load(session_id)

    async def save(self, session: Session) -> None:
        """Write `session` back (new tokens after a refresh). A session destroyed meanwhile
        stays destroyed: logout during a refresh wins."""
        now = self._clock()
        ttl = self._ttl(session, now)
        if ttl <= 0:
            await self.store.delete(session.key)
            return
        written = await self.store.replace(session.key, _encode(session), ttl, sub=session.sub, sid=session.sid)
        if not written:
            log.info("Session not saved: it ended meanwhile. sub: '%s', session: '%s'", session.sub, session.key[:12])

    async def destroy(self, session: Session) -> None:
        await self.destroy_key(session.key)

    async def destroy_key(self, key: str, *, sub: str | None = None) -> bool:
        """End the session stored under `key` (a handle from `list_for`). With `sub`, only if it
        is that user's: "log out this device" must not reach another user's session."""
        if sub is not None:
            raw = await self.store.get(key)
            meta = _metadata(raw) if raw is not None else None
            if meta is None or meta.get("sub") != sub:
                return False
        self._decoded.pop(key, None)
        deleted = await self.store.delete(key)
        if deleted:
            log.info("Session ended. session: '%s'", key[:12])
        return deleted

    async def list_for(self, sub: str) -> list[SessionInfo]:
        """The live sessions of `sub`, most recently used first."""
        now = self._clock()
        infos: list[SessionInfo] = []
        for key in await self.store.keys_where(sub=sub):
            raw = await self.store.get(key)
            meta = _metadata(raw) if raw is not None else None
            if meta is None or meta["sub"] != sub:
                continue
            info = SessionInfo(
                key=key,
                created_at=meta["created_at"],
                last_used_at=meta["last_used_at"],
                user_agent=meta["user_agent"],
                expires_at=meta["expires_at"],
            )
            if now < info.expires_at and now - info.last_used_at < self._settings.idle_timeout:
                infos.append(info)
        infos.sort(key=lambda info: info.last_used_at, reverse=True)
        return infos

    async def destroy_where(self, *, sub: str | None = None, sid: str | None = None) -> int:
        """End every session matching all the given criteria (back-channel logout, revoke-all);
        return how many ended."""
        if sub is None and sid is None:
            raise ValueError("destroy_where needs sub or sid")
        count = 0
        for key in await self.store.keys_where(sub=sub, sid=sid):
            self._decoded.pop(key, None)
            if await self.store.delete(key):
                count += 1
        log.info("Sessions ended. sub: '%s', sid: '%s', count: %d", sub, sid, count)
        return count

    def set_cookie_header(self, session: Session) -> str:
        """`Set-Cookie` for `session`; the cookie lives until the session's absolute end."""
        max_age = max(0, int(session.expires_at - self._clock()))
        return self._cookies.session_set_cookie(self._cookies.sign_session_id(session.id), max_age)

    def clear_cookie_header(self) -> str:
        return self._cookies.session_clear_cookie()

    def _decoded_session(self, raw: bytes, session_id: str, key: str) -> Session | None:
        """`_decode(raw, ...)`, or the session these very bytes decoded to before. Only a record
        that decoded is kept; its expiry is checked by the caller on every load all the same."""
        cached = self._decoded.get(key)
        if cached is not None and cached[0] == raw and cached[1].id == session_id:
            self._decoded.move_to_end(key)
            return cached[1]
        session = _decode(raw, session_id, key)
        if session is None:
            self._decoded.pop(key, None)
        else:
            self._decoded[key] = (raw, session)
            self._decoded.move_to_end(key)
            if len(self._decoded) > self._cache_size:
                self._decoded.popitem(last=False)
        return session

    def _expired(self, session: Session, now: float) -> bool:
        return now >= session.expires_at or now - session.last_used_at >= self._settings.idle_timeout

    def _ttl(self, session: Session, now: float) -> float:
        """Store ttl: whichever comes first, the idle or the absolute end."""
        return min(session.last_used_at + self._settings.idle_timeout, session.expires_at) - now


# -- the record -------------------------------------------------------------------------------
# Bytes: one line of JSON metadata {"v", "sub", "sid", "created_at", "last_used_at",
# "expires_at", "user_agent"}, a newline, then the box: nonce | AES-GCM(JSON claims and tokens).
# json.dumps escapes control characters, so the first newline always ends the metadata.


def _box_key(session_id: str) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_BOX_SALT, info=_BOX_INFO)
    return AESGCM(hkdf.derive(session_id.encode("ascii")))


def _encode(session: Session) -> bytes:
    secret = json.dumps({"claims": dict(session.claims), "tokens": session.tokens.to_dict()}, separators=(",", ":"))
    meta: dict[str, Any] = {
        "v": _RECORD_VERSION,
        "sub": session.sub,
        "sid": session.sid,
        "created_at": session.created_at,
        "last_used_at": session.last_used_at,
        "expires_at": session.expires_at,
        "user_agent": session.user_agent,
    }
    nonce = secrets.token_bytes(_NONCE_BYTES)
    box = nonce + _box_key(session.id).encrypt(nonce, secret.encode(), _box_aad(session.key, meta))
    return _join(meta, box)


def _join(meta: Mapping[str, Any], box: bytes) -> bytes:
    return json.dumps(meta, separators=(",", ":")).encode() + b"\n" + box


def _split(raw: bytes) -> tuple[dict[str, Any], bytes] | None:
    head, newline, box = raw.partition(b"\n")
    if not newline:
        return None
    try:
        meta = json.loads(head)
    except ValueError:
        return None
    if not isinstance(meta, dict) or meta.get("v") != _RECORD_VERSION:
        return None
    return meta, box


def _box_aad(key: str, meta: Mapping[str, Any]) -> bytes:
    """The store key and the metadata that never changes: a record moved to another key, or
    given another owner or a later end, no longer decrypts. (`last_used_at` slides without
    re-encrypting, so it is not bound.)"""
    bound = [key, meta["sub"], meta["sid"], meta["created_at"], meta["expires_at"]]
    return json.dumps(bound, separators=(",", ":")).encode()


def _metadata(raw: bytes) -> dict[str, Any] | None:
    """The public half of a record, readable without the session id (to list sessions)."""
    parts = _split(raw)
    return None if parts is None else parts[0]


def _decode(raw: bytes, session_id: str, key: str) -> Session | None:
    parts = _split(raw)
    if parts is None:
        return None
    meta, box = parts
    try:
        aad = _box_aad(key, meta)
        secret = json.loads(_box_key(session_id).decrypt(box[:_NONCE_BYTES], box[_NONCE_BYTES:], aad))
        return Session(
            id=session_id,
            key=key,
            sub=meta["sub"],
            sid=meta["sid"],
            claims=secret["claims"],
            tokens=TokenSet.from_dict(secret["tokens"]),
            created_at=meta["created_at"],
            last_used_at=meta["last_used_at"],
            expires_at=meta["expires_at"],
            user_agent=meta["user_agent"],
        )
    except (InvalidTag, KeyError, TypeError, ValueError):
        log.warning("Session record does not decrypt. session: '%s'", key[:12])
        return None


def _restamp(raw: bytes, last_used_at: float) -> bytes:
    """The same record with a new `last_used_at`; the box is kept byte for byte."""
    parts = _split(raw)
    assert parts is not None  # only called on a record that just decoded
    meta, box = parts
    return _join({**meta, "last_used_at": last_used_at}, box)
