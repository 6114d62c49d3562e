"""Anti-forgery checks: the custom header, `Origin` and `Sec-Fetch-Site`, and the WebSocket
`Origin` allowlist. Pure functions over raw ASGI headers; the proxy and the `/bff` endpoints call
them and render the errors they raise.

A cross-site page can make the browser send a request with the session cookie, but it cannot add
a custom header without a CORS preflight the BFF never grants: requiring `X-CSRF: 1` (configurable)
is what makes the cookie safe. `Origin` and `Sec-Fetch-Site` come on top. Browsers cannot add a
header to a WebSocket upgrade, so upgrades are checked against the `Origin` allowlist instead
(cross-site WebSocket hijacking); an upgrade without `Origin` is not from a browser and passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from bff.config import Settings
from bff.errors import CSRFRejected, OriginRejected

__all__ = ["AntiForgery", "RawHeaders", "check_anti_forgery", "check_websocket_origin", "normalise_origin"]

RawHeaders = Sequence[tuple[bytes, bytes]]

_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def normalise_origin(origin: str) -> str:
    """`HTTPS://App.Example.com:443` → `https://app.example.com`; anything unparsable stays as is."""
    text = origin.strip().lower().rstrip("/")
    parts = urlsplit(text)
    if not parts.scheme or not parts.netloc:
        return text
    netloc = parts.netloc
    default = _DEFAULT_PORTS.get(parts.scheme)
    if default and netloc.endswith(":" + default):
        netloc = netloc[: -len(default) - 1]
    return f"{parts.scheme}://{netloc}"


class AntiForgery:
    """The checks with their constants computed once from `Settings`."""

    __slots__ = ("_detail", "_header", "_origins", "_value")

    def __init__(self, settings: Settings) -> None:
        self._header = settings.csrf_header.lower().encode("latin-1")
        self._value = settings.csrf_value.encode("latin-1")
        self._origins = frozenset(normalise_origin(origin).encode("latin-1") for origin in settings.origins)
        self._detail = f"header {settings.csrf_header!r} must be {settings.csrf_value!r}"

    def check(self, headers: RawHeaders) -> None:
        """Anti-forgery header present with its value, no cross-site fetch, `Origin` (if any) allowed."""
        found = False
        origin: bytes | None = None
        cross_site = False
        for name, value in headers:
            if name == self._header:
                found = found or value.strip() == self._value
            elif name == b"origin":
                origin = value
            elif name == b"sec-fetch-site":
                cross_site = value.strip().lower() == b"cross-site"
        if not found:
            raise CSRFRejected(self._detail)
        self._check_origin(origin, cross_site=cross_site)

    def check_websocket(self, headers: RawHeaders) -> None:
        """The upgrade's `Origin` must be allowed (a missing `Origin` is a non-browser client)."""
        origin: bytes | None = None
        cross_site = False
        for name, value in headers:
            if name == b"origin":
                origin = value
            elif name == b"sec-fetch-site":
                cross_site = value.strip().lower() == b"cross-site"
        self._check_origin(origin, cross_site=cross_site)

    def _check_origin(self, origin: bytes | None, *, cross_site: bool) -> None:
        if cross_site:
            raise OriginRejected("cross-site request (Sec-Fetch-Site: cross-site)")
        if (
            origin is not None
            and origin not in self._origins
            and normalise_origin(origin.decode("latin-1")).encode("latin-1") not in self._origins
        ):
            raise OriginRejected(f"origin {origin.decode('latin-1')!r} is not allowed")


def check_anti_forgery(headers: RawHeaders, settings: Settings) -> None:
    """Raise `CSRFRejected` without the anti-forgery header, `OriginRejected` for a cross-site
    request or a foreign `Origin`."""
    AntiForgery(settings).check(headers)


def check_websocket_origin(headers: RawHeaders, settings: Settings) -> None:
    """Raise `OriginRejected` when a WebSocket upgrade comes from an origin not allowed."""
    AntiForgery(settings).check_websocket(headers)
