"""The generic settings reader: every value type's conversion and its one-line error, unknown and
missing keys, nested tables and lists of tables, and environment variables laid over the TOML."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import pytest
from starlette.datastructures import Secret

from bff.config import load_settings
from bff.errors import ConfigError
from bff.settings_reader import URL, ByteSize, Duration, build_dataclass, merge_environment


@dataclasses.dataclass(frozen=True)
class Inner:
    name: str
    port: int = 1


@dataclasses.dataclass(frozen=True)
class Outer:
    url: URL
    timeout: Duration = 1.0
    size: ByteSize = 10
    flag: bool = False
    mode: Literal["lax", "DELETE"] = "lax"
    tags: tuple[str, ...] = ()
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    secret: Secret = dataclasses.field(default_factory=lambda: Secret(""))
    inner: Inner | None = None
    items: tuple[Inner, ...] = ()


@dataclasses.dataclass(frozen=True)
class Odd:
    ratio: float = 0.5


DEFAULT = Outer(url="http://a")


def build(raw: Any) -> tuple[Any, list[str]]:
    problems: list[str] = []
    return build_dataclass(Outer, raw, "", problems), problems


def test_good_values_are_converted() -> None:
    result, problems = build(
        {
            "url": "http://a.example/",
            "timeout": "1.5m",
            "size": "2KiB",
            "flag": True,
            "mode": "Delete",
            "tags": "a, b,,c",
            "headers": {"x-one": "1"},
            "secret": "s3cret",
            "inner": {"name": "n", "port": 8},
            "items": [{"name": "first"}, {"name": "second", "port": 2}],
        }
    )
    assert problems == []
    assert result.url == "http://a.example"  # a bare trailing slash is dropped
    assert result.timeout == 90.0
    assert result.size == 2048
    assert result.flag is True
    assert result.mode == "DELETE"  # matched case-insensitively, answered as declared
    assert result.tags == ("a", "b", "c")
    assert result.headers == {"x-one": "1"}
    assert str(result.secret) == "s3cret"
    assert result.inner == Inner("n", 8)
    assert result.items == (Inner("first", 1), Inner("second", 2))


def test_a_url_with_a_path_keeps_its_trailing_slash() -> None:
    result, problems = build({"url": "https://a.example/base/"})
    assert problems == []
    assert result.url == "https://a.example/base/"


def test_every_type_names_its_key_and_the_problem() -> None:
    result, problems = build(
        {
            "url": "http://a",
            "timeout": True,
            "size": True,
            "flag": "yes",
            "mode": "strict",
            "tags": 5,
            "headers": {"a": 1},
            "secret": 3,
            "inner": {"port": "x", "zz": 1},
            "bogus": 1,
        }
    )
    assert problems == [
        "bogus: unknown key",
        "timeout: expected a duration such as 30s, 15m, 12h or 30d",
        "size: expected a size such as 1MiB",
        "flag: expected true or false, got a string",
        "mode: 'strict' is not one of lax, DELETE",
        "tags: expected a list, got a number",
        "headers: expected a table of strings",
        "secret: expected a string",
        "inner.zz: unknown key",
        "inner.name: missing (required)",
        "inner.port: expected an integer, got a string",
    ]
    # A bad value leaves the default, never a half-typed value.
    assert dataclasses.replace(result, secret=DEFAULT.secret) == DEFAULT
    assert str(result.secret) == ""


def test_negative_and_malformed_durations_and_sizes() -> None:
    _, problems = build({"url": "http://a", "timeout": -1, "size": -5})
    assert problems == ["timeout: a duration cannot be negative", "size: a size cannot be negative"]
    _, problems = build({"url": "http://a", "timeout": "abc", "size": "1XB"})
    assert problems == [
        "timeout: 'abc' is not a duration (expected e.g. 30s, 15m, 12h, 30d)",
        "size: '1XB' is not a size (expected e.g. 512, 64KiB, 1MiB)",
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://a", "url: 'ftp://a' is not an absolute http(s) URL"),
        ("http:///path", "url: 'http:///path' is not an absolute http(s) URL"),
        ("http://a/?q=1", "url: 'http://a/?q=1' must not have a query or fragment"),
        ("http://a/#top", "url: 'http://a/#top' must not have a query or fragment"),
        ("http://a:xx/", "url: 'http://a:xx/' has a malformed port"),
    ],
)
def test_bad_urls(url: str, problem: str) -> None:
    result, problems = build({"url": url})
    assert problems == [problem]
    assert result is None  # the required key has no value


def test_not_a_table_and_missing_required_key() -> None:
    assert build("x") == (None, ["config: expected a table, got a string"])
    assert build({}) == (None, ["url: missing (required)"])
    problems: list[str] = []
    assert build_dataclass(Outer, [1], "outer", problems) is None
    assert problems == ["outer: expected a table, got a list"]


@pytest.mark.parametrize(
    ("value", "described"), [(True, "a boolean"), (1.5, "a number"), ([1], "a list"), ({"a": 1}, "a table")]
)
def test_values_are_described_by_their_toml_type(value: Any, described: str) -> None:
    _, problems = build({"url": "http://a", "inner": {"name": value}})
    assert problems == [f"inner.name: expected a string, got {described}"]
    _, problems = build({"url": "http://a", "inner": {"name": "n", "port": value}})
    assert problems == [f"inner.port: expected an integer, got {described}"]


def test_a_list_of_tables_reports_each_bad_item_by_index() -> None:
    result, problems = build({"url": "http://a", "items": [{"name": "n"}, 3, {"name": 4}]})
    assert problems == ["items[1]: expected a table, got a number", "items[2].name: expected a string, got a number"]
    assert result.items == ()


def test_a_type_without_a_converter_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="no converter for <class 'float'>"):
        build_dataclass(Odd, {"ratio": 1.0}, "", [])


def merged(environ: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    raw: dict[str, Any] = {"url": "http://a", "items": [{"name": "orig", "port": 2}]}
    problems: list[str] = []
    merge_environment(raw, environ, problems, prefix="B_", ignore=frozenset({"B_IGNORED"}))
    return raw, problems


def test_environment_values_are_parsed_as_toml_and_index_lists_of_tables() -> None:
    raw, problems = merged(
        {
            "B_URL": "http://env",
            "B_TAGS": '["a", "b"]',
            "B_FLAG": "true",
            "B_ITEMS__0__NAME": "renamed",
            "B_ITEMS__2__PORT": "8",
            "B_INNER__NAME": "not toml",
            "B_IGNORED": "1",
            "OTHER": "1",
        }
    )
    assert problems == []
    assert raw == {
        "url": "http://env",
        "tags": ["a", "b"],
        "flag": True,
        "items": [{"name": "renamed", "port": 2}, {}, {"port": 8}],
        "inner": {"name": "not toml"},
    }
    result, problems = build(raw)
    assert problems == ["items[1].name: missing (required)", "items[2].name: missing (required)"]
    assert result.url == "http://env"


def test_environment_paths_through_a_list_need_an_index() -> None:
    _, problems = merged({"B_ITEMS__X": "1"})
    assert problems == ["B_ITEMS__X: cannot set items.x"]
    _, problems = merged({"B_ITEMS__X__Y": "1"})
    assert problems == ["B_ITEMS__X__Y: cannot set items.x.y (its parent is not a table)"]


def test_an_environment_table_replaces_a_scalar() -> None:
    raw, problems = merged({"B_ITEMS__0__NAME__FIRST": "h"})
    assert problems == []
    assert raw["items"] == [{"name": {"first": "h"}, "port": 2}]
    _, problems = build(raw)
    assert problems == ["items[0].name: expected a string, got a table"]


# A URL setting given a number, from TOML (`upstream = 5`) or from the environment
# (`BFF_OIDC__ISSUER=5` parses as the TOML integer 5), once crashed with AttributeError.
def test_a_url_given_a_number_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"BFF_OIDC__ISSUER": "5"})
    assert "oidc.issuer: expected a string, got a number" in str(caught.value)


def test_a_url_field_given_a_number_is_one_problem() -> None:
    _, problems = build({"url": 5})
    assert problems == ["url: expected a string, got a number"]
