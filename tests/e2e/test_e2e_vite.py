"""The frontend developer's set-up: `frontend-demo/` on the Vite dev server, `/bff` and `/api`
proxied by Vite (`server.proxy`, target from `BFF_URL`) to a running `bff demo`.

The browser only ever talks to Vite's origin: login, the transparent refresh and logout must
all work through Vite's proxy and land back on Vite's page.
"""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import expect

from tests.e2e.e2e_flows import (
    ACCESS_TTL,
    TODO_API,
    OpenTab,
    Server,
    add_todo,
    api,
    checkpoint,
    expect_undisturbed_since,
    login,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


async def test_login_refresh_and_logout_through_the_vite_dev_server(open_tab: OpenTab, vite: Server) -> None:
    tab = await open_tab("browser")
    page = tab.page
    await login(tab, vite.url, "frank")  # also asserts the page landed back on Vite's origin
    await add_todo(tab, "served by vite")

    mark = await checkpoint(tab)
    await asyncio.sleep(ACCESS_TTL + 1.2)
    await add_todo(tab, "after the token expired")
    await expect_undisturbed_since(tab, mark)
    await expect(page.locator("#todo-list li")).to_have_count(2)

    await page.locator("#logout").click()
    await expect(page.locator("#login")).to_be_visible()
    assert tab.origin() == vite.url, f"after logout the browser is at {page.url}, not on Vite's {vite.url}"
    status, body = await api(page, "GET", TODO_API)
    assert status == 401, f"GET {TODO_API} through Vite after logout answered {status}: {body}"
