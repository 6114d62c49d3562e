"""The README's configuration reference and its two commands stay true."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bff.config import OIDCSettings, RouteSettings, SessionSettings, Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SECTIONS = {"session", "oidc", "token_api", "routes"}


@pytest.mark.parametrize("cls", [Settings, SessionSettings, OIDCSettings, RouteSettings])
def test_every_setting_is_in_the_configuration_reference(cls: type) -> None:
    missing = [
        field.name
        for field in dataclasses.fields(cls)
        if field.name not in SECTIONS and f"| `{field.name}` |" not in README
    ]
    assert not missing, f"README's configuration reference lacks {missing}"


def test_readme_names_the_two_commands_and_ci_runs_the_test_command() -> None:
    assert "pip install -e . && bff demo" in README
    assert "./scripts/test" in README
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "./scripts/test" in ci
