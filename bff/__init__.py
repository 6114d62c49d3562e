"""bff-proxy: a Backend-for-Frontend that keeps OAuth tokens out of the browser."""

from __future__ import annotations

__version__ = "0.1.0"

from bff.app import create_app
from bff.config import Settings, load_settings

__all__ = ["Settings", "__version__", "create_app", "load_settings"]
