"""The pure header filters, without sockets (the proxy tests check them again over TCP)."""

from __future__ import annotations

import pytest

from bff.headers import (
    RequestHeaderFilter,
    ResponseHeaderFilter,
    TrustedProxies,
    client_address,
    connection_tokens,
    filter_cookie_header,
    is_own_cookie,
)


def request_filter(**overrides: object) -> RequestHeaderFilter:
    options: dict[str, object] = {
        "cookie_base": "bff",
        "forward_cookies": False,
        "preserve_host": False,
        "trusted_proxies": TrustedProxies(["10.0.0.1", "192.168.0.0/16"]),
        "public_scheme": "https",
        "public_host": "app.example.com",
    }
    options.update(overrides)
    return RequestHeaderFilter(**options)  # type: ignore[arg-type]


def as_text(pairs: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in pairs]


def as_dict(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    assert len({name for name, _ in pairs}) == len(pairs), pairs
    return dict(as_text(pairs))


@pytest.mark.parametrize(
    ("name", "own"),
    [
        ("bff", True),
        ("bff-login", True),
        ("__Host-bff", True),
        ("__host-bff-0", True),
        ("__Secure-bff-state", True),
        ("BFF", False),
        ("bffx", False),
        ("xbff", False),
        ("theme", False),
    ],
)
def test_own_cookie_names(name: str, *, own: bool) -> None:
    assert is_own_cookie(name, "bff") is own


def test_cookie_header_loses_only_the_bff_cookies() -> None:
    value = b"a=1; bff=secret; __Host-bff=s2;bff-login=x; b=2; BFF=other"
    assert filter_cookie_header(value, "bff") == b"a=1; b=2; BFF=other"
    assert filter_cookie_header(b"bff=1", "bff") == b""


def test_connection_tokens_are_lowercased() -> None:
    assert connection_tokens(b"Keep-Alive, X-Secret ,") == {b"keep-alive", b"x-secret"}
    assert connection_tokens(b" \tX-A\t,,\t x-B ") == {b"x-a", b"x-b"}
    assert connection_tokens(b"") == set()


def test_request_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    headers = [
        (b"host", b"app.example.com"),
        (b"connection", b"keep-alive, x-private"),
        (b"keep-alive", b"timeout=5"),
        (b"te", b"trailers"),
        (b"upgrade", b"h2c"),
        (b"proxy-authorization", b"Basic eA=="),
        (b"x-private", b"1"),
        (b"authorization", b"Bearer from-the-browser"),
        (b"accept", b"application/json"),
    ]
    out, length, chunked = request_filter().apply(headers, "203.0.113.9")
    assert as_dict(out) == {
        "accept": "application/json",
        "x-forwarded-for": "203.0.113.9",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "app.example.com",
    }
    assert (length, chunked) == (None, False)


# Every header named in any `Connection` field line is hop-by-hop: repeated lines are one
# comma-separated list (RFC 9110 §5.3, §7.6.1), names are case-insensitive and may carry optional
# whitespace. Each case names X-Remove-Me and X-Also-Gone somewhere; X-Kept is named nowhere.
CONNECTION_LINES = [
    pytest.param([b"X-Remove-Me", b"X-Also-Gone, close"], id="two-lines"),
    pytest.param([b"close", b"X-Remove-Me, X-Also-Gone"], id="two-lines-named-last"),
    pytest.param([b"X-Remove-Me", b"X-Also-Gone", b"keep-alive"], id="three-lines"),
    pytest.param([b"X-Remove-Me, close, X-Also-Gone"], id="one-line-list"),
    pytest.param([b"x-REMOVE-me", b"X-ALSO-gone, Keep-Alive"], id="mixed-case"),
    pytest.param([b"X-Remove-Me \t,, ", b"\tclose ,  X-Also-Gone"], id="whitespace"),
]


@pytest.mark.parametrize("lines", CONNECTION_LINES)
def test_request_drops_headers_named_in_every_connection_line(lines: list[bytes]) -> None:
    headers = [
        (b"host", b"app.example.com"),
        *((b"connection", line) for line in lines),
        (b"x-remove-me", b"secret"),
        (b"accept", b"application/json"),
        (b"x-also-gone", b"secret too"),
        (b"x-kept", b"yes"),
    ]
    out, length, chunked = request_filter().apply(headers, "203.0.113.9")
    assert as_text(out) == [
        ("accept", "application/json"),
        ("x-kept", "yes"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "app.example.com"),
    ]
    assert (length, chunked) == (None, False)


@pytest.mark.parametrize("lines", CONNECTION_LINES)
def test_response_drops_headers_named_in_every_connection_line(lines: list[bytes]) -> None:
    headers = [
        (b"X-Remove-ME", b"secret"),
        *((b"Connection", line) for line in lines),
        (b"Content-Type", b"text/plain"),
        (b"x-ALSO-gone", b"secret too"),
        (b"X-Kept", b"yes"),
    ]
    assert ResponseHeaderFilter(cookie_base="bff").apply(headers) == [
        (b"content-type", b"text/plain"),
        (b"x-kept", b"yes"),
    ]


def test_connection_lines_naming_only_close_and_keep_alive_drop_nothing_else() -> None:
    headers = [(b"connection", b"close"), (b"connection", b"Keep-Alive"), (b"x-kept", b"yes")]
    out, _, _ = request_filter().apply(headers, None)
    assert as_text(out) == [("x-kept", "yes"), ("x-forwarded-proto", "https"), ("x-forwarded-host", "app.example.com")]
    assert ResponseHeaderFilter(cookie_base="bff").apply([(b"Connection", b"close"), *headers[1:]]) == [
        (b"x-kept", b"yes")
    ]


def test_forwarded_for_is_replaced_for_an_untrusted_peer_and_appended_for_a_trusted_one() -> None:
    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-host", b"evil"), (b"forwarded", b"for=1.2.3.4")]
    untrusted = as_dict(request_filter().apply(headers, "203.0.113.9")[0])
    assert untrusted["x-forwarded-for"] == "203.0.113.9"
    assert untrusted["x-forwarded-host"] == "app.example.com"
    assert "forwarded" not in untrusted
    trusted = as_dict(request_filter().apply(headers, "10.0.0.1")[0])
    assert trusted["x-forwarded-for"] == "1.2.3.4, 10.0.0.1"
    assert trusted["x-forwarded-host"] == "app.example.com"
    assert trusted["forwarded"] == "for=1.2.3.4"
    in_network = as_dict(request_filter().apply(headers, "192.168.4.5")[0])
    assert in_network["x-forwarded-for"] == "1.2.3.4, 192.168.4.5"


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "address"),
    [
        ("203.0.113.9", [b"198.51.100.1"], "203.0.113.9"),  # an untrusted peer's header is its own invention
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", [b"198.51.100.1"], "198.51.100.1"),
        ("10.0.0.1", [b"6.6.6.6, 198.51.100.1, 192.168.1.2"], "198.51.100.1"),
        ("10.0.0.1", [b"6.6.6.6", b" 198.51.100.1 ,, 192.168.1.2"], "198.51.100.1"),  # lines are one list
        ("10.0.0.1", [b"192.168.1.3, 192.168.1.2"], "192.168.1.3"),  # every hop trusted: the first
        (None, [b"198.51.100.1"], None),
    ],
)
def test_client_address_is_the_last_hop_no_trusted_proxy_added(
    peer: str | None, forwarded_for: list[bytes], address: str | None
) -> None:
    headers = [(b"x-forwarded-for", value) for value in forwarded_for]
    assert client_address(headers, peer, TrustedProxies(["10.0.0.1", "192.168.0.0/16"])) == address


