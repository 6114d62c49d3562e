"""Reading the BFF's `Set-Cookie` headers in tests: one parser, the cookies of a response, and
whether a cookie clears its name."""

from __future__ import annotations

from typing import Protocol


class _Headers(Protocol):
    def get_list(self, key: str) -> list[str]: ...


class _Response(Protocol):
    @property
    def headers(self) -> _Headers: ...


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """`name=value; Attr=x; Flag` → (name, value, {"attr": "x", "flag": ""}) with lower-case
    attribute names; an attribute given twice fails the test."""
    first, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = first.partition("=")
    parsed: dict[str, str] = {}
    for attribute in attributes:
        key, _, attribute_value = attribute.partition("=")
        key = key.strip().lower()
        assert key not in parsed, f"duplicate attribute {key}"
        parsed[key] = attribute_value.strip()
    return name.strip(), value.strip(), parsed


def set_cookies(response: _Response) -> dict[str, tuple[str, dict[str, str]]]:
    """The cookies a response sets, by name: (value, attributes)."""
    cookies: dict[str, tuple[str, dict[str, str]]] = {}
    for header in response.headers.get_list("set-cookie"):
        name, value, attributes = parse_set_cookie(header)
        cookies[name] = (value, attributes)
    return cookies


def is_clearing(value: str, attributes: dict[str, str]) -> bool:
    """Whether a cookie (as `parse_set_cookie` reads it) deletes its name in the browser."""
    return value == "" or attributes.get("max-age") == "0" or "1970" in attributes.get("expires", "")


def clears(header: str) -> bool:
    """Whether a `Set-Cookie` header deletes its cookie."""
    _, value, attributes = parse_set_cookie(header)
    return is_clearing(value, attributes)
