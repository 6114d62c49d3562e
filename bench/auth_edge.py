"""The `caddy-auth` set-up: README.md's Caddy `forward_auth`
example as printed, its addresses moved to the bench's. Caddy carries the body between wrk and
the bench upstream and asks the BFF (`auth_request = true`) for each request's `Authorization`.
"""

from __future__ import annotations

from bench.processes import REQUEST_PATH, Target, spawn, wait_ready
from bench.provider import check_upstream
from bench.setups import Context, start_bff_provider
from tests.support.processes import free_port
from tests.support.readme_configs import readme_block

__all__ = ["forward_auth_caddyfile", "start_caddy_auth"]

_README_BFF, _README_UPSTREAM, _README_SITE = "127.0.0.1:8000", "10.0.0.20:8080", "app.example.com {"
_GLOBAL = "{\n\tadmin off\n\tauto_https off\n\tlog {\n\t\tlevel ERROR\n\t}\n}\n"


def forward_auth_caddyfile(port: int, bff_port: int, upstream_port: int) -> str:
    """The README's `auth-request-caddy` block, its addresses moved to the bench's, as plain http."""
    text = readme_block("auth-request-caddy", language="caddyfile")
    for old, new in (
        (_README_BFF, f"127.0.0.1:{bff_port}"),
        (_README_UPSTREAM, f"127.0.0.1:{upstream_port}"),
        (_README_SITE, f"http://127.0.0.1:{port} {{"),
    ):
        if old not in text:
            raise LookupError(f"README.md's auth-request-caddy example no longer has {old!r}")
        text = text.replace(old, new)
    return _GLOBAL + text


def start_caddy_auth(ctx: Context, name: str = "caddy-auth") -> Target:
    """`caddy-auth`: README's Caddy `forward_auth` example on the proxy CPU,
    asking a BFF in auth-request mode (`auth_request = true`, logged in as `bff-oidc`, on the
    proxy CPU too) for each request's token; the CPU per request is both processes'."""
    bff = start_bff_provider(ctx, f"{name}-bff", dpop=False, auth_request=True)
    port = free_port()
    log = ctx.workdir / f"{name}.log"
    target = Target(name, f"http://127.0.0.1:{port}{REQUEST_PATH}", headers=bff.headers, log=log)
    if bff.process is not None:
        target.helpers, target.measured = [bff.process, *bff.helpers], [bff.process]
    target.closers = bff.closers
    if bff.failure is not None:
        target.failure = f"the BFF behind Caddy: {bff.failure}"
        return target
    config = ctx.workdir / f"{name}.Caddyfile"
    config.write_text(forward_auth_caddyfile(port, bff.port, ctx.upstream_port), encoding="utf-8")
    argv = ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"]
    target.process = spawn(argv, cpus=ctx.proxy_cpus, log=log, cwd=ctx.workdir, env=ctx.env)
    wait_ready(target)
    if target.failure is None:
        target.failure = check_upstream(target, "Bearer")
    return target
