"""Settings: the shape of `bff.toml`, its environment overrides and their validation.

`load_settings` reads a TOML file (optional) and `BFF_...` environment variables (nested keys
joined by `__`, list items by their index: `BFF_ROUTES__0__UPSTREAM`), checks every key and
value, and raises one `ConfigError` that lists every problem, one per line, each naming its key.
Nothing here opens a socket: reaching the provider is `bff check`'s business.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from starlette.datastructures import Secret

from bff.errors import ConfigError
from bff.oidc_settings import OIDCSettings, apply_profile, oidc_problems
from bff.settings_reader import URL, ByteSize, Duration, build_dataclass, merge_environment
from bff.stores import check_store_url

__all__ = [
    "RouteSettings",
    "SessionSettings",
    "Settings",
    "TokenAPISettings",
    "TokenKind",
    "TokenPlacement",
    "load_settings",
]

TokenKind = Literal["user", "user_optional", "client", "none"]
TokenPlacement = Literal["json", "form", "bearer"]

_ENV_PREFIX = "BFF_"
# BFF_... variables that are not settings: the config file path `bff serve` hands its workers.
_NOT_SETTINGS = frozenset({"BFF_CONFIG_FILE"})


@dataclass(frozen=True)
class SessionSettings:
    """The session cookie and how long a session lives."""

    cookie_name: str = "bff"
    """Cookie name; becomes `__Host-<name>` when `public_url` is https. Default: `bff`."""
    same_site: Literal["strict", "lax"] = "strict"
    """SameSite of the session cookie. Default: `strict`."""
    idle_timeout: Duration = 30 * 86400
    """A session unused this long ends (sliding). Default: `30d`."""
    absolute_timeout: Duration = 90 * 86400
    """A session ends this long after login, however much it is used. Default: `90d`."""
    login_timeout: Duration = 600
    """How long a started login may take before the login-state cookie expires. Default: `10m`."""
    keep_claims: tuple[str, ...] = ()
    """The user claims a session keeps (and `/bff/user` shows); `sub` is always kept. Trims a
    cookie-mode session that would not fit its cookies. Default: all of them."""


@dataclass(frozen=True)
class TokenAPISettings:
    """An existing JWT login API (SimpleJWT, flask-jwt-extended, ...) as the login source."""

    login_url: URL
    """Where `POST /bff/login` forwards the SPA's JSON credentials. Required."""
    refresh_url: URL
    """Where a refresh token is exchanged for a new access token. Required."""
    logout_url: URL | None = None
    """Called at logout to blacklist or revoke the refresh token. Default: none."""
    logout_method: Literal["POST", "DELETE"] = "POST"
    """HTTP method of the logout call. Default: `POST`."""
    logout_token_in: TokenPlacement = "json"
    """How the refresh token goes to `logout_url`: a `json` body field, a `form` field, or
    `bearer` (`Authorization: Bearer`). Default: `json`."""
    access_token_field: str = "access_token"
    """Where the access token is in a login or refresh answer; dots for nested JSON
    (`data.access`). Default: `access_token`."""
    refresh_token_field: str = "refresh_token"
    """Where the refresh token is in a login or refresh answer. Default: `refresh_token`."""
    expires_in_field: str = "expires_in"
    """Seconds the access token lives, when the answer has this field; otherwise the JWT's
    `exp`. Default: `expires_in`."""
    refresh_token_in: TokenPlacement = "json"
    """How the refresh token goes to `refresh_url` (and `logout_url` with `json`/`form`):
    `json` body field, `form` field, or `bearer`. Default: `json`."""
    refresh_token_param: str = "refresh_token"
    """The body field that carries the refresh token (`refresh` for SimpleJWT). Default: `refresh_token`."""
    rotation: Literal["auto", "always", "never"] = "auto"
    """Refresh-token rotation: `auto` takes a new refresh token when the answer has one,
    `always` refuses an answer without one, `never` keeps the first. Default: `auto`."""
    user_id_claim: str = "sub"
    """The access-token claim that names the user (`user_id` for SimpleJWT). Default: `sub`."""
    userinfo_url: URL | None = None
    """GET with the access token; its JSON object becomes the user's claims. Default: the
    access token's own claims."""
    refresh_skew: Duration = 30
    """Refresh an access token this long before it expires. `0` turns proactive refresh off. Default: `30s`."""
    timeout: Duration = 10
    """Timeout of each call to the API. Default: `10s`."""
    retry_after: Duration = 5
    """`Retry-After` sent with the 503 when the API cannot be reached. Default: `5s`."""


