"""The set-ups as a table: each name, in table order, with the function that starts it
(bench/setups.py, bench/auth_edge.py) or the set-up whose process it measures on another path
(`VIEWS`), and the ones `python -m bench` runs by default."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.auth_edge import start_caddy_auth
from bench.peer import start_peer
from bench.processes import OPEN_REQUEST_PATH, Target
from bench.setups import (
    Context,
    start_bff_logged_in,
    start_bff_provider,
    start_bff_redis,
    start_bff_token_api,
    start_caddy,
    start_minimal,
    start_plain_bff,
    with_open_route,
)

__all__ = ["DEFAULT_SETUPS", "SETUPS", "STARTERS", "VIEWS"]

COOKIE_MODE: dict[str, Any] = {"token_storage": "cookie"}
DEFAULT_SETUPS = ("upstream", "caddy", "bff")  # the others are opt-in (see bench/README.md)
STARTERS: dict[str, Callable[[Context], Target]] = {  # every set-up but `upstream`, in table order
    "caddy": start_caddy,
    "bff": start_plain_bff,
    "bff-user": lambda ctx: start_bff_logged_in(ctx, "bff-user", {}),
    "bff-cookie": lambda ctx: start_bff_logged_in(ctx, "bff-cookie", {"token_storage": "cookie"}),
    "bff-tokenapi": start_bff_token_api,
    "bff-oidc": lambda ctx: start_bff_provider(ctx, "bff-oidc", dpop=False, configure=with_open_route),
    "bff-dpop": lambda ctx: start_bff_provider(ctx, "bff-dpop", dpop=True),
    "bff-redis": start_bff_redis,
    "bff-oidc-cookie": lambda ctx: start_bff_provider(ctx, "bff-oidc-cookie", dpop=False, **COOKIE_MODE),
    "peer": lambda ctx: start_peer(ctx, "peer", sniffio=False),
    "peer-sniffio": lambda ctx: start_peer(ctx, "peer-sniffio", sniffio=True),
    "minimal": start_minimal,
    "caddy-auth": start_caddy_auth,
}
# Measured in a started set-up's process: name -> (that set-up, the path requested instead).
# `bff-oidc-none` is target 1's reference: the same worker, cookie and upstream, `token = "none"`;
# its runs come right after `bff-oidc`'s, so the two are paired run by run.
VIEWS: dict[str, tuple[str, str]] = {"bff-oidc-none": ("bff-oidc", OPEN_REQUEST_PATH)}
SETUPS = tuple(  # in table order, each view after its set-up
    name
    for started in ("upstream", *STARTERS)
    for name in (started, *(view for view, (base, _) in VIEWS.items() if base == started))
)
