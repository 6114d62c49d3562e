"""What the browser tests do and look at: a recorded tab, log in, add a to-do, call the API.

Imported by `conftest.py` and the test modules of this folder (pytest puts the folder on
`sys.path`, it has no `__init__.py`). Only the SPA's documented DOM ids are used:
`#login`, `#logout`, `#user-name`, `#todo-input`, `#todo-add`, `#todo-list`, `#clock`,
`#token-expiry`, `#sessions`, `#logout-others`, `#cookie-visibility`, `#error`, `#status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, ConsoleMessage, Error, Frame, Page, Request, Response, expect

REPO = Path(__file__).resolve().parents[2]
ACCESS_TTL = 2
"""Access-token lifetime of the servers under test, in seconds: the tests wait it out."""
JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
"""A JSON Web Token (JWS compact form; the header always starts with `{"` = `eyJ`)."""
BLANK = re.compile(r"^\s*$")
TODO_API = "/api/todos"
"""The demo API's to-do collection, as the SPA calls it."""


# --- processes -------------------------------------------------------------------------------


def server_env(**extra: str) -> dict[str, str]:
    """The environment for a server under test: ours without `BFF_...` overrides, unbuffered output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("BFF_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Server:
    """A server the tests started as a subprocess (in its own process group), with its log."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(10)
        # Children of an npx/node launcher may outlive it: end the rest of this group too.
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


STARTED: list[Server] = []
"""Every server `start_server` started: a failing test prints the end of the logs of those still running."""


