"""Browser end-to-end tests: Playwright (async API) driving Debian's Chromium against real servers.

The async API on one session-wide event loop: Playwright's sync API leaves its own loop marked
running in the main thread, which breaks every pytest-asyncio test that runs after it.

Without Chromium (or node, for the Vite test) these tests skip with the reason locally, and
fail when `CI=true`: CI installs them (`scripts/install`), so missing means broken.
Screenshots go to `test-artifacts/` (git-ignored); a failing test also saves one per open tab.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright, expect

from tests.e2e.e2e_flows import ACCESS_TTL, REPO, STARTED, OpenTab, Server, Tab, server_env, start_server
from tests.support.processes import free_port
from tests.support.tools import missing_tool

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("BFF_E2E_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TIMEOUT_MS = 10_000


def require(*, ok: bool, reason: str) -> None:
    """Skip (locally) or fail (CI=true) when something the test needs is missing."""
    if not ok:
        missing_tool(f"E2E SKIPPED: {reason}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> object:
    report = yield
    if report.when == "call":  # type: ignore[attr-defined]
        item.stash[_FAILED] = report.failed  # type: ignore[attr-defined]
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def chromium() -> Path:
    require(ok=CHROMIUM.exists(), reason=f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


def start_demo(
    log_dir: Path, data_dir: Path, *, public_url: str | None = None, token_storage: str = "server"
) -> Server:
    """`bff demo` on a free port with 2-second access tokens; `public_url` for a dev server in front;
    `token_storage = "cookie"` for cookie mode."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "bff", "demo", "--port", str(port), "--access-ttl", str(ACCESS_TTL)]
    argv += ["--token-storage", token_storage] if token_storage != "server" else []
    name = "bff-demo" if public_url is None else "bff-demo-behind-vite"
    return start_server(
        name if token_storage == "server" else f"{name}-{token_storage}",
        [*argv, "--data-dir", str(data_dir)],
        cwd=REPO,
        env=server_env(**({"BFF_PUBLIC_URL": public_url} if public_url else {})),
        ready_url=f"{url}/healthz",
        url=url,
        log_dir=log_dir,
    )


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`bff demo`: BFF, development IdP, demo API and SPA on one port."""
    server = start_demo(tmp_path_factory.mktemp("logs"), tmp_path_factory.mktemp("bff-demo-data"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cookie_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`bff demo --token-storage cookie`: the session sealed in the browser's cookies."""
    logs, data = tmp_path_factory.mktemp("logs-cookie"), tmp_path_factory.mktemp("bff-demo-cookie-data")
    server = start_demo(logs, data, token_storage="cookie")
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def open_tab(browser: Browser, request: pytest.FixtureRequest, artifacts: Path) -> AsyncIterator[OpenTab]:
    """`await open_tab("device-a")`: a fresh browser context (its own cookies) with one recorded page."""
    tabs: list[Tab] = []

    async def open_one(name: str) -> Tab:
        context = await browser.new_context(viewport={"width": 1100, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        tab = Tab(name, context, await context.new_page())
        tabs.append(tab)
        return tab

    yield open_one
    failed = request.node.stash.get(_FAILED, False)
    for tab in tabs:
        if failed:
            stem = re.sub(r"[^\w.-]+", "_", f"{request.node.name}-{tab.name}-failure")
            try:
                await tab.page.screenshot(path=artifacts / f"{stem}.png", full_page=True)
            except Exception as exc:  # a closed or crashed page has nothing to show
                print(f"no failure screenshot of {tab.name}: {exc}")
            print(f"--- {tab.name}: at {tab.page.url}\nnavigations: {tab.navigations}\nproblems: {tab.problems}")
            print("last responses:\n" + "\n".join(f"  {r.status} {r.url}" for r in tab.responses[-15:]))
        await tab.context.close()
    if failed:
        for server in STARTED:
            if server.process.poll() is None:
                print(f"--- end of the log of {server.name} ({server.url}):\n{server.log_tail()}")


def require_node_modules(folder: Path) -> None:
    require(ok=shutil.which("node") is not None and shutil.which("npx") is not None, reason="node/npx not installed")
    require(
        ok=(folder / "node_modules").is_dir(),
        reason=f"{folder.relative_to(REPO)}/node_modules missing (run `npm ci` there, or scripts/install)",
    )


@pytest.fixture(scope="session")
def vite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`frontend-demo/` on the Vite dev server, proxying `/bff` and `/api` to a `bff demo` of its own
    that was told (`BFF_PUBLIC_URL`) that the browser sees Vite's origin (see `vite.config.js`)."""
    folder = REPO / "frontend-demo"
    require(ok=(folder / "vite.config.js").is_file(), reason="frontend-demo/vite.config.js not found")
    require_node_modules(folder)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("logs")
    bff = start_demo(logs, tmp_path_factory.mktemp("bff-demo-data"), public_url=url)
    try:
        server = start_server(
            "vite",
            ["npx", "--no-install", "vite", "--port", str(port), "--strictPort", "--host", "127.0.0.1"],
            cwd=folder,
            env=server_env(BFF_URL=bff.url, NO_COLOR="1", BROWSER="none"),
            ready_url=f"{url}/",
            url=url,
            log_dir=logs,
        )
    except BaseException:
        bff.stop()
        raise
    yield server
    server.stop()
    bff.stop()
