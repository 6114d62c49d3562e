"""Request paths as the proxy routes and forwards them: `normalise_path`.

Owns the decoding and the refusals that keep a request inside its route's prefix (dot segments in
any encoding, encoded slashes and backslashes, NUL). Route matching on the result is
`bff.routes`' business.
"""

from __future__ import annotations

from urllib.parse import quote_from_bytes, unquote

from bff.errors import BadRequest

__all__ = ["SAFE", "normalise_path"]

SAFE = "".join(chr(c) for c in range(0x21, 0x7F))
"""Bytes that are safe in a forwarded path or query as they are (non-ASCII gets percent-encoded)."""


def normalise_path(raw_path: bytes) -> tuple[str, bytes]:
    """The decoded path to route on and the raw path to forward, with doubled slashes collapsed.

    Raise `BadRequest` for a `.` or `..` segment in any form (`%2e`, double encoding, `..;`),
    an encoded slash or backslash, a backslash, or a NUL: nothing may leave its route's prefix.
    """
    if not raw_path.startswith(b"/"):
        raise BadRequest("path must start with '/'")
    if (
        b"%" not in raw_path
        and b"/." not in raw_path
        and b"//" not in raw_path
        and b"\\" not in raw_path
        and raw_path.isascii()
    ):
        return raw_path.decode("ascii"), raw_path  # the common case: nothing to decode or check
    segments = raw_path.split(b"/")
    kept = [b""]
    last = len(segments) - 1
    for i, segment in enumerate(segments[1:], start=1):
        if not segment:
            if i == last:
                kept.append(segment)  # keep a trailing slash
            continue
        _check_segment(segment)
        kept.append(segment)
    forward = b"/".join(kept) if len(kept) > 1 else b"/"
    if not forward.isascii():
        forward = quote_from_bytes(forward, safe=SAFE).encode("ascii")
    return unquote(forward.decode("ascii")), forward


def _check_segment(segment: bytes) -> None:
    if b"\\" in segment:
        raise BadRequest("backslash in path")
    text = segment.decode("latin-1")
    for _ in range(3):  # double- and triple-encoded forms too
        decoded = unquote(text, encoding="latin-1")
        if decoded == text:
            break
        text = decoded
    if "/" in text or "\\" in text or "\x00" in text:
        raise BadRequest("encoded slash, backslash or NUL in path")
    if text.split(";", 1)[0] in (".", ".."):
        raise BadRequest("'.' or '..' segment in path")
