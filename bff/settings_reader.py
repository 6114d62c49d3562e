"""Reads raw TOML and environment values into typed, frozen dataclasses.

The generic half of configuration: it knows the value types (durations, sizes, URLs, choices,
lists, nested tables) but none of bff's keys, which `bff.config` declares. Every problem is
appended to a list, one line naming its key, so that the caller can report them all at once.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from starlette.datastructures import Secret

__all__ = ["URL", "ByteSize", "Duration", "build_dataclass", "merge_environment", "parse_bytesize", "parse_duration"]

# Marker types: the reader looks at the annotation to know how to parse and check a value.
Duration = Annotated[float, "duration"]  # seconds; written "30s", "15m", "12h", "30d" or a number
ByteSize = Annotated[int, "bytesize"]  # bytes; written "1MiB", "64KiB", "512" or a number
URL = Annotated[str, "url"]  # absolute http(s) URL

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def parse_duration(text: str | float) -> float:
    """`"30s"` → 30.0; raise `ValueError` with the accepted forms."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 30s, 15m, 12h or 30d")
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _DURATION.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not a duration (expected e.g. 30s, 15m, 12h, 30d)")
        value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if value < 0:
        raise ValueError("a duration cannot be negative")
    return value


def parse_bytesize(text: str | int) -> int:
    if isinstance(text, bool):
        raise ValueError("expected a size such as 1MiB")
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE.match(str(text))
        if match is None:
            raise ValueError(f"{text!r} is not a size (expected e.g. 512, 64KiB, 1MiB)")
        value = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if value < 0:
        raise ValueError("a size cannot be negative")
    return value


def merge_environment(
    raw: dict[str, Any], environ: Mapping[str, str], problems: list[str], *, prefix: str, ignore: frozenset[str]
) -> None:
    """Lay `<prefix>A__B=value` over `raw["a"]["b"]`; numeric parts index into lists of tables."""
    for name in sorted(environ):
        if not name.startswith(prefix) or name in ignore:
            continue
        path = [part.lower() for part in name[len(prefix) :].split("__")]
        node: Any = raw
        for i, part in enumerate(path[:-1]):
            child_is_index = path[i + 1].isdigit()
            node = _descend(node, part, [] if child_is_index else {})
            if node is None:
                problems.append(f"{name}: cannot set {'.'.join(path)} (its parent is not a table)")
                break
        else:
            last = path[-1]
            value = _parse_env_value(environ[name])
            if isinstance(node, list) and last.isdigit():
                _grow(node, int(last), value)
            elif isinstance(node, dict):
                node[last] = value
            else:
                problems.append(f"{name}: cannot set {'.'.join(path)}")


def _descend(node: Any, part: str, empty: dict[str, Any] | list[Any]) -> Any:
    if isinstance(node, dict):
        if not isinstance(node.get(part), dict | list):
            node[part] = empty
        return node[part]
    if isinstance(node, list) and part.isdigit():
        index = int(part)
        _grow(node, index, empty)
        if not isinstance(node[index], dict | list):
            node[index] = empty
        return node[index]
    return None


def _grow(items: list[Any], index: int, value: Any) -> None:
    while len(items) <= index:
        items.append({})
    items[index] = value if not isinstance(items[index], dict) or not isinstance(value, dict) else items[index]


def _parse_env_value(text: str) -> Any:
    """A TOML value when it parses as one (`true`, `8`, `["a", "b"]`), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def build_dataclass(cls: type[Any], raw: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(raw, dict):
        problems.append(f"{where or 'config'}: expected a table, got {_describe(raw)}")
        return None
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems.extend(f"{_join(where, key)}: unknown key" for key in raw if key not in fields)
    values: dict[str, Any] = {}
    for name, spec in fields.items():
        key = _join(where, name)
        if name in raw:
            before = len(problems)
            value = _convert(hints[name], raw[name], key, problems)
            if len(problems) == before:  # a bad value leaves the default (or no object), never a half-typed one
                values[name] = value
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            problems.append(f"{key}: missing (required)")
    try:
        return cls(**values)
    except TypeError:  # a required key is missing: already reported above
        return None


def _convert(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    """`value` as the type `hint` says; on a problem (appended) a placeholder of that type."""
    convert_kind = _CONVERTERS.get(get_origin(hint))
    if convert_kind is not None:
        return convert_kind(hint, value, key, problems)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(typing.cast(type[Any], hint), value, key, problems)
    return _convert_scalar(hint, value, key, problems)


def _convert_marked(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    """`Duration`, `ByteSize`, `URL`: parsed by their marker."""
    base, marker = get_args(hint)[:2]
    try:
        if marker == "duration":
            return parse_duration(value)
        if marker == "bytesize":
            return parse_bytesize(value)
        if marker == "url":
            if not isinstance(value, str):  # reported by the str check; no URL to look at
                return _convert(base, value, key, problems)
            return _check_url(value)
    except ValueError as exc:
        problems.append(f"{key}: {exc}")
        return None
    raise TypeError(f"no converter for {hint!r}")  # a programming error in this module


def _convert_optional(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    """`X | None`: a value written is an `X` (None is only ever the default)."""
    options = [arg for arg in get_args(hint) if arg is not type(None)]
    return _convert(options[0], value, key, problems)


def _convert_choice(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    choices = get_args(hint)
    # Case-insensitive, answering the choice as declared: "Lax" is `lax`, "delete" is `DELETE`.
    folded = {choice.lower(): choice for choice in choices if isinstance(choice, str)}
    text = folded.get(value.lower(), value) if isinstance(value, str) else value
    if text not in choices:
        problems.append(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
    return text


def _convert_list(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    """`tuple[X, ...]`: a TOML list, or a comma-separated string (as environment variables write it)."""
    item_type = get_args(hint)[0]
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        problems.append(f"{key}: expected a list, got {_describe(value)}")
        return ()
    return tuple(_convert(item_type, item, f"{key}[{i}]", problems) for i, item in enumerate(value))


def _convert_string_table(_hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    """`Mapping[str, str]`."""
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        problems.append(f"{key}: expected a table of strings")
        return {}
    return dict(value)


def _convert_scalar(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    if hint is Secret:
        if not isinstance(value, str):
            problems.append(f"{key}: expected a string")
            return Secret("")
        return Secret(value)
    if hint is bool:
        if not isinstance(value, bool):
            problems.append(f"{key}: expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key}: expected an integer, got {_describe(value)}")
        return value
    if hint is str:
        if not isinstance(value, str):
            problems.append(f"{key}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"no converter for {hint!r}")  # a programming error in this module


# The converter of each generic kind of annotation, by `get_origin` (plain types have none).
_CONVERTERS: dict[Any, Callable[[Any, Any, str, list[str]], Any]] = {
    Annotated: _convert_marked,
    Union: _convert_optional,
    types.UnionType: _convert_optional,
    Literal: _convert_choice,
    tuple: _convert_list,
    Mapping: _convert_string_table,
}


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise ValueError(f"{value!r} must not have a query or fragment")
    try:
        parts.port  # noqa: B018 (raises on a malformed port)
    except ValueError:
        raise ValueError(f"{value!r} has a malformed port") from None
    return value.rstrip("/") if parts.path in ("", "/") else value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return "a string"
