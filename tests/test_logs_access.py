"""Log lines in-process: the JSON and text formatters (request ids, access fields, exceptions),
`log_config`'s JSON switch, and the access line's status for requests that never answered."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import sys
from typing import Any, Literal

import pytest
from starlette.types import Message, Receive, Scope, Send

from bff.access import ACCESS_LOGGER, AccessLine, AccessLog
from bff.request_ids import AccessRecord
from bff.server import JSONFormatter, TextFormatter, UpgradeNoiseFilter, access_writer, log_config


def record(msg: object, *, request_id: str | None = None, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    line = logging.LogRecord("bff.test", logging.WARNING, __file__, 1, msg, (), exc_info)
    line.created = 0.0
    line.msecs = 7.0
    if request_id is not None:
        line.request_id = request_id
    return line


def access_record() -> AccessRecord:
    access = AccessRecord("rid-1", "GET", "/api/a b")
    access.route = "/api"
    access.status = 200
    access.bytes = 12
    access.upstream = 0.0125
    access.session = "h1"
    access.sub = "alice"
    return access


def test_json_lines_carry_the_request_id_and_the_exception() -> None:
    entry = json.loads(JSONFormatter().format(record("refresh failed", request_id="rid-9", exc=True)))
    assert entry["time"] == "1970-01-01T00:00:00.007Z"
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "bff.test"
    assert entry["message"] == "refresh failed"
    assert entry["request_id"] == "rid-9"
    assert entry["exception"].startswith("Traceback")
    assert entry["exception"].endswith("ValueError: boom")


def test_json_access_lines_are_their_fields() -> None:
    entry = json.loads(JSONFormatter().format(record(AccessLine(access_record(), 0.5))))
    assert {key: entry[key] for key in entry if key not in ("time", "level", "logger")} == {
        "message": "request",
        "method": "GET",
        "route": "/api",
        "path": "/api/a b",
        "status": 200,
        "duration_ms": 500.0,
        "upstream_ms": 12.5,
        "bytes": 12,
        "request_id": "rid-1",
        "session": "h1",
        "sub": "alice",
    }
    assert "request_id" not in json.loads(JSONFormatter().format(record("plain")))


def test_text_lines_end_with_the_request_id_except_access_lines() -> None:
    formatter = TextFormatter(fmt="%(levelprefix)s %(name)s: %(message)s", use_colors=False)
    assert formatter.format(record("hello", request_id="rid-2")) == "WARNING:  bff.test: hello request_id=rid-2"
    line = AccessLine(access_record(), 0.5)
    assert formatter.format(record(line, request_id="rid-1")) == (
        'WARNING:  bff.test: method=GET route=/api path="/api/a b" status=200 duration_ms=500.00 '
        "upstream_ms=12.50 bytes=12 request_id=rid-1 session=h1 sub=alice"
    )


def test_text_values_with_quotes_or_controls_are_escaped() -> None:
    access = AccessRecord("rid", "GET", '/x"\n')
    assert (
        str(AccessLine(access, 0))
        == 'method=GET route=- path="/x\\"\\n" status=0 duration_ms=0.00 bytes=0 request_id=rid'
    )


def test_upgrade_noise_is_dropped() -> None:
    noise = UpgradeNoiseFilter()
    assert noise.filter(record('%s - "WebSocket %s" %d')) is False
    assert noise.filter(record("connection rejected (403 Forbidden)")) is False
    assert noise.filter(record("Started server process")) is True


def test_log_config_json_switches_every_handler() -> None:
    config = log_config("debug", "json")
    assert config["formatters"]["json"] == {"()": "bff.server.JSONFormatter"}
    assert {handler["formatter"] for handler in config["handlers"].values()} == {"json"}
    assert config["loggers"]["bff"] == {"handlers": ["bff"], "level": "DEBUG", "propagate": False}
    text = log_config("info")
    assert "json" not in text["formatters"]
    assert text["handlers"]["bff"]["formatter"] == "bff"
    assert all(handler["filters"] == ["upgrade_noise", "request_id"] for handler in text["handlers"].values())


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def call(app: Any, scope_type: str, *, fails: bool = False) -> tuple[list[Message], list[logging.LogRecord]]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    handler = Collect()
    records = handler.records
    logger = logging.getLogger("bff.access")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        scope = {"type": scope_type, "path": "/x", "headers": [], "method": "GET"}
        if fails:
            with pytest.raises(RuntimeError, match="bug"):
                await AccessLog(app, lambda _scope: "/x-route")(scope, receive, send)
        else:
            await AccessLog(app, lambda _scope: "/x-route")(scope, receive, send)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return sent, records


def status_of(records: list[logging.LogRecord]) -> Any:
    assert len(records) == 1
    assert isinstance(records[0].msg, AccessLine)
    return records[0].msg.fields()


async def test_an_app_that_fails_is_logged_as_500() -> None:
    async def failing(_scope: Scope, _receive: Receive, _send: Send) -> None:
        raise RuntimeError("bug")

    sent, records = await call(failing, "http", fails=True)
    assert sent == []
    assert status_of(records)["status"] == 500


async def test_an_http_request_never_answered_is_499_and_a_closed_upgrade_403() -> None:
    async def silent(_scope: Scope, _receive: Receive, _send: Send) -> None:
        return

    _, records = await call(silent, "http")
    assert status_of(records)["status"] == 499
    assert status_of(records)["route"] == "/x-route"

    async def closing(_scope: Scope, _receive: Receive, send: Send) -> None:
        await send({"type": "websocket.close", "code": 1008})

    sent, records = await call(closing, "websocket")
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert status_of(records)["status"] == 403

    _, records = await call(silent, "websocket")
    assert status_of(records)["status"] == 403


def log_configs_handler(log_format: Literal["text", "json"]) -> logging.StreamHandler[Any]:
    """The `bff` handler `log_config` describes, built as `dictConfig` builds it, but without
    configuring this process's loggers (the other tests' capture stays as it is)."""
    config = log_config("info", log_format)
    configurator = logging.config.DictConfigurator(config)
    spec = configurator.config["handlers"]["bff"]
    handler: logging.StreamHandler[Any] = logging.StreamHandler()
    handler.setFormatter(configurator.configure_formatter(configurator.config["formatters"][spec["formatter"]]))
    for name in spec["filters"]:
        handler.addFilter(configurator.configure_filter(configurator.config["filters"][name]))
    return handler


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_access_writer_writes_what_the_handler_would(log_format: Literal["text", "json"]) -> None:
    """`bff serve`'s shortcut past `logging` for access lines: the same line on the same stream as
    `log_config`'s handler makes of an access record (the JSON time aside: it is the time of writing)."""
    handler = log_configs_handler(log_format)
    line = AccessLine(access_record(), 0.5)
    direct, logged = io.StringIO(), io.StringIO()
    handler.setStream(direct)
    write = access_writer(handler)
    assert write is not None
    assert write(line) is True
    handler.setStream(logged)
    handler.handle(logging.LogRecord(ACCESS_LOGGER, logging.INFO, "access.py", 0, line, (), None))
    if log_format == "text":
        assert direct.getvalue() == logged.getvalue() == f"INFO:     bff.access: {line}\n"
    else:
        ours, theirs = json.loads(direct.getvalue()), json.loads(logged.getvalue())
        assert {**ours, "time": "-"} == {**theirs, "time": "-"}
        assert ours["logger"] == "bff.access"
        assert ours["level"] == "INFO"


