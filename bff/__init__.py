"""bff-proxy: a Backend-for-Frontend that keeps OAuth tokens out of the browser."""

from __future__ import annotations

__version__ = "0.1.0"

# create_app is exported once the parts it wires exist (see docs/architecture.md).
from bff.config import Settings, load_settings

__all__ = ["Settings", "__version__", "load_settings"]
