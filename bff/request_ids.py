"""Request ids and the per-request record the access log is written from.

`AccessRecord` is what one request leaves behind: its id, route, status, sizes and timings, and
the session it ran under. The access-log middleware (`bff.access`) creates it and puts it in the
`current` context variable, so everything the request runs (the proxy, the token manager, the
provider calls of a refresh, and tasks it starts, which copy the context) can add to it and log
under its id. `RequestIdFilter` stamps that id on every log record.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Sequence
from contextvars import ContextVar

__all__ = ["HANDLE_LENGTH", "HEADER", "AccessRecord", "RequestIdFilter", "current", "note_session", "request_id_of"]

HEADER = b"x-request-id"
_WELL_FORMED = re.compile(rb"[A-Za-z0-9._-]{1,128}")
HANDLE_LENGTH = 12
"""How much of `Session.key` the log shows: its public handle."""


class AccessRecord:
    """One request as the access log reports it."""

    __slots__ = ("bytes", "method", "path", "request_id", "route", "session", "start", "status", "sub", "upstream")

    def __init__(self, request_id: str, method: str, path: str) -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.route = "-"
        self.status = 0
        self.bytes = 0
        self.upstream = 0.0
        """Seconds spent waiting for the upstream's response headers (0: not proxied)."""
        self.session: str | None = None
        self.sub: str | None = None
        self.start = time.perf_counter()


current: ContextVar[AccessRecord | None] = ContextVar("bff_request", default=None)


def request_id_of(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, list[tuple[bytes, bytes]] | None]:
    """The request's id: its one well-formed `X-Request-ID`, else a new random one. With it, the
    headers to use instead of `headers` (None: keep them, they carry that id already)."""
    found: bytes | None = None
    count = 0
    for name, value in headers:
        if name == HEADER:
            found = value
            count += 1
    if count == 1 and found is not None and _WELL_FORMED.fullmatch(found):
        return found.decode("ascii"), None
    # Not a secret (a client may send its own id): Mersenne Twister bits cost no system call.
    new = f"{random.getrandbits(128):032x}"
    kept = headers if count == 0 else [pair for pair in headers if pair[0] != HEADER]
    return new, [*kept, (HEADER, new.encode("ascii"))]


def note_session(key: str, sub: str) -> None:
    """The request runs under this session: the access line names its handle and `sub`."""
    record = current.get()
    if record is not None:
        record.session = key[:HANDLE_LENGTH]
        record.sub = sub


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (None outside a request) to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        access = current.get()
        record.request_id = access.request_id if access is not None else None
        return True
