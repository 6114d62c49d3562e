"""How bff runs under uvicorn, for `bff serve` and `bff demo` alike: `serve` is the one
`uvicorn.run` call, with `SERVER_OPTIONS`, the logging set-up (`log_config`), the graceful-shutdown
timeout, a SIGTERM that ends with exit code 0, and, with several workers, a metrics directory
they share. `app_from_environment` is the factory each `bff serve` worker builds its app with.

Logging: uvicorn's own configuration, plus the `bff` loggers on the same stream with their names,
so a login, refresh or logout line says who logged it. Every handler carries `RequestIdFilter`: a
line logged while a request runs ends with its `request_id` (text) or has it as a field (JSON).
`log_format = "json"` makes every line, uvicorn's too, one JSON object. Log lines name `sub`,
`sid`, routes and session handles; never a token, code or cookie value.

Owns running the server; leaves argument parsing to `bff.cli`, and what is served to `bff.app`
(and `bff.demo.run`).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import logging
import os
import resource
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Literal

from starlette.types import ASGIApp
from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import DefaultFormatter

from bff.access import ACCESS_LOGGER, AccessLine
from bff.config import load_settings
from bff.metrics import MULTIPROCESS_VARIABLE
from bff.request_ids import RequestIdFilter
from bff.server_protocol import HttpProtocol

__all__ = [
    "CONFIG_FILE_VARIABLE",
    "SERVER_OPTIONS",
    "JSONFormatter",
    "TextFormatter",
    "UpgradeNoiseFilter",
    "access_writer",
    "app_from_environment",
    "log_config",
    "raise_open_files_limit",
    "serve",
]

CONFIG_FILE_VARIABLE = "BFF_CONFIG_FILE"  # read by the worker processes of `bff serve --workers N`
SERVER_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": HttpProtocol,  # uvicorn's httptools protocol, a response's head sent with its body
    "server_header": False,
    "date_header": False,
    "proxy_headers": False,  # X-Forwarded-* are judged by the BFF against trusted_proxies
    "access_log": False,
}
"""uvicorn settings shared by `bff serve` and `bff demo`."""


def serve(
    app: ASGIApp | str,
    *,
    host: str,
    port: int,
    workers: int = 1,
    log_level: str = "info",
    log_format: Literal["text", "json"] = "text",
    factory: bool = False,
    shutdown_timeout: float | None = None,
) -> None:
    """Run `app` (or, with `factory`, the app the named factory builds in each worker) until stopped.

    `shutdown_timeout` is how long uvicorn waits for the requests in flight after a stop (None: as
    long as they take). A SIGTERM in a single process ends it, after that graceful stop, with exit
    code 0: uvicorn raises the signal it stopped for again once it is done.
    """
    import uvicorn

    raise_open_files_limit()
    if workers == 1:
        signal.signal(signal.SIGTERM, _stopped)
    timeout = None if shutdown_timeout is None else max(1, round(shutdown_timeout))
    with _metrics_directory(workers):
        uvicorn.run(
            app,
            factory=factory,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            log_config=log_config(log_level, log_format),
            timeout_graceful_shutdown=timeout,
            **SERVER_OPTIONS,
        )


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (workers inherit it);
    return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an unlimited hard limit is above what the kernel allows
            return soft
    return hard


def app_from_environment() -> object:
    """uvicorn's factory: each worker process builds its own app from the same configuration."""
    from bff.app import create_app

    app = create_app(load_settings(os.environ, os.environ.get(CONFIG_FILE_VARIABLE)))
    app.drain_on_signals = True
    app.warm_on_start = True
    access, parent = logging.getLogger(ACCESS_LOGGER), logging.getLogger("bff")
    if not access.handlers and access.propagate and not parent.propagate and len(parent.handlers) == 1:
        app.access_log.write = access_writer(parent.handlers[0])  # log_config's, as uvicorn applied it
    # Modules and the app live as long as the worker: keep them out of the collector's full
    # passes, which otherwise walk them all and cost 15-25 ms each under load (p99 at
    # concurrency 32 went from 16-34 ms to 8-13 ms; bench/README.md).
    gc.collect()
    gc.freeze()
    return app


def _stopped(sig: int, frame: FrameType | None) -> None:
    """SIGTERM after uvicorn's graceful shutdown (or before it started): end with exit code 0."""


