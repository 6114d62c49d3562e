"""The real OpenID provider of the integration tests: panva's `oidc-provider` 8.x under node.

`OidcProvider` starts `node tests/oidc_provider/provider.mjs` on a loopback port, waits for its
discovery document, and talks to the script's test-only routes (`/test/...`): counters of grants,
every token it issued, the grants of an account with their refresh tokens, revoking a grant,
registering a client. It keeps its keys and all grants, tokens and sessions in a state file, so
`stop()` then `start()` (or `restart()`) brings the same provider back on the same port.

Node missing or `npm ci` not run: `node_or_skip()` skips with the reason (`provider_missing()`,
which the benchmark reports instead), and under `CI=true` fails instead, because CI must run
these tests.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import AnsweringServer, free_port
from tests.support.tools import find_tool, missing_tool

PROVIDER_DIR = Path(__file__).resolve().parent.parent / "oidc_provider"
PROVIDER_SCRIPT = PROVIDER_DIR / "provider.mjs"
DEFAULT_ACCESS_TTL = 4


def provider_missing() -> str | None:
    """What this machine lacks to run the provider (`node`, or its packages), or None."""
    if shutil.which("node") is None:
        return f"`node` is not installed (apt-get install nodejs, then run `npm ci` in {PROVIDER_DIR})"
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return f"the provider's packages are not installed: run `npm ci` in {PROVIDER_DIR}"
    return None


def node_or_skip() -> str:
    """Path of `node`, after checking that the provider's packages are installed."""
    missing = provider_missing()
    if missing is not None:
        missing_tool(f"INTEGRATION TESTS NOT RUN: {missing}")
    return find_tool(["node"], "INTEGRATION TESTS NOT RUN: `node` is not installed (apt-get install nodejs)")


@dataclass(frozen=True)
class Client:
    """A client registered at the provider (the BFF's registration). The secret is a test fixture."""

    client_id: str
    client_secret: str
    auth_method: str
    base_url: str
    """The BFF's public URL this client was registered for."""


