"""The repository's `Caddyfile` under the environments the README names, as `caddy adapt` reads
it: as shipped (https://localhost, `tls internal`, one replica on 127.0.0.1:8000), in production
(three variables) and in the deployment tests (`Caddy.environment()`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.caddy import Caddy, adapt

pytestmark = pytest.mark.integration

PRODUCTION = {
    "CADDY_SITE": "app.example.com",
    "CADDY_UPSTREAMS": "10.0.0.3:8000 10.0.0.4:8000",
    "CADDY_TLS": "ops@example.com",
}
PROXY = {
    "handler": "reverse_proxy",
    "flush_interval": -1,
    "load_balancing": {
        "selection_policy": {"policy": "round_robin"},
        "try_duration": 5_000_000_000,  # nanoseconds: lb_try_duration 5s
        "try_interval": 100_000_000,  # lb_try_interval 100ms
    },
    "health_checks": {
        "active": {"uri": "/healthz", "interval": 2_000_000_000, "timeout": 1_000_000_000},
        "passive": {"fail_duration": 10_000_000_000},
    },
}
"""The `reverse_proxy` handler without its upstreams: the same in every environment."""


def site(config: dict[str, Any]) -> dict[str, Any]:
    """What the environment changes: admin endpoint, ports, addresses, certificate issuers."""
    http = config["apps"]["http"]
    (server,) = http["servers"].values()
    (route,) = server["routes"]
    (subroute,) = route["handle"]
    (inner,) = subroute["routes"]
    (proxy,) = inner["handle"]
    assert {key: value for key, value in proxy.items() if key != "upstreams"} == PROXY
    policies = config["apps"].get("tls", {}).get("automation", {}).get("policies", [])
    return {
        "admin": config.get("admin"),
        "http_port": http["http_port"],
        "listen": server["listen"],
        "hosts": route["match"][0]["host"],
        "upstreams": [upstream["dial"] for upstream in proxy["upstreams"]],
        "issuers": {subject: policy["issuers"] for policy in policies for subject in policy["subjects"]},
        "pki": config["apps"]["pki"],
    }


@pytest.fixture
def base(tmp_path: Path) -> dict[str, str]:
    """A bare environment: PATH, and HOME and the XDG directories in a temporary directory."""
    caddy = Caddy(tmp_path, [])
    return {key: value for key, value in caddy.environment().items() if not key.startswith("CADDY_")}


def test_as_shipped_it_serves_localhost_from_the_local_ca_in_front_of_one_replica(
    caddy_executable: str, base: dict[str, str]
) -> None:
    assert site(adapt(caddy_executable, base)) == {
        "admin": {"listen": "localhost:2019"},
        "http_port": 80,
        "listen": [":443"],
        "hosts": ["localhost"],
        "upstreams": ["127.0.0.1:8000"],
        "issuers": {"localhost": [{"module": "internal"}]},
        "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
    }


def test_production_sets_the_site_the_replicas_and_the_acme_email(caddy_executable: str, base: dict[str, str]) -> None:
    email = "ops@example.com"
    assert site(adapt(caddy_executable, {**base, **PRODUCTION})) == {
        "admin": {"listen": "localhost:2019"},
        "http_port": 80,
        "listen": [":443"],
        "hosts": ["app.example.com"],
        "upstreams": ["10.0.0.3:8000", "10.0.0.4:8000"],
        "issuers": {"app.example.com": [{"module": "acme", "email": email}, {"module": "zerossl", "email": email}]},
        "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
    }


@pytest.mark.parametrize("tls", [True, False])
def test_the_deployment_tests_run_it_on_loopback_ports_without_admin_endpoint(
    caddy_executable: str, tmp_path: Path, *, tls: bool
) -> None:
    caddy = Caddy(tmp_path, ["127.0.0.1:8001", "127.0.0.1:8002"], port=18443, http_port=18080, tls=tls)
    assert site(adapt(caddy_executable, caddy.environment())) == {
        "admin": {"disabled": True},
        "http_port": 18080,
        "listen": ["127.0.0.1:18443"],
        "hosts": ["127.0.0.1"],
        "upstreams": ["127.0.0.1:8001", "127.0.0.1:8002"],
        # Over plain http Caddy drops `tls internal` and manages no certificate.
        "issuers": {"127.0.0.1": [{"module": "internal"}]} if tls else {},
        "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
    }
