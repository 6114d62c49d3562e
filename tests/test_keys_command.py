"""`bff keys generate` and `GET /bff/jwks`: the new key file (0600, never overwritten), the
public JWKS printed and served, and no private member anywhere it is published."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bff.cli import main
from bff.client_keys import load_client_keys
from tests.fakes import Clock, FakeIdP, settings_for
from tests.support.app_clients import app_client

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def generate(out: Path, alg: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(["keys", "generate", "--alg", alg, "--out", str(out)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("alg", ["ES256", "PS256", "RS256"])
def test_generate_writes_a_private_jwk_and_prints_its_public_jwks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], alg: str
) -> None:
    out = tmp_path / "key.jwk"
    status, printed, _ = generate(out, alg, capsys)
    assert status == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    (key,) = load_client_keys([str(out)])
    assert json.loads(printed) == {"keys": [dict(key.public_jwk)]}
    assert key.alg == alg
    assert not PRIVATE_MEMBERS & set(json.loads(printed)["keys"][0])


def test_generate_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "key.jwk"
    out.write_text("the old key")
    status, printed, err = generate(out, "ES256", capsys)
    assert (status, printed, err) == (1, "", f"bff: keys: {str(out)!r} exists; not overwritten\n")
    assert out.read_text() == "the old key"


def jwks_client(idp: FakeIdP, clock: Clock, **environ: str) -> TestClient:
    return app_client(settings_for(**environ), clock=clock, idp=idp)


def test_jwks_serves_every_client_key_public_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], idp: FakeIdP, clock: Clock
) -> None:
    paths = [tmp_path / "new.jwk", tmp_path / "old.jwk"]
    for path, alg in zip(paths, ["ES256", "RS256"], strict=True):
        generate(path, alg, capsys)
    environ = {"OIDC__TOKEN_ENDPOINT_AUTH_METHOD": "private_key_jwt", "OIDC__CLIENT_KEYS": ",".join(map(str, paths))}
    with jwks_client(idp, clock, **environ) as client:
        response = client.get("/bff/jwks")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "max-age=300"
    assert response.json() == {"keys": [dict(key.public_jwk) for key in load_client_keys(list(map(str, paths)))]}
    assert not PRIVATE_MEMBERS & {member for jwk in response.json()["keys"] for member in jwk}


def test_jwks_is_404_without_private_key_jwt(idp: FakeIdP, clock: Clock) -> None:
    with jwks_client(idp, clock) as client:
        response = client.get("/bff/jwks")
    assert (response.status_code, response.json()) == (
        404,
        {
            "error": "not_available",
            "detail": "no client keys: oidc.token_endpoint_auth_method is not 'private_key_jwt'",
        },
    )
