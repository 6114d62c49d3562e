"""The real OpenID provider of `bff-oidc` and `bff-dpop`: the integration tests' panva
oidc-provider (`tests.support.oidc_provider`, node), started on the client CPU with access tokens
of an hour (`start_provider`), and the check of what the upstream receives from the BFF
(`authorization_problem`, on the head bench/upstream.py echoes at `ECHO_PATH`).

The set-ups themselves are bench/setups.py's; the login through the provider's pages,
bench/login.py's.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench.processes import REQUEST_PATH, Target, pin_threads, probe
from bench.upstream import ECHO_PATH

if TYPE_CHECKING:  # imported when a set-up starts it: tests.support.oidc_provider needs pytest
    from tests.support.oidc_provider import OidcProvider

__all__ = [
    "ACCESS_TTL",
    "authorization_problem",
    "check_upstream",
    "request_headers",
    "start_provider",
    "upstream_head",
]

ACCESS_TTL = 3600  # seconds: no access token expires during a run, so no refresh is measured (bench/storm.py: shorter)


def start_provider(state_dir: Path, cpus: set[int], *, dpop: bool, access_ttl: int = ACCESS_TTL) -> OidcProvider | str:
    """The provider (with DPoP offered when `dpop`, access tokens living `access_ttl` seconds),
    running and pinned to `cpus`; or why not."""
    from tests.support.oidc_provider import OidcProvider, provider_missing

    missing = provider_missing()
    if missing is not None:
        return f"the tests' OpenID provider cannot start: {missing}"
    provider = OidcProvider(state_dir, access_ttl=access_ttl, dpop="on" if dpop else "off")
    try:
        provider.start()
    except RuntimeError as exc:
        provider.close()
        return f"the tests' OpenID provider did not start: {exc}"
    pin_threads(provider.pid, cpus)
    return provider


def upstream_head(target: Target) -> bytes:
    """One request through the target to `ECHO_PATH`: the head of the request the upstream got."""
    status, body, _ = probe(target.url.removesuffix(REQUEST_PATH) + ECHO_PATH, target.headers)
    if status != 200:
        raise ValueError(f"GET {ECHO_PATH} answered {status}: {body[:200]!r}")
    return body


def _jwt_algorithm(token: str) -> str | None:
    header = token.split(".")[0]
    try:
        return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["alg"])
    except (ValueError, KeyError, TypeError):
        return None


def request_headers(head: bytes) -> dict[str, str]:
    """The headers of a request head, by lower-case name."""
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}


def authorization_problem(headers: dict[str, str], scheme: str) -> str | None:
    """What is wrong with the upstream's request `headers` for `scheme` (`Bearer`: an RS256 JWT
    and no proof; `DPoP`: the same token type and a `DPoP` proof header), or None when they are right."""
    given, _, token = headers.get("authorization", "").partition(" ")
    problems = []
    if given != scheme:
        problems.append(f"Authorization is {given or 'missing'}, not {scheme}")
    if _jwt_algorithm(token) != "RS256":
        problems.append("the access token is no RS256 JWT")
    if ("dpop" in headers) != (scheme == "DPoP"):
        problems.append("a DPoP proof header came with a Bearer token" if scheme != "DPoP" else "no DPoP header")
    return "; ".join(problems) or None


def check_upstream(target: Target, scheme: str) -> str | None:
    """`authorization_problem` of one probe request through the logged-in target, or why the probe failed."""
    try:
        headers = request_headers(upstream_head(target))
    except (OSError, ValueError) as exc:
        return f"probe of {ECHO_PATH} failed: {exc}"
    problem = authorization_problem(headers, scheme)
    if problem:
        return f"the upstream did not get what {target.name} must send: {problem}"
    token = headers["authorization"].partition(" ")[2]
    proof = f" and a {len(headers['dpop'])}-character DPoP proof" if "dpop" in headers else ""
    print(
        f"bench: {target.name}: the upstream got {scheme} with a {len(token)}-character RS256 JWT{proof}",
        file=sys.stderr,
    )
    return None
