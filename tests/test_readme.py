"""The README's configuration reference and its two commands stay true."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from bff.client_keys import generate_private_jwk
from bff.config import RouteSettings, SessionSettings, Settings, TokenAPISettings, load_settings
from bff.oidc_settings import OIDCSettings
from tests.support.caddy import CADDYFILE
from tests.support.readme_configs import README_API_ORIGIN, readme_block

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SECTIONS = {"session", "oidc", "token_api", "routes"}


@pytest.mark.parametrize("cls", [Settings, SessionSettings, OIDCSettings, TokenAPISettings, RouteSettings])
def test_every_setting_is_in_the_configuration_reference(cls: type) -> None:
    missing = [
        field.name
        for field in dataclasses.fields(cls)
        if field.name not in SECTIONS and f"| `{field.name}` |" not in README
    ]
    assert not missing, f"README's configuration reference lacks {missing}"


@pytest.mark.parametrize("name", ["simplejwt", "flask_jwt"])
def test_the_token_api_examples_are_complete_configurations(name: str, tmp_path: Path) -> None:
    """The integration tests run these against the real APIs; here they load exactly as printed."""
    path = tmp_path / "bff.toml"
    path.write_text(readme_block(name), encoding="utf-8")
    settings = load_settings({}, path)
    assert settings.oidc is None
    assert settings.token_api is not None
    assert settings.token_api.login_url.startswith(README_API_ORIGIN + "/")
    assert [(route.path, route.upstream, route.token) for route in settings.routes] == [
        ("/api", README_API_ORIGIN, "user")
    ]


def test_the_fapi2_example_is_a_complete_configuration(tmp_path: Path) -> None:
    key = tmp_path / "client-key.jwk"
    key.write_text(json.dumps(generate_private_jwk("ES256")))
    path = tmp_path / "bff.toml"
    path.write_text(readme_block("fapi2").replace("/etc/bff/client-key.jwk", str(key)), encoding="utf-8")
    oidc = load_settings({}, path).oidc
    assert oidc is not None
    assert (oidc.profile, oidc.pushed_authorization, oidc.dpop, oidc.leeway) == ("fapi2", "required", True, 10)
    assert oidc.token_endpoint_auth_method == "private_key_jwt"


TEST_COMMAND = "./scripts/install && ./scripts/check && ./scripts/test"


def test_readme_names_the_two_commands_and_ci_runs_the_test_command() -> None:
    assert "\n```sh\npip install -e . && bff demo\n```\n" in README
    assert f"\n```sh\n{TEST_COMMAND}\n```\n" in README
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == TEST_COMMAND


def test_the_readme_shows_the_repository_caddyfile_and_every_variable_it_reads() -> None:
    text = CADDYFILE.read_text(encoding="utf-8")
    below_the_header = text[text.index("\n{\n") + 1 :]
    assert readme_block("caddyfile", language="caddyfile") == below_the_header
    variables = sorted(set(re.findall(r"\{\$(\w+):", text)))
    assert variables == ["CADDY_ADMIN", "CADDY_BIND", "CADDY_HTTP_PORT", "CADDY_SITE", "CADDY_TLS", "CADDY_UPSTREAMS"]
    assert [name for name in variables if f"| `{name}` |" not in README] == []