def test_the_access_writer_is_only_for_log_configs_own_handler() -> None:
    formatter = TextFormatter(fmt="%(levelprefix)s %(name)s: %(message)s", use_colors=False)
    stream = logging.StreamHandler(io.StringIO())
    stream.setFormatter(formatter)
    assert access_writer(stream) is not None
    other_formatter = logging.StreamHandler(io.StringIO())
    other_formatter.setFormatter(logging.Formatter())
    foreign_filter = logging.StreamHandler(io.StringIO())
    foreign_filter.setFormatter(formatter)
    foreign_filter.addFilter(logging.Filter("bff"))
    quieter = logging.StreamHandler(io.StringIO())
    quieter.setFormatter(formatter)
    quieter.setLevel(logging.WARNING)
    file_handler = logging.FileHandler("/dev/null")
    file_handler.setFormatter(formatter)
    for handler in (other_formatter, foreign_filter, quieter, file_handler):
        assert access_writer(handler) is None, handler
    file_handler.close()
    coloured = logging.StreamHandler(io.StringIO())
    coloured.setFormatter(TextFormatter(fmt="%(levelprefix)s %(name)s: %(message)s", use_colors=True))
    write = access_writer(coloured)
    assert write is not None
    assert write(AccessLine(access_record(), 0.5)) is False  # colours: `logging` formats it
