"""The server-mode store record of a session: its bytes, and how they are sealed.

Pure functions, no store: `encode_record` and `decode_record` turn a `Session` into the bytes a
`Store` keeps and back, `record_metadata` reads the public half without the session id (to list
a user's devices), `restamp` slides `last_used_at` without re-encrypting.

Bytes: one line of JSON metadata {"v", "sub", "sid", "created_at", "last_used_at",
"expires_at", "user_agent"}, a newline, then the box: nonce | AES-GCM(JSON claims and tokens)
under a key derived by HKDF-SHA256 from the session id, with the store key and the metadata
that never changes as associated data. So a copy of the store yields neither a usable cookie nor
a token, and deleting a record makes its tokens unrecoverable. json.dumps escapes control
characters, so the first newline always ends the metadata.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from bff.sealing import Sealer
from bff.session import Session, session_from_fields

__all__ = ["decode_record", "encode_record", "record_metadata", "restamp"]

log = logging.getLogger("bff.session")

_RECORD_VERSION = 1
_BOX_SALT = b"bff-proxy session"
_BOX_INFO = b"bff session tokens"


def _box(session_id: str) -> Sealer:
    return Sealer([session_id.encode("ascii")], salt=_BOX_SALT, info=_BOX_INFO)


def encode_record(session: Session) -> bytes:
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
    return _join(meta, _box(session.id).seal(secret.encode(), _box_aad(session.key, meta)))


def decode_record(raw: bytes, session_id: str, key: str) -> Session | None:
    """The session `raw` holds, or None when it is malformed or does not decrypt under `session_id`."""
    parts = _split(raw)
    if parts is None:
        return None
    meta, box = parts
    try:
        opened = _box(session_id).open(box, _box_aad(key, meta))
        if opened is None:
            raise ValueError("does not decrypt")
        return session_from_fields(session_id, key, meta, json.loads(opened))
    except (KeyError, TypeError, ValueError):
        log.warning("Session record does not decrypt. session: '%s'", key[:12])
        return None


def record_metadata(raw: bytes) -> dict[str, Any] | None:
    """The public half of a record, readable without the session id (to list sessions)."""
    parts = _split(raw)
    return None if parts is None else parts[0]


def restamp(raw: bytes, last_used_at: float) -> bytes:
    """The same record with a new `last_used_at`; the box is kept byte for byte."""
    parts = _split(raw)
    assert parts is not None  # only called on a record that just decoded
    meta, box = parts
    return _join({**meta, "last_used_at": last_used_at}, box)


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