@contextlib.contextmanager
def _metrics_directory(workers: int) -> Iterator[None]:
    """With several workers, a fresh directory their metrics go to (prometheus_client's
    multiprocess mode), removed at exit; an operator's own `PROMETHEUS_MULTIPROC_DIR` is kept."""
    if workers <= 1 or os.environ.get(MULTIPROCESS_VARIABLE):
        yield
        return
    directory = tempfile.mkdtemp(prefix="bff-metrics-")
    os.environ[MULTIPROCESS_VARIABLE] = directory
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_VARIABLE]
        shutil.rmtree(directory, ignore_errors=True)


class TextFormatter(DefaultFormatter):
    """uvicorn's `LEVEL:     name: message`, with ` request_id=...` when logged during a request
    (an access line has it among its fields already)."""

    def access_text(self, line: AccessLine) -> str | None:
        """What `format` makes of an access record holding `line` (None: with colours, ask `format`)."""
        return None if self.use_colors else f"{'INFO:':<9} {ACCESS_LOGGER}: {line}"

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, AccessLine) and not self.use_colors:  # no record copy
            return f"{record.levelname + ':':<9} {record.name}: {record.msg}"
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is not None and not isinstance(record.msg, AccessLine):
            line += f" request_id={request_id}"
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and an access line's fields."""

    def access_text(self, line: AccessLine) -> str:
        """What `format` makes of an access record holding `line`, written now."""
        now = time.time()
        return json.dumps(_access_entry(now, int((now - int(now)) * 1000), line), ensure_ascii=False, default=str)

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, AccessLine):
            access = _access_entry(record.created, int(record.msecs), record.msg)
            return json.dumps(access, ensure_ascii=False, default=str)
        entry: dict[str, Any] = {
            "time": _timestamp(record.created, int(record.msecs)),
            "level": record.levelname,
            "logger": record.name,
        }
        entry["message"] = record.getMessage()
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _timestamp(created: float, msecs: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{msecs:03d}Z"


def _access_entry(created: float, msecs: int, line: AccessLine) -> dict[str, Any]:
    entry: dict[str, Any] = {"time": _timestamp(created, msecs), "level": "INFO", "logger": ACCESS_LOGGER}
    entry["message"] = "request"
    entry.update(line.fields())
    return entry


def access_writer(handler: logging.Handler) -> Callable[[AccessLine], bool] | None:
    """For `AccessLog.write`: the line `handler` (the `bff` handler `log_config` made) would write
    for an access record, written as `StreamHandler.emit` does, without the `LogRecord`, the
    logger walk and the filters (neither of `log_config`'s filters changes an access line):
    ~10 us less per request. None when `handler` is not that handler."""
    formatter = handler.formatter
    if type(handler) is not logging.StreamHandler or not isinstance(formatter, TextFormatter | JSONFormatter):
        return None
    if handler.level > logging.INFO or any(not isinstance(f, _OWN_FILTERS) for f in handler.filters):
        return None
    stream, lock, text_of = handler.stream, handler.lock, formatter.access_text

    def write(line: AccessLine) -> bool:
        text = text_of(line)
        if text is None:
            return False
        assert lock is not None  # a Handler always has its lock
        with lock:
            stream.write(text + "\n")
            stream.flush()
        return True

    return write


class UpgradeNoiseFilter(logging.Filter):
    """Drops the server's own lines about each WebSocket handshake (uvicorn's `"WebSocket /x" 403`,
    websockets' `connection rejected`): the BFF's access line reports it, with its reason, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        return not (isinstance(message, str) and message.startswith(('%s - "WebSocket %s"', "connection rejected")))


_OWN_FILTERS = (UpgradeNoiseFilter, RequestIdFilter)


def log_config(level: str, log_format: Literal["text", "json"] = "text") -> dict[str, Any]:
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {
        "request_id": {"()": "bff.request_ids.RequestIdFilter"},
        "upgrade_noise": {"()": "bff.server.UpgradeNoiseFilter"},
    }
    config["formatters"]["bff"] = {
        "()": "bff.server.TextFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
        "use_colors": None,
    }
    config["handlers"]["bff"] = {"formatter": "bff", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    for handler in config["handlers"].values():
        handler["filters"] = ["upgrade_noise", "request_id"]
    if log_format == "json":
        config["formatters"]["json"] = {"()": "bff.server.JSONFormatter"}
        for handler in config["handlers"].values():
            handler["formatter"] = "json"
    config["loggers"]["bff"] = {"handlers": ["bff"], "level": level.upper(), "propagate": False}
    return config
