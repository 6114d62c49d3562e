"""run_demo: `bff demo`, the whole product on one port. DEVELOPMENT ONLY, NOT FOR PRODUCTION.

One process serves, through the same `create_app` as `bff serve`:

    /            frontend-demo/ (the BFF's `static_dir`)
    /bff/...     the BFF's own endpoints, sessions in SQLite under the data directory
    /api/...     a `token = "user"` route whose upstream is /demo-api on this same server: the proxy
                 calls back into this process over loopback, the real path with a real socket
    /idp/...     the development identity provider (`idp.py`), mounted as an extra route
    /demo-api/   the demo API (`api.py`), mounted as an extra route

`frontend-demo/` is found next to the `bff` package, i.e. in the source checkout that
`pip install -e .` uses; there is no packaged copy to fall out of date.

What a restart keeps, all in the data directory (default `.bff/`), files of mode 600:

    demo-secret            the BFF's cookie key, made once: session cookies stay valid
    demo-sessions.db       the BFF's sessions (SQLite)
    demo-idp-key.pem       the provider's signing key: issued tokens stay verifiable
    demo-idp-state.json    the provider's sessions and grants (token hashes only), written at a
                           clean shutdown (Ctrl+C), so refresh tokens stay valid

Delete the directory to start from scratch.

`BFF_PUBLIC_URL` (optional) is the origin the browser uses when it is not this server, e.g. the
Vite dev server of frontend-demo/ (see its vite.config.js).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from starlette.datastructures import Secret
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from bff.app import BffApp, create_app
from bff.config import RouteSettings, Settings
from bff.demo.api import DemoAPI
from bff.demo.idp import DevIdentityProvider
from bff.demo.keys import SigningKey
from bff.demo.oauth import DemoClient
from bff.errors import ConfigError
from bff.oidc_settings import OIDCSettings
from bff.server import serve

__all__ = [
    "CLIENT_ID",
    "FRONTEND_DIR",
    "KEY_FILE",
    "SECRET_FILE",
    "STATE_FILE",
    "Demo",
    "banner",
    "build_demo",
    "find_frontend_dir",
    "load_or_create_key",
    "load_or_create_secret",
    "load_provider_state",
    "run_demo",
    "save_provider_state",
]

CLIENT_ID = "bff-demo"
SECRET_FILE = "demo-secret"
KEY_FILE = "demo-idp-key.pem"
STATE_FILE = "demo-idp-state.json"
log = logging.getLogger("bff.demo")

FRONTEND_DIR = Path(__file__).resolve().parents[2] / "frontend-demo"


@dataclass(frozen=True)
class Demo:
    """The wired demo: `app` is what uvicorn serves; the parts are there for tests."""

    settings: Settings
    idp: DevIdentityProvider
    api: DemoAPI
    app: BffApp
    base_url: str
    data_dir: Path


def build_demo(
    *,
    host: str,
    port: int,
    access_ttl: int,
    data_dir: str | Path,
    token_storage: Literal["server", "cookie"] = "server",  # noqa: S107 (a storage mode)
    environ: Mapping[str, str] | None = None,
) -> Demo:
    """Everything `run_demo` serves, without serving it. Raises `ConfigError` for bad arguments."""
    environ = os.environ if environ is None else environ
    if access_ttl < 1:
        raise ConfigError(["--access-ttl: must be at least 1 second"])
    base_url = f"http://{_url_host(host)}:{port}"
    public_url = environ.get("BFF_PUBLIC_URL", "").rstrip("/") or base_url
    parts = urlsplit(public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise ConfigError([f"BFF_PUBLIC_URL: {public_url!r} must be an origin such as http://127.0.0.1:5173"])
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    issuer = f"{base_url}/idp"
    audience = f"{base_url}/demo-api"
    client_secret = secrets.token_urlsafe(32)  # both sides are in this process: a new one each start
    origins = tuple(dict.fromkeys((public_url, base_url)))  # the browser's first, then this server's
    settings = Settings(
        secret_keys=(Secret(load_or_create_secret(data)),),
        public_url=public_url,
        session_store=f"sqlite:///{data / 'demo-sessions.db'}",
        token_storage=token_storage,
        allowed_origins=origins,
        static_dir=str(find_frontend_dir()),
        oidc=OIDCSettings(
            issuer=issuer,
            client_id=CLIENT_ID,
            client_secret=Secret(client_secret),
            # Refresh a little before expiry, so both the proactive refresh and (on a short
            # --access-ttl) the refresh after the API's 401 happen in a demo run.
            refresh_skew=min(30.0, access_ttl / 4),
        ),
        routes=(RouteSettings(path="/api", upstream=audience, token="user", strip_prefix=True),),  # noqa: S106 (a token kind)
    )
    idp = DevIdentityProvider(
        issuer=issuer,
        key=load_or_create_key(data),
        clients=[
            DemoClient(
                CLIENT_ID,
                client_secret,
                redirect_uris=tuple(f"{origin}/bff/callback" for origin in origins),
                post_logout_redirect_uris=tuple(f"{origin}/" for origin in origins),
                backchannel_logout_uri=f"{base_url}/bff/backchannel-logout",
            )
        ],
        api_audience=audience,
        access_ttl=access_ttl,
    )
    load_provider_state(idp, data)
    api = DemoAPI(issuer=issuer, audience=audience, jwks_url=f"{issuer}/jwks")
    extra_routes: list[BaseRoute] = [
        Mount("/idp", app=idp.app()),
        Mount("/demo-api", app=api.app()),
        # frontend-demo/ is served as a directory; Vite's packages there are nobody's business.
        Route("/node_modules/{path:path}", _not_found),
    ]
    app = create_app(settings, extra_routes=extra_routes)
    return Demo(settings=settings, idp=idp, api=api, app=app, base_url=base_url, data_dir=data)


def run_demo(
    *,
    host: str,
    port: int,
    access_ttl: int,
    data_dir: str,
    token_storage: Literal["server", "cookie"] = "server",  # noqa: S107 (a storage mode)
) -> int:
    demo = build_demo(host=host, port=port, access_ttl=access_ttl, data_dir=data_dir, token_storage=token_storage)
    print(banner(demo, access_ttl=access_ttl, data_dir=data_dir), flush=True)
    serve(demo.app, host=host, port=port, log_level="info")  # the BFF's and the provider's lines are the show
    save_provider_state(demo.idp, demo.data_dir)
    return 0


def banner(demo: Demo, *, access_ttl: int, data_dir: str) -> str:
    url = demo.settings.public_url + "/"
    skew = demo.settings.oidc.refresh_skew if demo.settings.oidc else 0
    lines = [
        "",
        "bff demo: the BFF, a development identity provider, a demo API and a demo SPA on one port.",
        "DEVELOPMENT ONLY: the built-in identity provider has no passwords. Not for production.",
        "",
        f"  Open {url}",
        "",
        "  Things to try:",
        "  1. Log in: pick a user on the development login page, or type any name.",
        "  2. Add to-dos. They go through the BFF to the demo API with an access token the page never sees;",
        '     the "What JavaScript can see" line shows document.cookie empty: the session cookie is HttpOnly.',
        f'  3. Watch "access token expires in" count down from {access_ttl} s. In its last {skew:g} s, or once it ran',
        "     out, the next API call makes the BFF refresh it by itself: the number jumps back, the clock's",
        "     stream reconnects, a to-do added after expiry just works, and the page never reloads.",
        "  4. Open a second browser (or a private window), log in as the same user, and press",
        '     "log out other devices" in one of them: the other goes to the login page on its next call.',
        "  5. Log out: the BFF revokes the refresh token and the provider ends its session.",
        "",
        f"  Sessions and keys live in {data_dir}/ and survive a restart; delete it to start from scratch.",
        "  Frontend work with Vite: cd frontend-demo && npm install && npm run dev, with this demo started as",
        "  BFF_PUBLIC_URL=http://127.0.0.1:5173 bff demo   (see frontend-demo/vite.config.js).",
        "  Ctrl+C stops.",
        "",
    ]
    return "\n".join(lines)


def find_frontend_dir() -> Path:
    if (FRONTEND_DIR / "index.html").is_file():
        return FRONTEND_DIR
    raise ConfigError(
        [f"frontend-demo: not found at {FRONTEND_DIR}; run `bff demo` from a source checkout (pip install -e .)"]
    )


def load_or_create_secret(data_dir: Path) -> str:
    """The BFF's cookie key, made on first use and kept (mode 600) so that restarts keep sessions."""
    path = data_dir / SECRET_FILE
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(48) + "\n")
    secret = path.read_text(encoding="ascii").strip()
    if len(secret) < 32:
        raise ConfigError([f"{path}: holds no usable key (delete the file to make a new one)"])
    return secret


def load_or_create_key(data_dir: Path) -> SigningKey:
    """The provider's signing key, made on first use and kept (mode 600)."""
    path = data_dir / KEY_FILE
    if not path.exists():
        key = SigningKey.generate()
        _write_private(path, key.to_pem().decode("ascii"))
        return key
    try:
        return SigningKey.from_pem(path.read_bytes())
    except ValueError:
        raise ConfigError([f"{path}: not an RSA private key (delete the file to make a new one)"]) from None


def load_provider_state(idp: DevIdentityProvider, data_dir: Path) -> None:
    path = data_dir / STATE_FILE
    try:
        idp.grants.restore(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return
    except ValueError as exc:  # json's errors are ValueErrors too
        log.warning("Provider state not restored, starting empty. file: '%s', error: %s", path, exc)


def save_provider_state(idp: DevIdentityProvider, data_dir: Path) -> None:
    _write_private(data_dir / STATE_FILE, json.dumps(idp.grants.snapshot()))


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 600, atomically (a reader sees the old or the new file)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 (a wildcard bind is reached at loopback)
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


async def _not_found(_request: Request) -> Response:
    return PlainTextResponse("Not Found", status_code=404)
