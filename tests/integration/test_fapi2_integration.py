"""`oidc.profile = "fapi2"` (README "FAPI 2.0 profile") against the real provider in its own FAPI 2.0
profile, in server and cookie mode.

The provider runs with `OP_FAPI=2.0`, PAR required and DPoP nonces required at its token
endpoint; each BFF's client is registered for `private_key_jwt` (ES256) with PS256 ID tokens, and
its `/api` route goes to the DPoP API of `tests.support.dpop_api`, which checks every proof and
demands its nonce. The BFF's configuration says only `profile = "fapi2"` and its key: PAR, DPoP
and the 10 s leeway come from the profile.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import jwt
import pytest

from bff.client_keys import generate_private_jwk, load_client_keys, public_jwks
from tests.integration.oidc_harness import Bff, Run, started_run, user_name
from tests.integration.oidc_helpers import concurrent_api_requests, logged_in, session_cookie
from tests.support import jwt_api
from tests.support.dpop_api import DPoPApi, running_dpop_api
from tests.support.oidc_provider import Client

pytestmark = pytest.mark.integration

MODES = ["server", "cookie"]


@pytest.fixture(scope="module")
def fapi_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with started_run(tmp_path_factory.mktemp("fapi2"), par="required", dpop="nonce", fapi="2.0") as run:
        yield run


@pytest.fixture(scope="module")
def dpop_api(fapi_run: Run) -> Iterator[DPoPApi]:
    with running_dpop_api(fapi_run.provider.issuer, fapi_run.provider.api_audience) as api:
        yield api


@pytest.fixture(scope="module")
def introspector(fapi_run: Run) -> Client:
    return fapi_run.provider.register_client("fapi-introspector", "http://127.0.0.1:1")


def fapi_bff(run: Run, api: DPoPApi, name: str, mode: str, *, id_token_alg: str = "PS256") -> Bff:
    """A BFF with `profile = "fapi2"`, its own ES256 client key, registered for private_key_jwt."""
    key_path = Path(run.root) / f"{name}-{mode}-key.jwk"
    key_path.write_text(json.dumps(generate_private_jwk("ES256")))
    key_path.chmod(0o600)
    registration: dict[str, Any] = {
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "ES256",
        "jwks": public_jwks(load_client_keys([str(key_path)])),
        "id_token_signed_response_alg": id_token_alg,
    }
    return run.new_bff(
        f"{name}-{mode}",
        auth_method="private_key_jwt",
        token_storage=mode,
        api_url=api.url,
        registration=registration,
        oidc_extra={"profile": "fapi2", "client_keys": [str(key_path)]},
    )


def issued_of(run: Run, bff: Bff) -> list[dict[str, Any]]:
    return run.provider.issued(bff.client.client_id)


def jkt_of(access_token: str) -> str:
    return str(jwt.decode(access_token, options={"verify_signature": False})["cnf"]["jkt"])


def count(run: Run, bff: Bff, name: str) -> int:
    return run.provider.counters().get(name, {}).get(bff.client.client_id, 0)


@pytest.mark.parametrize("mode", MODES)
def test_a_fapi2_session_pushes_binds_refreshes_once_and_logs_out(
    fapi_run: Run, dpop_api: DPoPApi, introspector: Client, mode: str, request: pytest.FixtureRequest
) -> None:
    bff = fapi_bff(fapi_run, dpop_api, "fapi2", mode)
    user = user_name(request)
    try:
        browser = logged_in(fapi_run, bff, user)
        assert count(fapi_run, bff, "par.success") == 1, fapi_run.provider.counters()
        [login] = issued_of(fapi_run, bff)
        assert (login["grantType"], login["token_type"]) == ("authorization_code", "DPoP")
        jkt = jkt_of(login["access_token"])
        assert jwt.get_unverified_header(login["id_token"])["alg"] == "PS256"

        first = browser.api("GET", f"{bff.url}/api/fapi-first-{mode}")
        assert first.status_code == 200, first.text
        assert first.json()["jkt"] == jkt

        # Proactive refresh: the token expired, the next request is answered with a new one.
        jwt_api.wait_for_expiry(float(first.json()["exp"]), margin=0.5)
        refreshes = fapi_run.provider.refresh_count(bff.client.client_id)
        second = browser.api("GET", f"{bff.url}/api/fapi-second-{mode}")
        assert second.status_code == 200, second.text
        assert fapi_run.provider.refresh_count(bff.client.client_id) == refreshes + 1
        refreshed = issued_of(fapi_run, bff)[-1]
        assert (refreshed["grantType"], refreshed["token_type"], jkt_of(refreshed["access_token"])) == (
            "refresh_token",
            "DPoP",
            jkt,
        )

        # Fifty requests on the next expired token: one refresh, every request answered.
        jwt_api.wait_for_expiry(float(second.json()["exp"]), margin=0.5)
        responses = concurrent_api_requests(bff, session_cookie(browser, bff), 50)
        statuses = [response.status_code for response in responses]
        assert statuses == [200] * 50, {status: statuses.count(status) for status in set(statuses)}
        assert fapi_run.provider.refresh_count(bff.client.client_id) == refreshes + 2

        (refresh_token,) = fapi_run.provider.current_refresh_tokens(user, bff.client.client_id)
        assert fapi_run.provider.introspect(refresh_token, introspector)["active"] is True
        assert browser.api("POST", f"{bff.url}/bff/logout").status_code == 200
        assert fapi_run.provider.introspect(refresh_token, introspector)["active"] is False
        assert browser.api("GET", f"{bff.url}/api/fapi-after-{mode}").status_code == 401
    finally:
        bff.process.stop()


def test_an_rs256_id_token_is_refused_under_fapi2(
    fapi_run: Run, dpop_api: DPoPApi, request: pytest.FixtureRequest
) -> None:
    bff = fapi_bff(fapi_run, dpop_api, "fapi2-rs256", "server", id_token_alg="RS256")
    try:
        browser = fapi_run.new_browser(bff)
        response = browser.provider_sign_in(
            browser.start_login(bff.url), user_name(request), stop_at=f"{bff.url}/bff/callback"
        )
        callback = browser.get(urljoin(str(response.url), response.headers["location"]))
        assert callback.status_code == 400
        discovery = httpx.get(f"{fapi_run.provider.issuer}/.well-known/openid-configuration").json()
        allowed = [alg for alg in discovery["id_token_signing_alg_values_supported"] if alg in {"PS256", "ES256"}]
        assert callback.json() == {
            "error": "login_failed",
            "detail": f"ID token algorithm 'RS256' is not one of {allowed}",
        }
    finally:
        bff.process.stop()
