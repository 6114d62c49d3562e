"""Devices people recognise: a session's `User-Agent` as "Chrome 126 on Linux".

Owns `describe_device`, which `GET /bff/sessions` and `bff sessions list` call when they list
sessions; nothing on a proxied request's path parses a user agent. The rules are ua-parser's
(`ua-parser-builtins`, offline), loaded at the first call (about 0.3 s), and each distinct string
is parsed once per process (an LRU of `CACHE_SIZE`).
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["CACHE_SIZE", "UNKNOWN_DEVICE", "describe_device"]

UNKNOWN_DEVICE = "Unknown device"
"""What a user agent that names neither a browser nor a system reads as (an empty one, `curl`
without a system, a test client)."""

CACHE_SIZE = 1024


@lru_cache(maxsize=CACHE_SIZE)
def describe_device(user_agent: str) -> str:
    """`"<browser> <major version> on <system>"`, leaving out what the string does not tell:
    `"Chrome 126 on Linux"`, `"Mobile Safari 17 on iOS"`, `"curl 8"`, `"Unknown device"`."""
    from ua_parser import parse  # the rules load here, not when the app starts

    result = parse(user_agent) if user_agent else None
    if result is None:
        return UNKNOWN_DEVICE
    browser = result.user_agent
    system = result.os
    name = " ".join(part for part in (browser.family, browser.major) if part) if browser is not None else ""
    if system is not None and system.family:
        return f"{name} on {system.family}" if name else system.family
    return name or UNKNOWN_DEVICE
