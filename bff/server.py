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
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any, Literal

from starlette.types import ASGIApp
from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import DefaultFormatter

from bff.access import AccessLine
from bff.config import load_settings
from bff.metrics import MULTIPROCESS_VARIABLE

__all__ = [
    "CONFIG_FILE_VARIABLE",
    "SERVER_OPTIONS",
    "JSONFormatter",
    "TextFormatter",
    "UpgradeNoiseFilter",
    "app_from_environment",
    "log_config",
    "serve",
]

CONFIG_FILE_VARIABLE = "BFF_CONFIG_FILE"  # read by the worker processes of `bff serve --workers N`
SERVER_OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
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


def app_from_environment() -> object:
    """uvicorn's factory: each worker process builds its own app from the same configuration."""
    from bff.app import create_app

    app = create_app(load_settings(os.environ, os.environ.get(CONFIG_FILE_VARIABLE)))
    app.drain_on_signals = True
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

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, AccessLine) and not self.use_colors:  # the hot path: no record copy
            return f"{record.levelname + ':':<9} {record.name}: {record.msg}"
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is not None and not isinstance(record.msg, AccessLine):
            line += f" request_id={request_id}"
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and an access line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        if isinstance(record.msg, AccessLine):
            entry["message"] = "request"
            entry.update(record.msg.fields())
        else:
            entry["message"] = record.getMessage()
            request_id = getattr(record, "request_id", None)
            if request_id is not None:
                entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class UpgradeNoiseFilter(logging.Filter):
    """Drops the server's own lines about each WebSocket handshake (uvicorn's `"WebSocket /x" 403`,
    websockets' `connection rejected`): the BFF's access line reports it, with its reason, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        return not (isinstance(message, str) and message.startswith(('%s - "WebSocket %s"', "connection rejected")))


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
