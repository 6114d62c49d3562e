"""Anti-forgery checks on raw headers: the custom header, Origin, Sec-Fetch-Site, WebSocket Origin."""

from __future__ import annotations

import pytest

from bff.csrf import AntiForgery, check_anti_forgery, check_websocket_origin, normalise_origin
from bff.errors import CSRFRejected, OriginRejected
from tests.support.upstreams import make_settings

SETTINGS = make_settings(public_url="https://app.example.com")


def test_request_with_the_header_passes() -> None:
    check_anti_forgery([(b"x-csrf", b"1")], SETTINGS)
    check_anti_forgery([(b"x-csrf", b"1"), (b"origin", b"https://app.example.com")], SETTINGS)
    check_anti_forgery([(b"x-csrf", b"1"), (b"origin", b"HTTPS://APP.example.com:443")], SETTINGS)
    check_anti_forgery([(b"x-csrf", b"1"), (b"sec-fetch-site", b"same-origin")], SETTINGS)


@pytest.mark.parametrize("headers", [[], [(b"x-csrf", b"0")], [(b"x-csrf", b"")], [(b"x-other", b"1")]])
def test_request_without_the_header_is_rejected(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(CSRFRejected, match="X-CSRF"):
        check_anti_forgery(headers, SETTINGS)


def test_cross_site_or_foreign_origin_is_rejected_even_with_the_header() -> None:
    with pytest.raises(OriginRejected, match="cross-site"):
        check_anti_forgery([(b"x-csrf", b"1"), (b"sec-fetch-site", b"cross-site")], SETTINGS)
    with pytest.raises(OriginRejected, match="evil"):
        check_anti_forgery([(b"x-csrf", b"1"), (b"origin", b"https://evil.example")], SETTINGS)
    with pytest.raises(OriginRejected):
        check_anti_forgery([(b"x-csrf", b"1"), (b"origin", b"null")], SETTINGS)
    with pytest.raises(OriginRejected):
        check_anti_forgery([(b"x-csrf", b"1"), (b"origin", b"http://app.example.com")], SETTINGS)


def test_header_name_and_value_are_configurable() -> None:
    checker = AntiForgery(make_settings(csrf_header="X-Requested-With", csrf_value="XMLHttpRequest"))
    checker.check([(b"x-requested-with", b"XMLHttpRequest")])
    with pytest.raises(CSRFRejected, match="X-Requested-With"):
        checker.check([(b"x-csrf", b"1")])


def test_websocket_origin_allowlist() -> None:
    check_websocket_origin([(b"origin", b"https://app.example.com")], SETTINGS)
    check_websocket_origin([], SETTINGS)  # not a browser: no cross-site hijacking possible
    with pytest.raises(OriginRejected):
        check_websocket_origin([(b"origin", b"https://evil.example")], SETTINGS)
    allowed = make_settings(allowed_origins=("http://localhost:5173",))
    check_websocket_origin([(b"origin", b"http://localhost:5173")], allowed)
    with pytest.raises(OriginRejected):
        check_websocket_origin([(b"origin", b"http://127.0.0.1:8000")], allowed)


def test_origin_normalisation() -> None:
    assert normalise_origin("HTTPS://App.Example.com:443/") == "https://app.example.com"
    assert normalise_origin("http://localhost:80") == "http://localhost"
    assert normalise_origin("http://localhost:8080") == "http://localhost:8080"
    assert normalise_origin("null") == "null"
