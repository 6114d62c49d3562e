"""Pure header filters for proxied requests and responses (no I/O, no settings lookups per call).

Request side (browser → upstream): hop-by-hop headers and those named in `Connection` are removed
(RFC 9110 §7.6.1; named in any of its field lines, which are one list, §5.3), the browser's
`Authorization` is dropped, the BFF's own cookies are removed from `Cookie` (other cookies only
survive with `forward_cookies`), `Host` is the upstream's unless the route preserves it, and
`X-Forwarded-For/-Proto/-Host` are set. Forwarding headers that came from the browser are believed
only when the direct peer is a trusted proxy; by the same rule `client_address` names the browser
behind such proxies (the one address a token-API login passes on).

Response side (upstream → browser): hop-by-hop headers and those named in any `Connection` line are
removed and no `Set-Cookie` may set a cookie with one of the BFF's names. Headers stay raw
`(bytes, bytes)` pairs so a repeated `Set-Cookie` survives.

The filters are built once per route (`RequestHeaderFilter`, `ResponseHeaderFilter`) so that a
request costs one pass over its headers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

__all__ = [
    "HOP_BY_HOP",
    "WEBSOCKET_HANDSHAKE",
    "RawHeaders",
    "RequestHeaderFilter",
    "ResponseHeaderFilter",
    "TrustedProxies",
    "client_address",
    "connection_tokens",
    "filter_cookie_header",
    "is_own_cookie",
    "set_cookie_name",
]

RawHeaders = Sequence[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 plus the non-standard Proxy-Connection some clients still send.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-connection",
    }
)
# Forwarding headers a client could forge. X-Forwarded-For is believed (and extended) only from a
# trusted proxy, X-Forwarded-Proto/-Host always come from `public_url`, and these two pass through
# only from a trusted proxy:
_FORWARDED_BY_TRUSTED = frozenset({b"forwarded", b"x-real-ip"})
# Set by the WebSocket client library on the upstream handshake itself.
WEBSOCKET_HANDSHAKE: frozenset[bytes] = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"}
)
_COOKIE_PREFIXES = ("__host-", "__secure-")


def connection_tokens(value: bytes) -> set[bytes]:
    """Header names listed in one `Connection` field line, lowercased and without the optional
    whitespace around them (the filters join the sets of every line)."""
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def is_own_cookie(name: str, base: str) -> bool:
    """True when `name` is one of the BFF's cookies: `base`, `base-...`, with or without a
    `__Host-`/`__Secure-` prefix (browsers match those prefixes case-insensitively)."""
    lowered = name[:9].lower()
    for prefix in _COOKIE_PREFIXES:
        if lowered.startswith(prefix):
            name = name[len(prefix) :]
            break
    return name == base or name.startswith(base + "-")


def filter_cookie_header(value: bytes, base: str) -> bytes:
    """`Cookie` value without the BFF's own cookies (may come back empty)."""
    kept = []
    for part in value.split(b";"):
        pair = part.strip()
        if not pair:
            continue
        name = pair.split(b"=", 1)[0].strip().decode("latin-1")
        if not is_own_cookie(name, base):
            kept.append(pair)
    return b"; ".join(kept)


def set_cookie_name(value: bytes) -> str:
    """The cookie name a `Set-Cookie` value sets."""
    return value.split(b";", 1)[0].split(b"=", 1)[0].strip().decode("latin-1")


class TrustedProxies:
    """Addresses (and CIDR networks) whose forwarding headers are believed."""

    def __init__(self, entries: Iterable[str]) -> None:
        self._hosts = frozenset(entry for entry in entries if "/" not in entry)
        self._networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in entries if "/" in entry)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        if host in self._hosts:
            return True
        if self._networks:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            return any(address in network for network in self._networks)
        return False