def start_server(
    name: str,
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    ready_url: str,
    url: str,
    log_dir: Path,
    timeout: float = 45.0,
    any_answer: bool = False,
) -> Server:
    """Start `argv`, wait until `ready_url` answers 2xx (with `any_answer`, any HTTP status), return
    it; raise with its log if it won't."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(name, process, url, log_path)
    STARTED.append(server)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} before it was ready:\n{server.log_tail()}")
        try:
            with opener.open(ready_url, timeout=2) as answer:
                if 200 <= answer.status < 300:
                    return server
                last = f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            exc.close()
            if any_answer:
                return server
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} not ready at {ready_url} after {timeout:.0f}s ({last}):\n{server.log_tail()}")


# --- the recorded tab ------------------------------------------------------------------------


@dataclass
class SeenResponse:
    """A response the page received, with its body when it has one that can be read."""

    url: str
    status: int
    headers: dict[str, str]
    body: bytes | None = None
    unread: str = ""
    """Why there is no body: a redirect, an event stream that has not ended, or an error."""


@dataclass
class Tab:
    """One browser context ("device") with one page, and everything that page received."""

    name: str
    context: BrowserContext
    page: Page
    responses: list[SeenResponse] = field(default_factory=list)
    navigations: list[str] = field(default_factory=list)
    """Main-frame navigations, in order (a navigation reloads the SPA)."""
    navigation_requests: list[str] = field(default_factory=list)
    """URLs of every main-frame document request, redirects included."""
    problems: list[str] = field(default_factory=list)
    """Console errors and uncaught exceptions of the page."""
    _reads: set[asyncio.Task[None]] = field(default_factory=set)
    _streams: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.page.on("response", self._on_response)
        self.page.on("request", self._on_request)
        self.page.on("framenavigated", self._on_navigated)
        self.page.on("console", self._on_console)
        self.page.on("pageerror", self._on_pageerror)

    def _on_response(self, response: Response) -> None:
        task = asyncio.get_running_loop().create_task(self._read(response))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read(self, response: Response) -> None:
        headers = await response.all_headers()
        seen = SeenResponse(response.url, response.status, headers)
        self.responses.append(seen)
        if 300 <= response.status < 400:
            seen.unread = "redirect"
        elif "text/event-stream" in headers.get("content-type", ""):
            # A stream has a body only once it ended; `settle()` must not wait for an open one.
            seen.unread = "event stream still open"
            stream = asyncio.get_running_loop().create_task(self._read_body(response, seen))
            self._streams.add(stream)
            stream.add_done_callback(self._streams.discard)
        else:
            await self._read_body(response, seen)

    @staticmethod
    async def _read_body(response: Response, seen: SeenResponse) -> None:
        try:
            seen.body = await response.body()
            seen.unread = ""
        except Error as exc:
            if not seen.unread:
                seen.unread = f"unreadable: {exc.message.splitlines()[0]}"

    def _on_request(self, request: Request) -> None:
        if request.is_navigation_request() and request.frame == self.page.main_frame:
            self.navigation_requests.append(request.url)

    def _on_navigated(self, frame: Frame) -> None:
        if frame == self.page.main_frame:
            self.navigations.append(frame.url)

    def _on_console(self, message: ConsoleMessage) -> None:
        # "Failed to load resource" repeats a response status, which the tests check themselves
        # (an anonymous page's 401 from /bff/user is expected).
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.problems.append(f"console: {message.text} ({message.location.get('url', '')})")

    def _on_pageerror(self, error: Error) -> None:
        self.problems.append(f"uncaught: {error.message}")

    async def settle(self) -> None:
        """Wait until every response seen so far has been read."""
        while self._reads:
            await asyncio.gather(*list(self._reads), return_exceptions=True)

    def origin(self) -> str:
        parts = urlsplit(self.page.url)
        return f"{parts.scheme}://{parts.netloc}"


OpenTab = Callable[[str], Awaitable[Tab]]
"""The `open_tab` fixture: `await open_tab("laptop")` gives a fresh context with one recorded page."""


# --- what a user does ------------------------------------------------------------------------


def user_pattern(username: str) -> re.Pattern[str]:
    return re.compile(re.escape(username), re.IGNORECASE)


async def login(tab: Tab, base_url: str, username: str) -> None:
    """Open the SPA anonymous, press log in, type a name at the development IdP, land signed in."""
    page = tab.page
    await page.goto(base_url + "/")
    await expect(page.locator("#status")).to_have_text(re.compile("signed out", re.I))
    await expect(page.locator("#login")).to_be_visible()
    await page.locator("#login").click()
    await page.locator("#username").fill(username)
    await page.locator("#login-submit").click()
    await expect_signed_in(tab, base_url, username)


async def expect_signed_in(tab: Tab, base_url: str, username: str) -> None:
    page = tab.page
    await expect(page.locator("#status")).to_have_text(re.compile("signed in", re.I))
    await expect(page.locator("#user-name")).to_have_text(user_pattern(username))
    await expect(page.locator("#logout")).to_be_visible()
    await expect(page.locator("#login")).to_be_hidden()
    assert tab.origin() == base_url, f"after login the page is on {page.url}, not on {base_url}"


async def add_todo(tab: Tab, text: str) -> None:
    """Type a to-do, press add, see it in the list, and no error."""
    page = tab.page
    await page.locator("#todo-input").fill(text)
    async with page.expect_response(lambda r: r.request.method == "POST" and "/api/" in r.url) as posted:
        await page.locator("#todo-add").click()
    response = await posted.value
    assert response.status < 300, f"POST {response.url} answered {response.status}: {await _text(response)}"
    await expect(page.locator("#todo-list li").filter(has_text=text)).to_have_count(1)
    await expect(page.locator("#error")).to_have_text(BLANK)


async def set_marker(page: Page) -> None:
    """Leave a mark in this document: a navigation or reload loses it."""
    await page.evaluate("window.__marker = 1")


async def has_marker(page: Page) -> bool:
    return bool(await page.evaluate("window.__marker === 1"))


@dataclass(frozen=True)
class Checkpoint:
    """How much a tab had seen when `checkpoint()` marked its document."""

    navigations: int
    responses: int
    problems: int


async def checkpoint(tab: Tab) -> Checkpoint:
    """Leave a mark in the document (a reload or navigation loses it) and remember what was seen."""
    await set_marker(tab.page)
    await tab.settle()
    return Checkpoint(len(tab.navigations), len(tab.responses), len(tab.problems))


async def expect_undisturbed_since(tab: Tab, since: Checkpoint) -> None:
    """Since `since`: no reload or navigation, no failed request, no console error, no `#error`."""
    await tab.settle()
    assert await has_marker(tab.page), "the page was reloaded or navigated away (window.__marker lost)"
    assert tab.navigations[since.navigations :] == [], f"navigated: {tab.navigations[since.navigations :]}"
    failed = [f"{r.status} {r.url}" for r in tab.responses[since.responses :] if r.status >= 400]
    assert failed == [], f"requests failed: {failed}"
    assert tab.problems[since.problems :] == [], f"console errors: {tab.problems[since.problems :]}"
    await expect(tab.page.locator("#error")).to_have_text(BLANK)


async def api(page: Page, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Call the BFF from the page's own JavaScript, as the SPA does (cookie, anti-forgery header)."""
    result: dict[str, Any] = await page.evaluate(
        """async ([method, path, body]) => {
            const init = {method, credentials: "same-origin", headers: {"X-CSRF": "1"}};
            if (body !== null) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
            const r = await fetch(path, init);
            return {status: r.status, text: await r.text()};
        }""",
        [method, path, body],
    )
    text: str = result["text"]
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    return int(result["status"]), parsed