@dataclass(frozen=True)
class RouteSettings:
    """One `[[routes]]` entry: a path prefix, its upstream and the token it gets."""

    path: str
    """Path prefix, for example `/api`. Required."""
    upstream: URL
    """Upstream base URL; its path is prepended to the forwarded path. Required."""
    token: TokenKind = "none"
    """`user`, `user_optional`, `client` or `none`. Default: `none`."""
    strip_prefix: bool = False
    """Remove `path` from the forwarded path. Default: `false`."""
    csrf: bool = True
    """Require the anti-forgery header on this route. Default: `true`."""
    preserve_host: bool = False
    """Forward the browser's `Host` instead of the upstream's. Default: `false`."""
    forward_cookies: bool = False
    """Forward the browser's other cookies (the BFF's own are always removed). Default: `false`."""
    websocket: bool = True
    """Proxy WebSocket upgrades on this route. Default: `true`."""
    connect_timeout: Duration = 5
    """Time to connect to the upstream. Default: `5s`."""
    read_timeout: Duration = 60
    """Longest silence while waiting for response headers or the next body chunk. Default: `60s`."""
    max_connections: int = 10000
    """Most connections open to this upstream at once; each request in flight, open SSE stream and
    WebSocket holds one. Default: `10000`."""


@dataclass(frozen=True)
class Settings:
    """Everything `bff serve` needs; see `bff.toml.example`."""

    secret_keys: tuple[Secret, ...]
    """Keys for cookies: the first signs and encrypts, all verify. Each at least 32 characters. Required."""
    public_url: URL = "http://127.0.0.1:8000"
    """The origin the browser sees. Default: `http://127.0.0.1:8000`."""
    session_store: str = "sqlite:///.bff/sessions.db"
    """`sqlite:///path`, `memory://` or `redis://host:port/db`. Default: `sqlite:///.bff/sessions.db`."""
    token_storage: Literal["server", "cookie"] = "server"
    """Where tokens live: `server` (a store record named by the cookie) or `cookie` (sealed into
    the cookie itself; the store then keeps only short-lived records). Default: `server`."""
    trusted_proxies: tuple[str, ...] = ("127.0.0.1",)
    """Addresses whose `X-Forwarded-*` headers are believed. Default: `127.0.0.1`."""
    prefix: str = "/bff"
    """Path prefix of the BFF's own endpoints. Default: `/bff`."""
    auth_request: bool = False
    """Answer `GET <prefix>/auth` (nginx `auth_request`, Traefik `ForwardAuth`, Caddy
    `forward_auth`) to peers in `trusted_proxies`. Default: `false`."""
    csrf_header: str = "X-CSRF"
    """Name of the anti-forgery header. Default: `X-CSRF`."""
    csrf_value: str = "1"
    """Value the anti-forgery header must have. Default: `1`."""
    allowed_origins: tuple[str, ...] = ()
    """Origins allowed for WebSocket upgrades and cross-origin checks. Default: the origin of `public_url`."""
    max_replay_body: ByteSize = 1024 * 1024
    """Request bodies up to this size are buffered so they can be replayed after a refresh. Default: `1MiB`."""
    max_header_size: ByteSize = 64 * 1024
    """Largest total size of a request's header names and values (431 above). Default: `64KiB`."""
    max_request_body: ByteSize | None = None
    """Largest request body the proxy accepts (413 above). Default: unlimited (streamed)."""
    static_dir: str | None = None
    """A directory of SPA files served at `/` for paths no route claims. Default: none."""
    log_format: Literal["text", "json"] = "text"
    """How `bff serve` writes log lines: `text` (`key=value` access lines) or `json` (one object
    per line, every line, for Loki/ELK). Default: `text`."""
    shutdown_timeout: Duration = 30
    """On SIGTERM, how long `bff serve` waits for the requests in flight before it cancels them
    (streams end at once). Default: `30s`."""
    session: SessionSettings = field(default_factory=SessionSettings)
    oidc: OIDCSettings | None = None
    token_api: TokenAPISettings | None = None
    routes: tuple[RouteSettings, ...] = ()

    @property
    def is_https(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def public_origin(self) -> str:
        parts = urlsplit(self.public_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def session_cookie_name(self) -> str:
        """The session cookie's name; every cookie named `<it>` or `<it>-...` is the BFF's own."""
        prefix = "__Host-" if self.is_https else ""
        return prefix + self.session.cookie_name

    @property
    def origins(self) -> tuple[str, ...]:
        """Allowed origins, defaulting to the BFF's own."""
        return self.allowed_origins or (self.public_origin,)


def load_settings(environ: Mapping[str, str], config_file: str | Path | None = None) -> Settings:
    """Read `config_file` (if given) and `BFF_...` variables from `environ`; raise `ConfigError`."""
    problems: list[str] = []
    raw: dict[str, Any] = {}
    if config_file is not None:
        try:
            raw = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"config file {str(config_file)!r}: not found"]) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            raise ConfigError([f"config file {str(config_file)!r}: {exc}"]) from None
    merge_environment(raw, environ, problems, prefix=_ENV_PREFIX, ignore=_NOT_SETTINGS)
    built = build_dataclass(Settings, raw, "", problems)
    if built is None:
        raise ConfigError(problems)
    settings = typing.cast(Settings, built)
    if settings.oidc is not None:
        # A profile fills in what it requires where the file is silent, so it must see what was said.
        section = raw.get("oidc")
        said = set(section) if isinstance(section, dict) else set()
        settings = dataclasses.replace(settings, oidc=apply_profile(settings.oidc, said, problems))
    _check_consistency(settings, problems)
    if problems:
        raise ConfigError(problems)
    return settings