class OidcProvider(AnsweringServer):
    """One `provider.mjs` process on `port`, its state kept in `state_dir`."""

    stop_timeout = 5.0

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        access_ttl: int = DEFAULT_ACCESS_TTL,
        api_audience: str = "http://127.0.0.1/api",
        log_file: Path | None = None,
        par: str = "",
        dpop: str = "off",
        fapi: str = "",
    ) -> None:
        """`par`, `dpop`, `fapi`: the script's OP_PAR, OP_DPOP and OP_FAPI (see provider.mjs)."""
        self.node = node_or_skip()
        self.port = port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.access_ttl = access_ttl
        self.api_audience = api_audience
        self.features = {"OP_PAR": par, "OP_DPOP": dpop, "OP_FAPI": fapi}
        self.state_dir = state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file = state_dir / "provider-state.json"
        self.log_file = log_file or state_dir / "provider.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(base_url=self.issuer, timeout=10)

    # ------------------------------------------------------------------ process

    def start(self, timeout: float = 20) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        env = {
            **os.environ,
            "OP_PORT": str(self.port),
            "OP_STATE_FILE": str(self.state_file),
            "OP_ACCESS_TTL": str(self.access_ttl),
            "OP_API_AUDIENCE": self.api_audience,
            **self.features,
        }
        self.launch(
            [self.node, str(PROVIDER_SCRIPT)],
            cwd=PROVIDER_DIR,
            env=env,
            name="oidc provider",
            ready_path="/.well-known/openid-configuration",
            timeout=timeout,
            new_session=False,
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    # ------------------------------------------------------------------ clients

    def register_client(
        self,
        client_id: str,
        base_url: str,
        *,
        auth_method: str = "client_secret_basic",
        extra_redirect_uris: tuple[str, ...] = (),
        prefix: str = "/bff",
        metadata: Mapping[str, Any] | None = None,
    ) -> Client:
        """Register (or replace) a confidential client for a BFF whose public URL is `base_url`;
        `metadata` adds to or replaces the registration's fields (`jwks` for private_key_jwt,
        `dpop_bound_access_tokens`...)."""
        secret = base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        registration = {
            "client_id": client_id,
            "client_secret": secret,
            "redirect_uris": [f"{base_url}{prefix}/callback", *extra_redirect_uris],
            "post_logout_redirect_uris": [f"{base_url}/", base_url],
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types": ["code"],
            "token_endpoint_auth_method": auth_method,
            "backchannel_logout_uri": f"{base_url}{prefix}/backchannel-logout",
            "backchannel_logout_session_required": True,
            "scope": "openid profile email offline_access api",
            **(metadata or {}),
        }
        response = self._http.post("/test/clients", json=registration)
        response.raise_for_status()
        return Client(client_id=client_id, client_secret=secret, auth_method=auth_method, base_url=base_url)

    # ------------------------------------------------------------------ what the provider saw

    def counters(self) -> dict[str, dict[str, int]]:
        return dict(self._http.get("/test/counters").raise_for_status().json())

    def refresh_count(self, client_id: str) -> int:
        """Successful refresh-token grants of this client since the provider (re)started."""
        return self.counters().get("grant:refresh_token", {}).get(client_id, 0)

    def refresh_errors(self, client_id: str) -> dict[str, int]:
        return {
            name: per_client[client_id]
            for name, per_client in self.counters().items()
            if name.startswith("grant_error:refresh_token") and client_id in per_client
        }

    def backchannel_count(self, client_id: str) -> int:
        return self.counters().get("backchannel.success", {}).get(client_id, 0)

    def set_token_delay(self, seconds: float) -> None:
        """Hold every token request this long before handling it (0: off; a restart resets it)."""
        self._http.post("/test/token-delay", json={"ms": int(seconds * 1000)}).raise_for_status()

    def delayed_token_requests(self) -> int:
        """Token requests that arrived while a delay was on (any client)."""
        return sum(self.counters().get("token.delayed", {}).values())

    def issued(self, client_id: str | None = None) -> list[dict[str, Any]]:
        """Every token response of the provider (access, refresh and ID tokens), oldest first."""
        params = {"client_id": client_id} if client_id else {}
        return list(self._http.get("/test/issued", params=params).raise_for_status().json())

    def issued_tokens(self, client_id: str | None = None) -> set[str]:
        tokens: set[str] = set()
        for entry in self.issued(client_id):
            for kind in ("access_token", "refresh_token", "id_token"):
                if entry.get(kind):
                    tokens.add(entry[kind])
        return tokens

    def grants(self, account: str | None = None, client_id: str | None = None) -> list[dict[str, Any]]:
        """Grants with their refresh tokens (`value`, `consumed`), read from the provider's state."""
        params = {key: value for key, value in (("account", account), ("client_id", client_id)) if value}
        return list(self._http.get("/test/grants", params=params).raise_for_status().json())

    def current_refresh_tokens(self, account: str, client_id: str) -> list[str]:
        """The refresh tokens of `account` at `client_id` that are not consumed (rotated away)."""
        return [
            token["value"]
            for grant in self.grants(account, client_id)
            for token in grant["refreshTokens"]
            if not token["consumed"]
        ]

    def revoke_grants(self, account: str, client_id: str) -> list[str]:
        """Revoke every grant of `account` at `client_id` with all its tokens, as an admin would."""
        response = self._http.post("/test/revoke-grant", json={"account": account, "clientId": client_id})
        return list(response.raise_for_status().json()["revoked"])

    # ------------------------------------------------------------------ the provider's own endpoints

    def discovery(self) -> dict[str, Any]:
        return dict(self._http.get("/.well-known/openid-configuration").raise_for_status().json())

    def introspect(self, token: str, client: Client) -> dict[str, Any]:
        """RFC 7662 introspection with the client's credentials."""
        response = self._http.post(
            "/token/introspection",
            data={"token": token},
            auth=(client.client_id, client.client_secret),
        )
        return dict(response.raise_for_status().json())


@contextlib.contextmanager
def running_provider(state_dir: Path, **kwargs: Any) -> Iterator[OidcProvider]:
    provider = OidcProvider(state_dir, **kwargs)
    provider.start()
    try:
        yield provider
    finally:
        provider.close()


def token_fragments(tokens: Iterable[str], *, window: int = 16, step: int = 8) -> set[str]:
    """The strings to look for where a token must not be: each token whole, and overlapping
    `window`-character pieces of its secret part (the whole of an opaque token; the payload and
    signature of a JWT, not its header, which all tokens share), so that any piece of a token
    longer than `window + step - 1` characters (a truncated token in a log line) is found too.
    Each piece carries 96 random bits or more: no accidental matches."""
    fragments: set[str] = set()
    for token in tokens:
        if not token:
            continue
        fragments.add(token)
        parts = token.split(".")
        secret_parts = parts[1:] if len(parts) == 3 else [token]
        for part in secret_parts:
            if len(part) <= window:
                if len(part) >= 12:
                    fragments.add(part)
                continue
            fragments.update(part[i : i + window] for i in range(0, len(part) - window + 1, step))
            fragments.add(part[-window:])
    return fragments


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)
