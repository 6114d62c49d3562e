"""Fixtures of the deployment tests: the real OpenID provider, the JWT-validating API and the echo
upstream (SSE, WebSocket) for the whole session. A missing `caddy` skips every deployment test
loudly (and fails them under CI=true), before anything is started."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deployment.harness import Cluster, running_cluster
from tests.support.caddy import caddy_or_skip
from tests.support.jwt_api import JwtApi
from tests.support.oidc_provider import OidcProvider
from tests.support.upstreams import ServerThread, UpstreamApp

ACCESS_TTL = 4  # seconds the provider's access tokens live; tests wait them out


@pytest.fixture(scope="session")
def caddy_executable() -> str:
    return caddy_or_skip()


@pytest.fixture(scope="session")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    caddy_or_skip()  # a missing caddy skips (or fails, under CI) before the provider starts
    provider = OidcProvider(tmp_path_factory.mktemp("deployment-provider"), access_ttl=ACCESS_TTL)
    provider.start()
    try:
        yield provider
    finally:
        provider.close()


@pytest.fixture(scope="session")
def api(provider: OidcProvider) -> Iterator[JwtApi]:
    api = JwtApi(provider.issuer, provider.api_audience)
    api.start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="session")
def echo() -> Iterator[tuple[ServerThread, UpstreamApp]]:
    """The echo upstream of the proxy tests (`.../sse` streams events, WebSocket echoes)."""
    app = UpstreamApp()
    with ServerThread(app) as server:
        yield server, app


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    provider: OidcProvider,
    api: JwtApi,
    echo: tuple[ServerThread, UpstreamApp],
) -> Iterator[Cluster]:
    """Redis, two replicas and Caddy in front (`running_cluster`) for the test module, named after it."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with running_cluster(
        tmp_path_factory.mktemp(name), name, provider=provider, api=api, echo_url=echo[0].url
    ) as cluster:
        yield cluster
