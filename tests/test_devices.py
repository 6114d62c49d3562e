"""`describe_device`: real user agents as people name their devices, pinned exactly."""

from __future__ import annotations

import pytest

from bff.devices import UNKNOWN_DEVICE, describe_device

CHROME_LINUX = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0"
SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15"
)


@pytest.mark.parametrize(
    ("user_agent", "device"),
    [
        (CHROME_LINUX, "Chrome 126 on Linux"),
        (FIREFOX_WINDOWS, "Firefox 127 on Windows"),
        (SAFARI_IOS, "Mobile Safari 17 on iOS"),
        (SAFARI_MAC, "Safari 17 on Mac OS X"),
        ("curl/8.5.0", "curl 8"),
        ("integration-browser", "Unknown device"),
        ("", "Unknown device"),
    ],
)
def test_a_user_agent_reads_as_browser_version_and_system(user_agent: str, device: str) -> None:
    assert describe_device(user_agent) == device


def test_the_unknown_device_is_named_once() -> None:
    assert UNKNOWN_DEVICE == "Unknown device"


def test_each_user_agent_is_parsed_once() -> None:
    describe_device.cache_clear()
    for _ in range(3):
        describe_device(CHROME_LINUX)
    info = describe_device.cache_info()
    assert (info.misses, info.hits) == (1, 2)
