"""The integration harness: a `Run` holds the real OpenID provider, the JWT API, every `bff serve`
process and every browser of the session.

Each BFF gets its own client registration at the provider (`<name>-<port>`), so the provider's
refresh counters are per BFF. Everything is remembered, so that the last test can search the logs
of the whole run for tokens and cookie values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.bff_process import BffProcess, bff_config
from tests.support.jwt_api import JwtApi
from tests.support.oidc_browser import Browser
from tests.support.oidc_provider import Client, OidcProvider
from tests.support.processes import free_port

ACCESS_TTL = 4  # seconds; tests wait it out


@dataclass
class Bff:
    process: BffProcess
    client: Client

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def public_url(self) -> str:
        return str(self.process.config["public_url"])

    @property
    def cookie_name(self) -> str:
        return ("__Host-" if self.public_url.startswith("https://") else "") + "bff"


@dataclass
class Run:
    """Everything the session started, for teardown and for the log and leak checks."""

    root: Path
    provider: OidcProvider
    api: JwtApi
    bffs: list[Bff] = field(default_factory=list)
    browsers: list[Browser] = field(default_factory=list)

    def new_bff(
        self,
        name: str,
        *,
        https: bool = False,
        workers: int = 1,
        refresh_skew: str = "1s",
        store: str = "sqlite",
        secret_keys: list[str] | None = None,
        auth_method: str = "client_secret_basic",
        issuer: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        token_storage: str = "server",
        log_format: str = "text",
        start: bool = True,
        api_url: str | None = None,
        oidc_extra: Mapping[str, Any] | None = None,
        registration: Mapping[str, Any] | None = None,
    ) -> Bff:
        """`api_url`: where the `/api` route goes (default: the run's JWT API); `oidc_extra`: more
        `[oidc]` keys; `registration`: more client metadata (`jwks` for `private_key_jwt`, whose
        BFF then has no secret)."""
        port = free_port()
        workdir = self.root / f"{name}-{port}"
        workdir.mkdir(parents=True)
        public_url = f"https://127.0.0.1:{port}" if https else f"http://127.0.0.1:{port}"
        if issuer is None:
            client = self.provider.register_client(
                f"{name}-{port}", public_url, auth_method=auth_method, metadata=registration
            )
        else:
            assert client_id is not None
            assert client_secret is not None
            client = Client(client_id, client_secret, auth_method, public_url)
        store_url = f"sqlite:///{workdir / 'sessions.db'}" if store == "sqlite" else store
        config = bff_config(
            port=port,
            public_url=public_url,
            issuer=issuer or self.provider.issuer,
            client_id=client.client_id,
            client_secret=client.client_secret if auth_method != "private_key_jwt" else "",
            auth_method=auth_method,
            api_url=api_url or self.api.url,
            store=store_url,
            secret_keys=secret_keys,
            refresh_skew=refresh_skew,
            oidc_extra=oidc_extra,
            extra={"token_storage": token_storage, "log_format": log_format},
        )
        process = BffProcess(workdir=workdir, config=config, port=port, workers=workers, name="bff")
        bff = Bff(process, client)
        self.bffs.append(bff)
        if start:
            process.start()
        return bff

    def new_browser(self, bff: Bff | None = None, *, user_agent: str = "integration-browser") -> Browser:
        alias = {}
        if bff is not None and bff.public_url.startswith("https://"):
            alias = {bff.public_url: bff.url}
        browser = Browser(https_alias=alias, user_agent=user_agent)
        self.browsers.append(browser)
        return browser

    def close(self) -> None:
        for bff in self.bffs:
            bff.process.stop()
        for browser in self.browsers:
            browser.close()


@contextlib.contextmanager
def started_run(root: Path, **provider_options: Any) -> Iterator[Run]:
    """A provider (`OidcProvider` options such as `par="required"`), its JWT API and a `Run` on
    them; everything started is stopped afterwards."""
    provider = OidcProvider(root / "provider", access_ttl=ACCESS_TTL, **provider_options)
    provider.start()
    api = JwtApi(provider.issuer, provider.api_audience)
    api.start()
    run = Run(root=root, provider=provider, api=api)
    try:
        yield run
    finally:
        run.close()
        api.stop()
        provider.close()


def user_name(request: pytest.FixtureRequest, suffix: str = "") -> str:
    """A login name of its own for each test, so that grants and sessions do not mix."""
    return f"{request.node.name.removeprefix('test_')[:40]}{suffix}"
