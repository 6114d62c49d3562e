"""Fixtures of the integration tests (see `oidc_harness`): one real OpenID provider, one JWT API and
the default BFF for the whole session; more BFFs and browsers through `run`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.oidc_harness import Bff, Run, started_run
from tests.support.jwt_api import JwtApi
from tests.support.oidc_provider import OidcProvider


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with started_run(tmp_path_factory.mktemp("integration")) as session:
        yield session


@pytest.fixture(scope="session")
def provider(run: Run) -> OidcProvider:
    return run.provider


@pytest.fixture(scope="session")
def api(run: Run) -> JwtApi:
    return run.api


@pytest.fixture(scope="session")
def bff(run: Run) -> Bff:
    """The default BFF: http public_url, SQLite store, one worker, refresh skew 1 s."""
    return run.new_bff("main")


@pytest.fixture
def new_bff(run: Run) -> Iterator[Callable[..., Bff]]:
    """`run.new_bff` for one test: the processes it started stop after the test (their logs stay
    for the log check)."""
    started: list[Bff] = []

    def make(name: str, **kwargs: Any) -> Bff:
        bff = run.new_bff(name, **kwargs)
        started.append(bff)
        return bff

    yield make
    for bff in started:
        bff.process.stop()


LAST = "test_logs_of_the_whole_run_contain_no_token_and_no_cookie_value"


def pytest_collection_modifyitems(items: list[Any]) -> None:
    # The log check reads what every other test left behind: keep it last (a stable sort).
    items.sort(key=lambda item: item.name == LAST)