def client_address(headers: RawHeaders, peer: str | None, trusted: TrustedProxies) -> str | None:
    """The browser's address as the BFF judges it: the direct `peer`, or, when the peer is a
    trusted proxy, the last `X-Forwarded-For` hop that is not one (every line of the header,
    in order, is one list). Hops a trusted proxy appended are its own view of who called it;
    anything to their left the browser could have written itself. All hops trusted: the first."""
    if peer is None or peer not in trusted:
        return peer
    hops = [
        hop.strip()
        for name, value in headers
        if name == b"x-forwarded-for"
        for hop in value.decode("latin-1").split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return hops[0] if hops else peer


class RequestHeaderFilter:
    """Browser request headers → upstream request headers, for one route.

    `apply` returns raw `(bytes, bytes)` pairs, names lowercased, without `Authorization` and
    without the body framing headers, plus that framing: the declared `Content-Length` (None when absent) and
    whether the body is chunked. The caller adds the bearer token, if any, per attempt, and the
    length of the body it sends.
    """

    __slots__ = (
        "_cookie_base",
        "_drop_trusted",
        "_drop_untrusted",
        "_preserve_host",
        "_proto",
        "_public_host",
        "_trusted",
    )

    def __init__(
        self,
        *,
        cookie_base: str,
        forward_cookies: bool,
        preserve_host: bool,
        trusted_proxies: TrustedProxies,
        public_scheme: str,
        public_host: str,
        extra_drop: Iterable[bytes] = (),
    ) -> None:
        # `expect` was answered by the server already; the caller frames the body itself. Every
        # rule that depends only on the route is in these sets, so a header costs one lookup.
        drop = HOP_BY_HOP | {b"authorization", b"expect", b"host", b"content-length"} | frozenset(extra_drop)
        drop |= {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
        if not forward_cookies:
            drop |= {b"cookie"}
        self._drop_trusted = drop
        self._drop_untrusted = drop | _FORWARDED_BY_TRUSTED
        self._cookie_base = cookie_base
        self._preserve_host = preserve_host
        self._trusted = trusted_proxies
        self._proto = public_scheme.encode("latin-1")
        self._public_host = public_host.encode("latin-1")

    def apply(self, headers: RawHeaders, client_host: str | None) -> tuple[list[tuple[bytes, bytes]], int | None, bool]:
        """Raise `ValueError` on a malformed `Content-Length`."""
        out: list[tuple[bytes, bytes]] = []
        length: int | None = None
        chunked = False
        trusted = client_host in self._trusted
        drop = self._drop_trusted if trusted else self._drop_untrusted
        forwarded_for: list[bytes] = []
        named: set[bytes] | None = None
        host: bytes | None = None
        for name, value in headers:
            if name in drop:  # dropped; some are still read
                if name == b"content-length":
                    length = _content_length(value, length)
                elif name == b"connection":  # each line counts (RFC 9110 §5.3): they are one list
                    named = connection_tokens(value) if named is None else named | connection_tokens(value)
                elif name == b"host":
                    host = value
                elif name == b"transfer-encoding":
                    chunked = True  # RFC 9112 §6.3: it overrides any Content-Length
                elif name == b"x-forwarded-for" and trusted:
                    forwarded_for.append(value)
                continue
            if name == b"cookie":  # with forward_cookies: the browser's other cookies
                value = filter_cookie_header(value, self._cookie_base)
                if not value:
                    continue
            out.append((name, value))
        return self._finish(out, named, forwarded_for, client_host, host), None if chunked else length, chunked

    def _finish(
        self,
        out: list[tuple[bytes, bytes]],
        named: set[bytes] | None,
        forwarded_for: list[bytes],
        client_host: str | None,
        host: bytes | None,
    ) -> list[tuple[bytes, bytes]]:
        """`out` without the headers `Connection` named, with the forwarding headers and the
        preserved `Host` added."""
        if named:
            named -= {b"close", b"keep-alive"}
            if named:
                out = [(name, value) for name, value in out if name not in named]
        if client_host:
            forwarded_for.append(client_host.encode("latin-1"))
        if forwarded_for:
            out.append((b"x-forwarded-for", b", ".join(forwarded_for)))
        out.append((b"x-forwarded-proto", self._proto))
        out.append((b"x-forwarded-host", self._public_host))
        if self._preserve_host and host is not None:
            out.append((b"host", host))
        return out


def _content_length(value: bytes, previous: int | None) -> int:
    if not value.isdigit():
        raise ValueError("malformed Content-Length")
    length = int(value)
    if previous is not None and previous != length:
        raise ValueError("conflicting Content-Length headers")
    return length


class ResponseHeaderFilter:
    """Upstream response headers → browser response headers (raw ASGI pairs, names lowercased)."""

    __slots__ = ("_cookie_base",)

    def __init__(self, *, cookie_base: str) -> None:
        self._cookie_base = cookie_base

    def apply(self, headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        out: list[tuple[bytes, bytes]] = []
        named: set[bytes] | None = None
        for raw_name, value in headers:
            name = raw_name.lower()
            if name in HOP_BY_HOP:
                if name == b"connection":  # each line counts (RFC 9110 §5.3): they are one list
                    named = connection_tokens(value) if named is None else named | connection_tokens(value)
                continue
            if name == b"set-cookie" and is_own_cookie(set_cookie_name(value), self._cookie_base):
                continue  # an upstream must never overwrite the BFF's session
            if name == b"x-request-id":
                continue  # the BFF adds the request's own id
            out.append((name, value))
        if named:
            named -= {b"close", b"keep-alive"}
            if named:
                out = [(name, value) for name, value in out if name not in named]
        return out