def _check_consistency(settings: Settings, problems: list[str]) -> None:
    _check_secret_keys(settings.secret_keys, problems)
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", settings.prefix):
        problems.append(f"prefix: {settings.prefix!r} must be a path such as /bff")
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", settings.csrf_header):
        problems.append(f"csrf_header: {settings.csrf_header!r} is not a valid header name")
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", settings.session.cookie_name):
        problems.append(f"session.cookie_name: {settings.session.cookie_name!r} is not a valid cookie name")
    try:
        check_store_url(settings.session_store)
    except ConfigError as error:
        problems.extend(error.problems)
    if settings.session.idle_timeout <= 0 or settings.session.absolute_timeout <= 0:
        problems.append("session: idle_timeout and absolute_timeout must be positive")
    if settings.oidc is not None:
        problems.extend(oidc_problems(settings.oidc))
    _check_combinations(settings, problems)
    seen: set[str] = set()
    for i, route in enumerate(settings.routes):
        if route is not None:  # None: already reported while reading it
            _check_route(f"routes[{i}]", route, settings, seen, problems)


def _check_combinations(settings: Settings, problems: list[str]) -> None:
    """Settings each valid alone that do not go together."""
    if settings.oidc is not None and settings.token_api is not None:
        problems.append("token_api: choose one login source, [oidc] or [token_api], not both")
    if settings.auth_request and settings.token_storage == "cookie":
        # Caddy's forward_auth drops a 200 answer's Set-Cookie and nginx keeps only the first:
        # a refresh's resealed cookie would never reach the browser, which would refresh again.
        problems.append('auth_request: needs token_storage = "server" (edges drop the auth answer\'s Set-Cookie)')


def _check_secret_keys(keys: tuple[Secret, ...], problems: list[str]) -> None:
    if not keys:
        problems.append("secret_keys: at least one key is required")
    too_short = (i for i, key in enumerate(keys) if len(str(key)) < 32)
    problems.extend(f"secret_keys[{i}]: must be at least 32 characters" for i in too_short)


def _check_route(key: str, route: RouteSettings, settings: Settings, seen: set[str], problems: list[str]) -> None:
    if not re.fullmatch(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+", route.path):
        problems.append(f"{key}.path: {route.path!r} must be a path prefix such as /api (no trailing slash)")
    if route.path == settings.prefix or route.path.startswith(settings.prefix + "/"):
        problems.append(f"{key}.path: {route.path!r} overlaps the BFF's own prefix {settings.prefix!r}")
    if route.path in seen:  # the paths of the routes before this one
        problems.append(f"{key}.path: {route.path!r} is configured twice")
    seen.add(route.path)
    oidc = settings.oidc
    if route.token == "client" and oidc is None:
        problems.append(f"{key}.token: 'client' needs an [oidc] section (client credentials)")
    elif route.token == "client" and oidc is not None and oidc.profile == "fapi2":
        problems.append(
            f"{key}.token: 'client' contradicts profile = \"fapi2\" (client-credentials tokens stay Bearer)"
        )
    elif route.token != "none" and settings.oidc is None and settings.token_api is None:
        problems.append(f"{key}.token: {route.token!r} needs a login source, an [oidc] or a [token_api] section")
    if route.max_connections < 1:
        problems.append(f"{key}.max_connections: must be at least 1")
