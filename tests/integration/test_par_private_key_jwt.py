"""PAR (RFC 9126) and private_key_jwt (RFC 7523) against the real provider.

A provider of its own that requires pushed authorization requests (`par="required"`), clients
registered with `token_endpoint_auth_method=private_key_jwt` and their public keys (`jwks`, or
`jwks_uri` pointing at the BFF's own `/bff/jwks`), and `bff serve` processes signing with ES256,
PS256 (JWK files) and RS256 (a PEM file). Each flow: login (pushed, counted as `par.success`),
an API call, a refresh after the access token expired (the assertion at the token endpoint),
logout (the assertion at the revocation endpoint; an introspecting client then sees the refresh
token dead). Plus what a misconfiguration answers, key rotation, and `auto` against the default
provider (which lists PAR, so every BFF of the other modules pushes too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bff.client_keys import ClientAssertionAlg, generate_private_jwk, load_client_keys, public_jwks
from tests.integration.oidc_harness import Bff, Run, started_run, user_name
from tests.integration.oidc_helpers import leaks, logged_in, wait_for_expiry
from tests.support.bff_process import BffProcess, bff_config
from tests.support.oidc_provider import Client, OidcProvider, token_fragments
from tests.support.processes import free_port


@pytest.fixture(scope="module")
def par_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """A provider that requires PAR, its JWT API, and the BFFs of this module."""
    with started_run(tmp_path_factory.mktemp("par"), par="required") as run:
        yield run


@pytest.fixture(scope="module")
def introspector(par_run: Run) -> Client:
    """A client with a secret that may introspect the tokens of the others."""
    return par_run.provider.register_client("introspector", "http://127.0.0.1:1")


def key_file(directory: Path, alg: ClientAssertionAlg, *, pem: bool = False) -> str:
    """A new private key: a JWK file, or (`pem`) an RSA PEM file."""
    directory.mkdir(parents=True, exist_ok=True)
    if pem:
        key = rsa.generate_private_key(65537, 2048)
        path = directory / f"{alg}-{time.monotonic_ns()}.pem"
        encoding, private_format = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
        path.write_bytes(key.private_bytes(encoding, private_format, serialization.NoEncryption()))
    else:
        path = directory / f"{alg}-{time.monotonic_ns()}.jwk"
        path.write_text(json.dumps(generate_private_jwk(alg)))
    path.chmod(0o600)
    return str(path)


def start_bff(
    run: Run,
    name: str,
    *,
    keys: Sequence[str] = (),
    registered_keys: Sequence[str] | None = None,
    registration: Mapping[str, Any] | None = None,
    oidc: Mapping[str, Any] | None = None,
    token_storage: str = "server",
    jwks_uri: bool = False,
) -> Bff:
    """A BFF whose client is registered for private_key_jwt with the public halves of
    `registered_keys` (default: `keys`), or (`jwks_uri`) with the BFF's own `/bff/jwks`;
    `registration` adds to or replaces that."""
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    workdir = run.root / f"{name}-{port}"
    metadata: dict[str, Any] = {"token_endpoint_auth_method": "private_key_jwt"}
    if jwks_uri:
        metadata["jwks_uri"] = f"{public_url}/bff/jwks"
    elif keys or registered_keys:
        metadata["jwks"] = public_jwks(load_client_keys(keys if registered_keys is None else registered_keys))
    metadata.update(registration or {})
    client = run.provider.register_client(f"{name}-{port}", public_url, metadata=metadata)
    oidc_settings: dict[str, Any] = {"client_keys": list(keys), **(oidc or {})}
    auth_method = str(oidc_settings.pop("token_endpoint_auth_method", "private_key_jwt"))
    secret = client.client_secret if auth_method != "private_key_jwt" else ""
    config = bff_config(
        port=port,
        issuer=run.provider.issuer,
        client_id=client.client_id,
        client_secret=secret,
        auth_method=auth_method,
        api_url=run.api.url,
        store=f"sqlite:///{workdir / 'sessions.db'}",
        oidc_extra=oidc_settings,
        extra={"token_storage": token_storage},
    )
    bff = Bff(BffProcess(workdir=workdir, config=config, port=port), client)
    run.bffs.append(bff)
    bff.process.start()
    return bff


def count(provider: OidcProvider, name: str, client_id: str) -> int:
    return provider.counters().get(name, {}).get(client_id, 0)


def refresh_and_logout(run: Run, bff: Bff, introspector: Client, user: str) -> None:
    """Logged in with a pushed request: the API call, a refresh after expiry, then logout revokes."""
    provider, client_id = run.provider, bff.client.client_id
    assert count(provider, "par.success", client_id) == 1, provider.counters()
    browser = logged_in(run, bff, user)
    assert count(provider, "par.success", client_id) == 2, provider.counters()
    first = browser.api("GET", f"{bff.url}/api/first")
    assert first.status_code == 200, first.text
    wait_for_expiry(first)
    refreshes = provider.refresh_count(client_id)
    second = browser.api("GET", f"{bff.url}/api/second")
    assert second.status_code == 200, second.text
    assert provider.refresh_count(client_id) == refreshes + 1, provider.counters()
    (refresh_token,) = provider.current_refresh_tokens(user, client_id)
    assert provider.introspect(refresh_token, introspector)["active"] is True
    assert browser.api("POST", f"{bff.url}/bff/logout").status_code == 200
    assert provider.introspect(refresh_token, introspector)["active"] is False
    assert browser.api("GET", f"{bff.url}/api/after").status_code == 401


@pytest.fixture
def pushed_once(par_run: Run) -> Callable[[Bff, str], None]:
    """Log in once (the first `par.success`) and log out, so `refresh_and_logout` starts from 1."""

    def login_once(bff: Bff, user: str) -> None:
        browser = logged_in(par_run, bff, user + "-first")
        assert browser.api("POST", f"{bff.url}/bff/logout").status_code == 200

    return login_once


@pytest.mark.parametrize("token_storage", ["server", "cookie"])
def test_es256_private_key_jwt_with_required_par(
    par_run: Run,
    introspector: Client,
    pushed_once: Callable[[Bff, str], None],
    request: pytest.FixtureRequest,
    token_storage: str,
) -> None:
    key = key_file(par_run.root / "keys", "ES256")
    bff = start_bff(par_run, f"es256-{token_storage}", keys=[key], token_storage=token_storage)
    user = user_name(request)
    pushed_once(bff, user)
    refresh_and_logout(par_run, bff, introspector, user)


@pytest.mark.parametrize(("alg", "pem"), [("PS256", False), ("RS256", True)])
def test_ps256_jwk_and_rs256_pem_keys(
    par_run: Run,
    introspector: Client,
    pushed_once: Callable[[Bff, str], None],
    request: pytest.FixtureRequest,
    alg: ClientAssertionAlg,
    *,
    pem: bool,
) -> None:
    key = key_file(par_run.root / "keys", alg, pem=pem)
    bff = start_bff(par_run, alg.lower(), keys=[key], registration={"token_endpoint_auth_signing_alg": alg})
    user = user_name(request)
    pushed_once(bff, user)
    refresh_and_logout(par_run, bff, introspector, user)


def test_the_provider_fetches_the_keys_from_the_bffs_own_jwks(
    par_run: Run, introspector: Client, pushed_once: Callable[[Bff, str], None], request: pytest.FixtureRequest
) -> None:
    bff = start_bff(par_run, "jwks-uri", keys=[key_file(par_run.root / "keys", "ES256")], jwks_uri=True)
    user = user_name(request)
    pushed_once(bff, user)
    refresh_and_logout(par_run, bff, introspector, user)


def test_a_client_secret_for_a_private_key_jwt_client_is_a_502_at_login(par_run: Run) -> None:
    bff = start_bff(
        par_run,
        "secret-for-pkjwt",
        keys=[key_file(par_run.root / "keys", "ES256")],
        oidc={"token_endpoint_auth_method": "client_secret_basic", "client_keys": []},
    )
    response = par_run.new_browser(bff).start_login(bff.url)
    assert (response.status_code, response.json()) == (
        502,
        {"error": "idp_error", "detail": "pushed authorization request endpoint answered 401 'invalid_client'"},
    )
    assert count(par_run.provider, "par_error:invalid_client", bff.client.client_id) == 1, par_run.provider.counters()


def test_off_against_a_provider_that_requires_par_is_a_502_at_login(par_run: Run) -> None:
    keys = [key_file(par_run.root / "keys", "ES256")]
    bff = start_bff(par_run, "par-off", keys=keys, oidc={"pushed_authorization": "off"})
    response = par_run.new_browser(bff).start_login(bff.url)
    assert (response.status_code, response.json()) == (
        502,
        {
            "error": "idp_error",
            "detail": 'the provider requires pushed authorization requests ("require_pushed_authorization_requests")'
            ' but oidc.pushed_authorization is "off"',
        },
    )
    assert bff.client.client_id not in json.dumps(par_run.provider.counters())


def test_off_against_a_client_that_must_push_is_the_providers_error_at_the_callback(run: Run) -> None:
    secret_client = {"token_endpoint_auth_method": "client_secret_basic"}
    bff = start_bff(
        run,
        "par-off-client",
        registration={**secret_client, "require_pushed_authorization_requests": True},
        oidc={**secret_client, "pushed_authorization": "off"},
    )
    browser = run.new_browser(bff)
    back = browser.follow(browser.start_login(bff.url), stop_at=f"{bff.url}/bff/callback")
    callback = browser.get(urljoin(str(back.url), back.headers["location"]))
    assert (callback.status_code, callback.json()) == (
        400,
        {
            "error": "login_failed",
            "detail": "the provider answered error 'invalid_request': Pushed Authorization Request must be used",
        },
    )


def test_key_rotation_the_first_key_signs(par_run: Run, introspector: Client, request: pytest.FixtureRequest) -> None:
    old, new = key_file(par_run.root / "keys", "ES256"), key_file(par_run.root / "keys", "PS256")
    bff = start_bff(par_run, "rotation", keys=[old, new])
    user = user_name(request)
    browser = logged_in(par_run, bff, user)
    first = browser.api("GET", f"{bff.url}/api/before-rotation")
    assert first.status_code == 200, first.text
    # The new key signs; the provider forgets the old one. A refresh of the live session and a
    # new login then work only if the new key is the one that signs.
    bff.process.stop()
    bff.process.config["oidc"]["client_keys"] = [new, old]
    par_run.provider.register_client(
        bff.client.client_id,
        bff.public_url,
        metadata={"token_endpoint_auth_method": "private_key_jwt", "jwks": public_jwks(load_client_keys([new]))},
    )
    bff.process.start()
    wait_for_expiry(first)
    refreshes = par_run.provider.refresh_count(bff.client.client_id)
    after = browser.api("GET", f"{bff.url}/api/after-rotation")
    assert after.status_code == 200, after.text
    assert par_run.provider.refresh_count(bff.client.client_id) == refreshes + 1
    refresh_and_logout(par_run, bff, introspector, user + "-again")


def test_auto_pushes_against_the_default_provider(
    run: Run, new_bff: Callable[..., Bff], provider: OidcProvider, request: pytest.FixtureRequest
) -> None:
    assert "pushed_authorization_request_endpoint" in provider.discovery()
    bff = new_bff("par-auto")
    browser = logged_in(run, bff, user_name(request))
    assert browser.api("GET", f"{bff.url}/api/auto").status_code == 200
    assert count(provider, "par.success", bff.client.client_id) == 1, provider.counters()


def test_logs_of_this_module_hold_no_key_secret_or_token(par_run: Run) -> None:
    private_parts = set()
    for path in (par_run.root / "keys").iterdir():
        text = path.read_text()
        private_parts |= {json.loads(text)["d"]} if path.suffix == ".jwk" else set(text.splitlines()[1:-1])
    secrets_ = {bff.client.client_secret for bff in par_run.bffs}
    needles = token_fragments(par_run.provider.issued_tokens() | private_parts | secrets_)
    logs = [(str(bff.process.log_file), bff.process.log_file.read_bytes()) for bff in par_run.bffs]
    assert len(logs) >= 8
    found = leaks(logs, needles)
    assert not found, "\n".join(found)
