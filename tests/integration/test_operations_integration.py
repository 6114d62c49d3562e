"""Operations against real `bff serve` processes: request ids (upstream, response, log lines,
a refresh's lines), the access log in both formats, a refused WebSocket upgrade's one log line,
and `/metrics` summed over two workers."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import httpx
import psutil
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.access_lines import access_of, log_lines
from tests.integration.oidc_harness import Bff, Run, user_name
from tests.integration.oidc_helpers import CSRF, logged_in, wait_for_expiry
from tests.support.jwt_api import JwtApi

NEW_ID = re.compile(r"[0-9a-f]{32}")


def wait_for_line(path: Path, needle: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, f"no line with {needle!r} in {path}"
        time.sleep(0.05)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_request_id_reaches_the_upstream_comes_back_and_names_the_access_line(
    run: Run, api: JwtApi, new_bff: Callable[..., Bff], request: pytest.FixtureRequest, log_format: str
) -> None:
    bff = new_bff(f"ids-{log_format}", log_format=log_format)
    user = user_name(request)
    browser = logged_in(run, bff, user)
    sid = browser.api("GET", f"{bff.url}/bff/user").json()["sid"]
    answer = browser.api("GET", f"{bff.url}/api/ids?code=not-logged", headers={"X-Request-ID": "abc.DEF-1_2"})
    assert answer.status_code == 200
    assert answer.headers.get_list("x-request-id") == ["abc.DEF-1_2"]
    assert api.seen_for("/api/ids")[-1].headers["x-request-id"] == "abc.DEF-1_2"

    replaced = browser.api("GET", f"{bff.url}/api/ids", headers={"X-Request-ID": "bad id!"})
    new_id = replaced.headers["x-request-id"]
    assert NEW_ID.fullmatch(new_id)
    assert api.seen_for("/api/ids")[-1].headers["x-request-id"] == new_id
    anonymous = httpx.get(f"{bff.url}/api/ids", headers={**CSRF, "X-Request-ID": "anon-1"})
    assert (anonymous.status_code, anonymous.headers["x-request-id"]) == (401, "anon-1")
    own = httpx.get(f"{bff.url}/bff/user", headers={"X-Request-ID": "own-1"})
    assert (own.status_code, own.headers["x-request-id"]) == (401, "own-1")
    wait_for_line(bff.process.log_file, "own-1")

    entry = access_of(bff.process.log_file, log_format, "abc.DEF-1_2")
    upstream_ms = entry.pop("upstream_ms")
    duration_ms = entry.pop("duration_ms")
    assert 0 < float(upstream_ms) <= float(duration_ms)
    expected = {
        "method": "GET",
        "route": "/api",
        "path": "/api/ids",
        "status": 200,
        "bytes": len(answer.content),
        "request_id": "abc.DEF-1_2",
        "session": sid[:12],
        "sub": user,
    }
    if log_format == "text":
        expected = {name: str(value) for name, value in expected.items()}
    if log_format == "json":
        entry.pop("time")
        expected |= {"level": "INFO", "logger": "bff.access", "message": "request"}
    assert entry == expected
    anonymous_entry = access_of(bff.process.log_file, log_format, "anon-1")
    assert (str(anonymous_entry["status"]), "session" in anonymous_entry) == ("401", False)
    own_entry = access_of(bff.process.log_file, log_format, "own-1")
    assert (own_entry["route"], str(own_entry["status"])) == ("/bff/user", "401")
    if log_format == "json":  # every line of the process, uvicorn's too, is one JSON object
        assert all(json.loads(line)["level"] for line in log_lines(bff.process.log_file))


def test_a_refresh_logs_under_the_id_of_the_request_that_started_it(
    run: Run, bff: Bff, request: pytest.FixtureRequest
) -> None:
    browser = logged_in(run, bff, user_name(request))
    wait_for_expiry(browser.api("GET", f"{bff.url}/api/before"))
    answer = browser.api("GET", f"{bff.url}/api/after", headers={"X-Request-ID": "refresh-starter-1"})
    assert answer.status_code == 200
    wait_for_line(bff.process.log_file, "request_id=refresh-starter-1 ")
    lines = [line for line in log_lines(bff.process.log_file) if "refresh-starter-1" in line]
    assert len(lines) == 2, lines
    assert lines[0].startswith("INFO:     bff.tokens: Access token refreshed. sub: ")
    assert lines[0].endswith(" request_id=refresh-starter-1")
    assert " bff.access: method=GET route=/api path=/api/after status=200 " in lines[1]


async def _refused_upgrade(bff: Bff) -> int:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await session.ws_connect(f"{bff.url}/api/ws", headers={"origin": "https://evil.example"})
    return caught.value.status


def test_a_refused_cross_site_upgrade_logs_one_line_and_no_traceback(new_bff: Callable[..., Bff]) -> None:
    bff = new_bff("ws-refused", start=False)
    bff.process.log_level = "info"  # what an operator runs: debug would add websockets' frame dump
    bff.process.start()
    before = len(log_lines(bff.process.log_file))
    assert asyncio.run(_refused_upgrade(bff)) == 403
    wait_for_line(bff.process.log_file, "path=/api/ws")
    time.sleep(0.3)  # anything uvicorn would add comes right after
    new = log_lines(bff.process.log_file)[before:]
    assert not [line for line in new if "Traceback" in line or line.startswith("ERROR")], new
    (line,) = new
    assert " bff.access: method=GET route=/api path=/api/ws status=403 " in line


def _worker_counts(directory: Path) -> list[float]:
    """`bff_proxy_requests_total` summed per worker file of the multiprocess directory."""
    totals = []
    for path in sorted(directory.glob("counter_*.db")):
        values = MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
        totals.append(sum(value for key, value, _, _ in values if json.loads(key)[1] == "bff_proxy_requests_total"))
    return totals


def test_metrics_of_two_workers_in_one_scrape(
    run: Run, new_bff: Callable[..., Bff], request: pytest.FixtureRequest
) -> None:
    bff = new_bff("metrics", workers=2)
    assert bff.process._process is not None
    workers = psutil.Process(bff.process._process.pid).children(recursive=True)
    directories = {Path(child.environ()["PROMETHEUS_MULTIPROC_DIR"]) for child in workers if child.cmdline()[0]}
    (directory,) = directories

    first = logged_in(run, bff, user_name(request, "-a"))
    before = first.api("GET", f"{bff.url}/api/one")
    second = logged_in(run, bff, user_name(request, "-b"))
    wait_for_expiry(before)
    assert first.api("GET", f"{bff.url}/api/two").status_code == 200  # refreshed first
    assert second.api("POST", f"{bff.url}/bff/logout").status_code == 200
    anonymous = 0
    while True:  # anonymous 401s on fresh connections until both workers have answered some
        for _ in range(10):
            assert httpx.get(f"{bff.url}/api/none", headers=CSRF).status_code == 401
            anonymous += 1
        counts = _worker_counts(directory)
        if len(counts) == 2 and all(counts):
            break
        assert anonymous < 400, counts

    text = httpx.get(f"{bff.url}/metrics").text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("bff_logins_total", (("outcome", "success"),))] == 2
    assert samples[("bff_token_refreshes_total", (("outcome", "success"),))] == 1
    assert samples[("bff_refresh_seconds_count", ())] == 1
    assert samples[("bff_logouts_total", (("outcome", "success"),))] == 1
    assert samples[("bff_proxy_requests_total", (("route", "/api"), ("status", "200")))] == 2
    assert samples[("bff_proxy_requests_total", (("route", "/api"), ("status", "401")))] == anonymous
    assert samples[("bff_upstream_seconds_count", (("route", "/api"),))] == 2
    assert sum(counts) == anonymous + 2
    bff.process.stop()
    assert not directory.exists()
