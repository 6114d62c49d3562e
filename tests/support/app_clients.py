"""The in-process BFF of the unit tests: a Starlette `TestClient` on `create_app`, at
`https://testserver`, redirects not followed, with the provider (or token API) a fake that
answers through `httpx.MockTransport`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine

import httpx
from starlette.testclient import TestClient

from bff import create_app
from bff.app import BffApp
from bff.config import Settings
from bff.stores import Store


def app_client(
    settings: Settings,
    *,
    clock: Callable[[], float],
    idp: Callable[[httpx.Request], Coroutine[None, None, httpx.Response]],
    store: Store | None = None,
) -> TestClient:
    """A client of `create_app(settings)` whose calls to the provider `idp` answers."""
    app = create_app(settings, clock=clock, idp_transport=httpx.MockTransport(idp), store=store)
    return TestClient(app, base_url="https://testserver", follow_redirects=False)


def app_of(client: TestClient) -> BffApp:
    """The BFF behind `client`."""
    assert isinstance(client.app, BffApp)
    return client.app
