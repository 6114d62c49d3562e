"""`bff check --config FILE` validates the file and reaches the real provider's discovery."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.oidc_harness import Bff
from tests.support.bff_process import to_toml
from tests.support.processes import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def bff_check(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bff.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "bff", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_check_reaches_the_real_provider(new_bff: Callable[..., Bff], tmp_path: Path) -> None:
    bff = new_bff("check", start=False)
    result = bff_check(bff.process.config, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bff: config: ok" in result.stdout
    assert f"bff: provider: ok ({bff.process.config['oidc']['issuer']})" in result.stdout
    assert bff.client.client_secret not in result.stdout + result.stderr


def test_check_with_a_provider_that_is_down_says_so_in_one_line(new_bff: Callable[..., Bff], tmp_path: Path) -> None:
    bff = new_bff("check-down", start=False)
    config = dict(bff.process.config)
    config["oidc"] = dict(config["oidc"], issuer=f"http://127.0.0.1:{free_port()}")
    result = bff_check(config, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bff: provider: "), result.stderr
