"""`parse_redis_url`: the Redis URL forms of `session_store`, read without I/O."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bff.errors import ConfigError
from bff.stores.urls import RedisTarget, parse_redis_url, shown_url

SENTINEL_FORM = "redis+sentinel://[[user]:password@]host:port[,host:port...]/<master-name>[/<db>]"
CLUSTER_FORM = "redis+cluster://[[user]:password@]host:port[,host:port...]/"


def test_a_plain_redis_url_goes_to_redis_py_as_it_is() -> None:
    url = "rediss://:pw@cache.internal:6380/2?ssl_cert_reqs=none"
    assert parse_redis_url(url) == RedisTarget("single", url)


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    url = "redis+sentinel://app:s%40cret@10.0.0.1:26379,[::1]:26380,sentinel-3:26381/mymaster/3?sentinel_password=sp"
    assert parse_redis_url(url) == RedisTarget(
        "sentinel",
        url,
        nodes=(("10.0.0.1", 26379), ("::1", 26380), ("sentinel-3", 26381)),
        master="mymaster",
        db=3,
        username="app",
        password="s@cret",
        sentinel_password="sp",
    )


def test_a_sentinel_url_without_a_database_means_database_0_without_credentials() -> None:
    target = parse_redis_url("redis+sentinel://h:26379/primary")
    assert (target.master, target.db, target.username, target.password, target.sentinel_password) == (
        "primary",
        0,
        None,
        None,
        None,
    )


@pytest.mark.parametrize("url", ["redis+cluster://:pw@h1:7000,h2:7001/", "redis+cluster://:pw@h1:7000,h2:7001"])
def test_a_cluster_url_lists_its_start_up_nodes(url: str) -> None:
    assert parse_redis_url(url) == RedisTarget("cluster", url, nodes=(("h1", 7000), ("h2", 7001)), password="pw")


def test_the_password_is_in_no_repr() -> None:
    target = parse_redis_url("redis+sentinel://:hunter2@h:1/m?sentinel_password=hunter3")
    assert "hunter" not in repr(target)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://:pw@h:26379", "needs the master's name and at most a database number after it"),
        ("redis+sentinel://:pw@h:26379/", "needs the master's name and at most a database number after it"),
        ("redis+sentinel://:pw@h:26379/m/1/2", "needs the master's name and at most a database number after it"),
        ("redis+sentinel://:pw@h:26379/m/x", "has database 'x', which is not a number"),
        ("redis+sentinel://:pw@h:26379,h2/m", "has 'h2' where a host:port belongs"),
        ("redis+sentinel://:pw@h:99999/m", "has 'h:99999' where a host:port belongs"),
        ("redis+sentinel://:pw@h:1/m?password=pw", "has unknown parameters password"),
        ("redis+cluster://:pw@h:7000/1", "has a path, but Redis Cluster has only database 0"),
        ("redis+cluster://:pw@:7000/", "has ':7000' where a host:port belongs"),
        ("redis+cluster://:pw@h:7000/?sentinel_password=pw", "has unknown parameters sentinel_password"),
    ],
)
def test_a_bad_url_is_one_line_naming_session_store_and_the_form_without_the_password(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_redis_url(url)
    form = SENTINEL_FORM if url.startswith("redis+sentinel") else CLUSTER_FORM
    assert caught.value.problems == [f"session_store: {shown_url(url)!r} {problem}; expected {form}"]
    assert "pw" not in caught.value.problems[0]


def test_shown_url_hides_the_credentials_and_the_query() -> None:
    assert shown_url("redis+sentinel://u:p@h:1,h:2/m/0?sentinel_password=q") == "redis+sentinel://***@h:1,h:2/m/0"
    assert shown_url("redis+cluster://h:1/") == "redis+cluster://h:1/"
    assert shown_url("not a url") == "not a url"


def test_the_readme_url_forms_read_as_documented() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("### Redis Sentinel and Cluster") : readme.index("## Deployment behind Caddy")]
    urls = re.findall(r'^session_store = "([^"]+)"', section, re.M)
    assert [parse_redis_url(url) for url in urls] == [
        RedisTarget("single", urls[0]),
        RedisTarget(
            "sentinel",
            urls[1],
            nodes=(("10.0.0.5", 26379), ("10.0.0.6", 26379), ("10.0.0.7", 26379)),
            master="mymaster",
            password="password",
        ),
        RedisTarget(
            "cluster", urls[2], nodes=(("10.0.0.5", 7000), ("10.0.0.6", 7000), ("10.0.0.7", 7000)), password="password"
        ),
    ]
    assert SENTINEL_FORM in section
    assert CLUSTER_FORM in section
    with pytest.raises(ConfigError) as caught:
        parse_redis_url("redis+sentinel://:password@10.0.0.5:26379")
    assert f"\n  {caught.value.problems[0]}\n" in section  # the example message, as printed
