"""Logging set-up for `bff serve` and `bff demo`: uvicorn's own configuration, plus the `bff`
loggers on the same stream with their names, so a login, refresh or logout line says who logged it.

Every handler carries `RequestIdFilter`: a line logged while a request runs ends with its
`request_id` (text) or has it as a field (JSON). `log_format = "json"` makes every line, uvicorn's
too, one JSON object. Log lines name `sub`, `sid`, routes and session handles; never a token,
code or cookie value.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from typing import Any, Literal

from uvicorn.config import LOGGING_CONFIG
from uvicorn.logging import DefaultFormatter

from bff.access import AccessLine

__all__ = ["JSONFormatter", "TextFormatter", "UpgradeNoiseFilter", "log_config"]


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
        "upgrade_noise": {"()": "bff.logs.UpgradeNoiseFilter"},
    }
    config["formatters"]["bff"] = {
        "()": "bff.logs.TextFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
        "use_colors": None,
    }
    config["handlers"]["bff"] = {"formatter": "bff", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    for handler in config["handlers"].values():
        handler["filters"] = ["upgrade_noise", "request_id"]
    if log_format == "json":
        config["formatters"]["json"] = {"()": "bff.logs.JSONFormatter"}
        for handler in config["handlers"].values():
            handler["formatter"] = "json"
    config["loggers"]["bff"] = {"handlers": ["bff"], "level": level.upper(), "propagate": False}
    return config
