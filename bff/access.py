"""The access log: one line per request, written by the BFF itself (uvicorn's is off).

`AccessLog` wraps the whole app. It gives each HTTP request and WebSocket upgrade its request id
(`bff.request_ids`), puts that id into the request headers (the proxy forwards them upstream)
and onto the response, counts the response's bytes, and when the request is over logs one
`bff.access` line: method, route, path (no query), status, duration, upstream time, bytes,
request id, session handle and `sub`. What the line holds is rendered by `AccessLine` only when
a handler emits it, as text (`key=value`) or as JSON fields (`bff.server`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bff.request_ids import HEADER, AccessRecord, current, request_id_of
from bff.websocket import CLIENT_CLOSED

__all__ = ["ACCESS_LOGGER", "AccessLine", "AccessLog"]

ACCESS_LOGGER = "bff.access"
log = logging.getLogger(ACCESS_LOGGER)
_PATHNAME = "access.py"  # the records' pathname: short, as LogRecord splits it on every line
_PLAIN = re.compile(r"[!#-<>-\[\]-~]+")
"""A text value written without quotes: printable ASCII without space, quote, `=` or backslash."""


class AccessLine:
    """The message of an access-log record; `fields()` for JSON, `str()` for text."""

    __slots__ = ("_duration", "_record")

    def __init__(self, record: AccessRecord, duration: float) -> None:
        self._record = record
        self._duration = duration

    def fields(self) -> dict[str, Any]:
        record = self._record
        fields: dict[str, Any] = {
            "method": record.method,
            "route": record.route,
            "path": record.path,
            "status": record.status,
            "duration_ms": round(self._duration * 1000, 2),
        }
        if record.upstream:
            fields["upstream_ms"] = round(record.upstream * 1000, 2)
        fields["bytes"] = record.bytes
        fields["request_id"] = record.request_id
        if record.session is not None:
            fields["session"] = record.session
            fields["sub"] = record.sub
        return fields

    def __str__(self) -> str:
        # Written out rather than joined from fields(): this runs once per request.
        record = self._record
        # The request id and the session handle need no quoting: a well-formed id or hex digits.
        line = (
            f"method={_text(record.method)} route={_text(record.route)} path={_text(record.path)}"
            f" status={record.status} duration_ms={self._duration * 1000:.2f}"
        )
        if record.upstream:
            line += f" upstream_ms={record.upstream * 1000:.2f}"
        line += f" bytes={record.bytes} request_id={record.request_id}"
        if record.session is not None:
            line += f" session={record.session} sub={_text(record.sub)}"
        return line


def _text(value: object) -> str:
    if not isinstance(value, str):
        return str(value)  # numbers, None
    if _PLAIN.fullmatch(value):
        return value
    return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


class AccessLog:
    """ASGI middleware: request ids and the access line. `route_of` names a request's route
    from its scope once the app has handled it (the BFF's own endpoints)."""

    def __init__(self, app: ASGIApp, route_of: Callable[[Scope], str | None]) -> None:
        self._app = app
        self._route_of = route_of
        self.write: Callable[[AccessLine], bool] | None = None
        """`bff serve` sets it (`bff.server.access_writer`): writes the line straight to its log
        stream, as its handler would, and says whether it did; else the line goes through `logging`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self._app(scope, receive, send)
            return
        request_id, headers = request_id_of(scope["headers"])
        if headers is not None:
            scope["headers"] = headers
        record = AccessRecord(request_id, scope.get("method", "GET"), scope["path"])
        token = current.set(record)
        try:
            await self._app(scope, receive, _recording_send(send, record))
        except BaseException:
            if not record.status:
                record.status = 500  # what the server answers for an app that failed
            raise
        finally:
            if record.route == "-":
                record.route = self._route_of(scope) or "-"
            if not record.status:
                record.status = CLIENT_CLOSED if kind == "http" else 403
            if log.isEnabledFor(logging.INFO):
                line = AccessLine(record, time.perf_counter() - record.start)
                if self.write is None or not self.write(line):
                    # `handle` of a record made here: no `findCaller` stack walk, a few µs per request.
                    log.handle(log.makeRecord(log.name, logging.INFO, _PATHNAME, 0, line, (), None))
            current.reset(token)


def _recording_send(send: Send, record: AccessRecord) -> Send:
    """`send` that notes the response's status and bytes in `record` and adds the request id
    header to the response (or the WebSocket accept)."""
    id_header = (HEADER, record.request_id.encode("ascii"))

    async def send_with_id(message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            record.bytes += len(message.get("body", b""))
        elif kind == "http.response.start" or kind == "websocket.http.response.start":
            record.status = message["status"]
            message["headers"] = [*message.get("headers", ()), id_header]
        elif kind == "websocket.http.response.body":
            record.bytes += len(message.get("body", b""))
        elif kind == "websocket.accept":
            record.status = 101
            message["headers"] = [*message.get("headers", ()), id_header]
        elif kind == "websocket.close" and not record.status:
            record.status = 403  # closed before the handshake: the server answers 403
        await send(message)

    return send_with_id
