"""Logging set-up for `bff serve` and `bff demo`: uvicorn's own configuration, plus the `bff`
loggers on the same stream with their names, so a login, refresh or logout line says who logged it.
Log lines name `sub`, `sid`, routes and session handles; never a token, code or cookie value.
"""

from __future__ import annotations

import copy
from typing import Any

from uvicorn.config import LOGGING_CONFIG


def log_config(level: str) -> dict[str, Any]:
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["bff"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(levelprefix)s %(name)s: %(message)s",
        "use_colors": None,
    }
    config["handlers"]["bff"] = {"formatter": "bff", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    config["loggers"]["bff"] = {"handlers": ["bff"], "level": level.upper(), "propagate": False}
    return config
