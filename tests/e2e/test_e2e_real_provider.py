"""The SPA in Chromium against a real OpenID provider: panva's oidc-provider (tests/oidc_provider/),
`bff serve --config FILE` serving `frontend-demo/` as its `static_dir`, and an `/api` route
(`token = "user"`) to the demo API, here checking the provider's JWTs against the provider's JWKS.

The person signs in on the provider's own pages (devInteractions: a login form, then consent), the
access token (2 s) runs out, and the next to-do goes through without the page noticing; the
provider counts the refresh. Every token the provider issued is then looked for, whole and in
pieces, everywhere the browser holds or received something.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.e2e.e2e_flows import (
    ACCESS_TTL,
    REPO,
    OpenTab,
    Server,
    Tab,
    add_todo,
    checkpoint,
    expect_signed_in,
    expect_undisturbed_since,
    server_env,
    start_server,
    token_leaks,
    unread_bodies,
    user_pattern,
)
from tests.support.bff_process import BffProcess, bff_config
from tests.support.oidc_provider import Client, OidcProvider, token_fragments
from tests.support.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CLIENT_ID = "bff-e2e"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    op = OidcProvider(tmp_path_factory.mktemp("e2e-provider"), access_ttl=ACCESS_TTL)
    op.start()
    yield op
    op.close()


@pytest.fixture(scope="module")
def provider_api(provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The demo API (to-dos, clock, who am I) trusting the real provider's access tokens only."""
    port = free_port()
    program = (
        "import sys, uvicorn\n"
        "from bff.demo.api import DemoAPI\n"
        "issuer, audience, port = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        "api = DemoAPI(issuer=issuer, audience=audience, jwks_url=issuer + '/jwks')\n"
        "uvicorn.run(api.app(), host='127.0.0.1', port=port, log_level='warning')\n"
    )
    server = start_server(
        "provider-api",
        [sys.executable, "-c", program, provider.issuer, provider.api_audience, str(port)],
        cwd=REPO,
        env=server_env(PYTHONPATH=str(REPO)),
        ready_url=f"http://127.0.0.1:{port}/me",
        url=f"http://127.0.0.1:{port}",
        log_dir=tmp_path_factory.mktemp("logs"),
        any_answer=True,  # 401 without a token: it is up
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client_and_bff(
    provider: OidcProvider, provider_api: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Client, BffProcess]]:
    workdir = tmp_path_factory.mktemp("e2e-bff")
    port = free_port()
    client = provider.register_client(CLIENT_ID, f"http://127.0.0.1:{port}")
    config = bff_config(
        port=port,
        issuer=provider.issuer,
        client_id=client.client_id,
        client_secret=client.client_secret,
        api_url=provider_api.url,
        store=f"sqlite:///{workdir / 'sessions.db'}",
        extra={"static_dir": str(REPO / "frontend-demo")},
    )
    config["routes"] = [{"path": "/api", "upstream": provider_api.url, "token": "user", "strip_prefix": True}]
    bff = BffProcess(workdir, config, port=port, name="bff-e2e")
    bff.start()
    yield client, bff
    bff.stop()


async def login_at_provider(tab: Tab, base_url: str, login: str) -> None:
    """The SPA's log-in button, then oidc-provider's own pages: sign-in form, consent, back to the SPA."""
    page = tab.page
    await page.goto(base_url + "/")
    await expect(page.locator("#login")).to_be_visible()
    await page.locator("#login").click()
    await page.locator("input[name=login]").fill(login)
    await page.locator("input[name=password]").fill("any password: devInteractions checks none")
    await page.locator("button.login-submit").click()
    await expect(page.locator("button.login-submit")).to_have_text("Continue")  # the consent page
    await page.locator("button.login-submit").click()
    await expect_signed_in(tab, base_url, login)


async def test_login_and_transparent_refresh_against_a_real_openid_provider(
    open_tab: OpenTab, provider: OidcProvider, client_and_bff: tuple[Client, BffProcess], artifacts: Path
) -> None:
    client, bff = client_and_bff
    tab = await open_tab("browser")
    page = tab.page
    await login_at_provider(tab, bff.url, "grace")
    await expect(page.locator("#api-me")).to_have_text(user_pattern("grace"))  # the API accepted the JWT
    await add_todo(tab, "signed in at a real provider")
    await page.screenshot(path=artifacts / "logged-in-real-provider.png", full_page=True)

    refreshes = await asyncio.to_thread(provider.refresh_count, client.client_id)
    mark = await checkpoint(tab)
    await asyncio.sleep(ACCESS_TTL + 1.2)
    await add_todo(tab, "after the provider's access token expired")
    await expect_undisturbed_since(tab, mark)
    await expect(page.locator("#todo-list li")).to_have_count(2)
    assert await asyncio.to_thread(provider.refresh_count, client.client_id) > refreshes, "no refresh happened"
    assert await asyncio.to_thread(provider.refresh_errors, client.client_id) == {}

    issued = await asyncio.to_thread(provider.issued_tokens, client.client_id)
    assert len(issued) >= 4, f"the provider reports too few tokens to compare against: {len(issued)}"
    assert await token_leaks(tab, token_fragments(issued)) == []
    assert unread_bodies(tab) == []