async def _text(response: Response) -> str:
    try:
        return (await response.text())[:300]
    except Error:
        return "(no body)"


# --- where a token must not be ---------------------------------------------------------------


async def token_leaks(tab: Tab, tokens: set[str] | None = None) -> list[str]:
    """Every place the browser holds or received that contains a JWT (or one of `tokens`, the real
    tokens and pieces of them when the provider tells them): document.cookie, localStorage,
    sessionStorage, the cookie jar, and every response the page received (URL, headers, body)."""
    await tab.settle()
    needles = sorted(tokens or set(), key=len, reverse=True)  # a whole token is named before its pieces
    places = [*await held_places(tab), *received_places(tab)]
    return [f"{where}: {token}" for where, text in places if (token := token_in(text, needles))]


def token_in(text: str, needles: list[str]) -> str | None:
    """The start of a JWT or of a `needles` token found in `text` (never the whole token), or None."""
    match = JWT.search(text)
    if match:
        return match.group(0)[:40] + "..."
    for needle in needles:
        if needle in text:
            return needle[:12] + "... (a token the provider issued)"
    return None


async def held_places(tab: Tab) -> list[tuple[str, str]]:
    """What the browser holds, as (where, text): document.cookie, the web storages, the cookie jar."""
    scripts = (
        ("document.cookie", "document.cookie"),
        ("localStorage", "JSON.stringify(Object.entries(localStorage))"),
        ("sessionStorage", "JSON.stringify(Object.entries(sessionStorage))"),
    )
    places = [(what, str(await tab.page.evaluate(script))) for what, script in scripts]
    places.extend(
        (f"cookie {cookie['name']} ({cookie['domain']})", cookie["value"]) for cookie in await tab.context.cookies()
    )
    return places


def received_places(tab: Tab) -> list[tuple[str, str]]:
    """What the page received, as (where, text): each response's URL, headers and body, and each
    navigation's URL."""
    places: list[tuple[str, str]] = []
    for response in tab.responses:
        places.append((f"URL {response.url}", response.url))
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.items())
        places.append((f"headers of {response.url}", headers))
        if response.body is not None:
            places.append((f"body of {response.url}", response.body.decode("utf-8", "replace")))
    places.extend((f"navigation to {url}", url) for url in tab.navigation_requests)
    return places


def unread_bodies(tab: Tab) -> list[str]:
    """Responses whose body should have been read but could not be (so were not checked)."""
    return [f"{r.url}: {r.unread}" for r in tab.responses if r.unread.startswith("unreadable")]