def test_cookies_are_dropped_unless_forwarded_and_the_bff_cookie_never_is() -> None:
    headers = [(b"cookie", b"bff=secret; theme=dark")]
    assert "cookie" not in as_dict(request_filter().apply(headers, None)[0])
    forwarded = as_dict(request_filter(forward_cookies=True).apply(headers, None)[0])
    assert forwarded["cookie"] == "theme=dark"
    only_ours = as_dict(request_filter(forward_cookies=True).apply([(b"cookie", b"bff=secret")], None)[0])
    assert "cookie" not in only_ours


def test_host_is_preserved_only_when_asked() -> None:
    headers = [(b"host", b"app.example.com")]
    assert "host" not in as_dict(request_filter().apply(headers, None)[0])
    assert as_dict(request_filter(preserve_host=True).apply(headers, None)[0])["host"] == "app.example.com"


def test_body_framing_is_reported_not_forwarded() -> None:
    out, length, chunked = request_filter().apply([(b"content-length", b"12")], None)
    assert (length, chunked) == (12, False)
    assert "content-length" not in as_dict(out)
    out, length, chunked = request_filter().apply(
        [(b"content-length", b"12"), (b"transfer-encoding", b"chunked")], None
    )
    assert (length, chunked) == (None, True)
    with pytest.raises(ValueError, match="Content-Length"):
        request_filter().apply([(b"content-length", b"-1")], None)
    with pytest.raises(ValueError, match="conflicting"):
        request_filter().apply([(b"content-length", b"1"), (b"content-length", b"2")], None)


def test_response_keeps_repeated_set_cookie_but_none_for_bff_names() -> None:
    headers = [
        (b"Content-Type", b"text/plain"),
        (b"Set-Cookie", b"a=1; Path=/"),
        (b"Set-Cookie", b"b=2"),
        (b"Set-Cookie", b"bff=stolen"),
        (b"set-cookie", b"__Host-bff=stolen; Secure; Path=/"),
        (b"set-cookie", b" bff-login =stolen"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
    ]
    assert ResponseHeaderFilter(cookie_base="bff").apply(headers) == [
        (b"content-type", b"text/plain"),
        (b"set-cookie", b"a=1; Path=/"),
        (b"set-cookie", b"b=2"),
    ]
