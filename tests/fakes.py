"""Fake login sources for unit tests: `httpx.MockTransport` handlers.

`FakeIdP`, an OpenID provider, signs ID and logout tokens with a real RSA key, checks PKCE and
client authentication, rotates refresh tokens, and counts calls per path (`idp.calls["/token"]`).
`FakeTokenAPI` is a SimpleJWT-shaped login API issuing HS256 access tokens. Neither replaces the
integration tests against real servers; they make protocol logic testable in-process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from bff.config import RouteSettings, Settings, TokenAPISettings, load_settings
from bff.errors import StoreUnavailable
from bff.stores.memory import MemoryStore
from bff.tokens import Bearer
from bff.tokenset import TokenSet

ISSUER = "https://idp.example"
CLIENT_ID = "bff"
CLIENT_SECRET = "s3cret"
SECRET_KEY = "k" * 40
TOKEN_API = "https://api.example"
TOKEN_API_KEY = "j" * 32  # the fake token API's HS256 signing key


_BFF = {"SECRET_KEYS": f'["{SECRET_KEY}"]', "PUBLIC_URL": "https://testserver", "SESSION_STORE": "memory://"}
# `[token_api]` for the fake token API, as SimpleJWT is configured.
_SIMPLEJWT = {
    "login_url": f"{TOKEN_API}/api/token/",
    "refresh_url": f"{TOKEN_API}/api/token/refresh/",
    "logout_url": f"{TOKEN_API}/api/token/blacklist/",
    "access_token_field": "access",
    "refresh_token_field": "refresh",
    "refresh_token_param": "refresh",
    "user_id_claim": "user_id",
}


def settings_for(**environ: str) -> Settings:
    """Settings of a BFF at https://testserver in front of the fake provider; `environ` adds
    `BFF_...` variables without the prefix (`OIDC__REFRESH_SKEW="0"`)."""
    base = {**_BFF, "OIDC__ISSUER": ISSUER, "OIDC__CLIENT_ID": CLIENT_ID, "OIDC__CLIENT_SECRET": CLIENT_SECRET}
    return load_settings({f"BFF_{key}": value for key, value in {**base, **environ}.items()})


def token_api_settings_for(**environ: str) -> Settings:
    """Settings of a BFF at https://testserver in front of the fake token API (`token_api_settings`);
    `environ` adds `BFF_...` variables without the prefix (`TOKEN_API__ROTATION="never"`)."""
    base = {**_BFF, **{f"TOKEN_API__{name.upper()}": value for name, value in _SIMPLEJWT.items()}}
    return load_settings({f"BFF_{key}": value for key, value in {**base, **environ}.items()})


class FakeIdP:
    """Answers discovery, JWKS, token and revocation requests like a small OpenID provider."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        access_ttl: int = 300,
        rotate_refresh_tokens: bool = True,
        token_delay: float = 0.0,
        auth_method: str = "client_secret_basic",
    ) -> None:
        self.clock = clock
        self.access_ttl = access_ttl
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.token_delay = token_delay
        self.auth_method = auth_method
        self.calls: Counter[str] = Counter()
        self.requests: list[httpx.Request] = []
        self.keys: list[tuple[str, rsa.RSAPrivateKey]] = []
        self.rotate_keys()
        self.codes: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: dict[str, dict[str, Any]] = {}  # the active ones
        self.revoked: list[str] = []
        self.issued: list[str] = []  # every token it answered, for "no token is readable" checks
        self.token_status: int | None = None  # answer /token with this status (e.g. 503)
        self.unreachable = False  # every call fails with a connection error
        self.discovery_overrides: dict[str, Any] = {}
        self._serial = 0

    # -- what the browser would do at the provider ---------------------------------------------

    def authorize(self, url: str, *, sub: str = "alice", sid: str = "sid-1", **id_claims: Any) -> dict[str, str]:
        """Approve an authorization request: the query parameters the provider sends back."""
        query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
        assert query["response_type"] == "code"
        assert query["code_challenge_method"] == "S256"
        code = self._new("code")
        self.codes[code] = {"query": query, "sub": sub, "sid": sid, "id_claims": id_claims}
        return {"code": code, "state": query["state"], "iss": ISSUER}

    # -- tokens ---------------------------------------------------------------------------------

    def rotate_keys(self) -> str:
        """A new signing key; the old one leaves the JWKS. Returns the new kid."""
        kid = f"key-{len(self.keys) + 1}"
        self.keys = [(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))]
        return kid

    def sign(self, claims: Mapping[str, Any], *, alg: str = "RS256", headers: Mapping[str, Any] | None = None) -> str:
        kid, key = self.keys[0]
        return jwt.encode(dict(claims), key, algorithm=alg, headers={"kid": kid, **(headers or {})})

    def id_token(self, *, nonce: str | None, sub: str = "alice", sid: str = "sid-1", **claims: Any) -> str:
        now = int(self.clock())
        body = {"iss": ISSUER, "sub": sub, "aud": CLIENT_ID, "iat": now, "exp": now + 600, "sid": sid, "name": sub}
        if nonce is not None:
            body["nonce"] = nonce
        body.update(claims)
        return self.sign({key: value for key, value in body.items() if value is not None})

    def logout_token(self, *, sub: str | None = "alice", sid: str | None = "sid-1", **claims: Any) -> str:
        now = int(self.clock())
        body: dict[str, Any] = {
            "iss": ISSUER,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 120,
            "jti": self._new("jti"),
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
            "sub": sub,
            "sid": sid,
        }
        body.update(claims)
        return self.sign(
            {key: value for key, value in body.items() if value is not None}, headers={"typ": "logout+jwt"}
        )

    def issue_refresh_token(self, sub: str = "alice", sid: str = "sid-1") -> str:
        token = self._new("rt")
        self.refresh_tokens[token] = {"sub": sub, "sid": sid}
        return token

    # -- the transport --------------------------------------------------------------------------

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls[path] += 1
        self.requests.append(request)
        if self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        if path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={**self.discovery(), **self.discovery_overrides})
        if path == "/jwks":
            return httpx.Response(200, json={"keys": [self._jwk(kid, key) for kid, key in self.keys]})
        if path == "/token":
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            if self.token_status is not None:
                return httpx.Response(self.token_status, text="unavailable")
            return self._token(request)
        if path == "/revoke":
            self._authenticate(request)
            self.revoked.append(self._form(request)["token"])
            self.refresh_tokens.pop(self._form(request)["token"], None)
            return httpx.Response(200)
        return httpx.Response(404)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": ISSUER,
            "authorization_endpoint": f"{ISSUER}/authorize",
            "token_endpoint": f"{ISSUER}/token",
            "jwks_uri": f"{ISSUER}/jwks",
            "end_session_endpoint": f"{ISSUER}/session/end",
            "revocation_endpoint": f"{ISSUER}/revoke",
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def _token(self, request: httpx.Request) -> httpx.Response:
        if not self._authenticate(request):
            return httpx.Response(401, json={"error": "invalid_client"})
        form = self._form(request)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            grant_data = self.codes.pop(form.get("code", ""), None)
            if grant_data is None:
                return _error("invalid_grant")
            query = grant_data["query"]
            challenge = base64.urlsafe_b64encode(hashlib.sha256(form["code_verifier"].encode()).digest()).rstrip(b"=")
            if challenge.decode() != query["code_challenge"] or form.get("redirect_uri") != query["redirect_uri"]:
                return _error("invalid_grant")
            claims = {"nonce": query["nonce"], "sub": grant_data["sub"], "sid": grant_data["sid"]}
            id_token = self.id_token(**{**claims, **grant_data["id_claims"]})
            refresh = self.issue_refresh_token(grant_data["sub"], grant_data["sid"])
            return self._tokens(refresh_token=refresh, id_token=id_token)
        if grant == "refresh_token":
            old = form.get("refresh_token", "")
            owner = self.refresh_tokens.get(old)
            if owner is None:
                return _error("invalid_grant")
            if not self.rotate_refresh_tokens:
                return self._tokens()
            del self.refresh_tokens[old]
            return self._tokens(refresh_token=self.issue_refresh_token(owner["sub"], owner["sid"]))
        if grant == "client_credentials":
            return self._tokens(prefix="cc")
        return _error("unsupported_grant_type")

    def _tokens(self, *, prefix: str = "at", **extra: str) -> httpx.Response:
        body = {"access_token": self._new(prefix), "token_type": "Bearer", "expires_in": self.access_ttl, **extra}
        self.issued += [str(body["access_token"]), *extra.values()]
        return httpx.Response(200, json=body)

    def _authenticate(self, request: httpx.Request) -> bool:
        if self.auth_method == "client_secret_basic":
            expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            return bool(request.headers.get("authorization") == f"Basic {expected}")
        form = self._form(request)
        return bool(form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET)

    def _new(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}-{self._serial}-{secrets.token_hex(4)}"

    @staticmethod
    def _form(request: httpx.Request) -> dict[str, str]:
        return {key: values[0] for key, values in parse_qs(request.content.decode()).items()}

    @staticmethod
    def _jwk(kid: str, key: rsa.RSAPrivateKey) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def _error(code: str, status: int = 400) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "error_description": f"fake provider says {code}"})


def callback_query(params: Mapping[str, str]) -> str:
    return urlencode(params)


def token_api_settings(**overrides: Any) -> TokenAPISettings:
    """`[token_api]` for the fake token API, as SimpleJWT would be configured; `overrides` replace fields."""
    return TokenAPISettings(**{**_SIMPLEJWT, **overrides})


class FakeTokenAPI:
    """Answers like Django REST framework SimpleJWT: `POST /api/token/` (username and password →
    `access` and `refresh`), `POST /api/token/refresh/`, `POST /api/token/blacklist/` and
    `GET /api/me/` (bearer). It reads the refresh token from a JSON or form field named `param` or
    from `Authorization: Bearer`, rotates refresh tokens when asked to, and refuses a used,
    blacklisted or unknown one with 401. Counts calls per path (`api.calls["/api/token/"]`)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        access_ttl: int = 300,
        rotate_refresh_tokens: bool = True,
        param: str = "refresh",
    ) -> None:
        self.clock = clock
        self.access_ttl = access_ttl
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.param = param
        self.users: dict[str, tuple[str, int]] = {"alice": ("wonderland", 42)}  # name → (password, id)
        self.calls: Counter[str] = Counter()
        self.requests: list[httpx.Request] = []
        self.refresh_tokens: dict[str, str] = {}  # the active ones → user name
        self.blacklisted: list[str] = []
        self.status: dict[str, int] = {}  # path → answer with this status instead (e.g. 503)
        self.status_headers: dict[str, str] = {}  # headers of those answers (e.g. Retry-After)
        self.unreachable = False  # every call fails with a connection error
        self._serial = 0

    def access_token(self, username: str = "alice", **claims: Any) -> str:
        now = int(self.clock())
        body = {
            "token_type": "access",
            "exp": now + self.access_ttl,
            "iat": now,
            "jti": self._new("jti"),
            "user_id": self.users[username][1],
            "username": username,
            **claims,
        }
        return jwt.encode(body, TOKEN_API_KEY, algorithm="HS256")

    def issue_refresh_token(self, username: str = "alice") -> str:
        token = self._new("rt")
        self.refresh_tokens[token] = username
        return token

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls[path] += 1
        self.requests.append(request)
        if self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        if path in self.status:
            return httpx.Response(self.status[path], headers=self.status_headers, text="unavailable")
        if request.method == "OPTIONS":
            return httpx.Response(200, headers={"allow": "POST, OPTIONS"})
        handler = {
            "/api/token/": self._login,
            "/api/token/refresh/": self._refresh,
            "/api/token/blacklist/": self._blacklist,
            "/api/me/": self._me,
        }.get(path)
        return httpx.Response(404, json={"detail": "Not found."}) if handler is None else handler(request)

    def _login(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        username = str(body.get("username"))
        if username not in self.users or body.get("password") != self.users[username][0]:
            return httpx.Response(401, json={"detail": "No active account found with the given credentials"})
        return httpx.Response(
            200, json={"access": self.access_token(username), "refresh": self.issue_refresh_token(username)}
        )

    def _refresh(self, request: httpx.Request) -> httpx.Response:
        old = self._refresh_token_of(request)
        if old not in self.refresh_tokens:
            return _token_not_valid()
        username = self.refresh_tokens[old]
        answer = {"access": self.access_token(username)}
        if self.rotate_refresh_tokens:
            del self.refresh_tokens[old]
            answer["refresh"] = self.issue_refresh_token(username)
        return httpx.Response(200, json=answer)

    def _blacklist(self, request: httpx.Request) -> httpx.Response:
        token = self._refresh_token_of(request)
        if self.refresh_tokens.pop(token, None) is None:
            return _token_not_valid()
        self.blacklisted.append(token)
        return httpx.Response(200, json={})

    def _me(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            # Times are checked against the fake's clock, not PyJWT's.
            claims = jwt.decode(
                token, TOKEN_API_KEY, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False}
            )
        except jwt.PyJWTError:
            return _token_not_valid()
        if claims["exp"] <= self.clock():
            return _token_not_valid()
        return httpx.Response(200, json={"id": claims["user_id"], "username": claims["username"]})

    def _refresh_token_of(self, request: httpx.Request) -> str:
        authorization = str(request.headers.get("authorization", ""))
        if authorization.startswith("Bearer "):
            return authorization.removeprefix("Bearer ")
        if request.headers.get("content-type", "").startswith("application/json"):
            body = json.loads(request.content)
            return str(body.get(self.param, "")) if isinstance(body, dict) else ""
        return FakeIdP._form(request).get(self.param, "")

    def _new(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}-{self._serial}-{secrets.token_hex(4)}"


def _token_not_valid() -> httpx.Response:
    return httpx.Response(401, json={"detail": "Token is invalid or expired", "code": "token_not_valid"})


class Clock:
    """An injectable clock: `clock()` is now, `clock.advance(s)` moves it."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeBearer:
    """A bearer source that hands out `stale` first and `fresh` after a rejection, each with
    `set_cookies` (a session that changed on the way, as cookie mode's does after a refresh)."""

    def __init__(
        self,
        *,
        first: str | None = "stale",
        after: str | None = "fresh",
        error: Exception | None = None,
        set_cookies: Sequence[str] = (),
        dpop_key: str | None = None,
    ) -> None:
        """With `dpop_key` (a private JWK) the tokens are DPoP-bound to it."""
        self.first = first
        self.after = after
        self.error = error
        self.set_cookies = tuple(set_cookies)
        self.dpop_key = dpop_key
        self.calls: list[str] = []
        self.rejected: list[str] = []

    async def bearer(self, route: RouteSettings, headers: Sequence[tuple[bytes, bytes]]) -> Bearer | None:
        del headers  # BearerSource's signature: the fake answers the same whatever the request carries
        self.calls.append(route.path)
        if self.error is not None:
            raise self.error
        return None if self.first is None else self._bearer(self.first)

    async def bearer_after_rejection(self, route: RouteSettings, rejected: Bearer) -> Bearer | None:
        del route  # BearerSource's signature: the fake answers the same on every route
        self.rejected.append(rejected.token)
        return None if self.after is None else self._bearer(self.after)

    def _bearer(self, token: str) -> Bearer:
        if self.dpop_key is None:
            return Bearer(token, self.set_cookies)
        return Bearer(token, self.set_cookies, token_type="DPoP", dpop_key=self.dpop_key)


# -- stores -----------------------------------------------------------------------------------


class HookedStore(MemoryStore):
    """A memory store that calls `before(operation)` ahead of each call but `open` and `close`
    (`operation` is the method's name: "get", "set", "replace", ..., "lock"): the one place the
    stores below count or refuse calls, with the Store's signatures written once."""

    def before(self, operation: str, /) -> None:
        """Runs ahead of `operation`; raises to refuse it. Default: nothing."""

    async def ping(self) -> None:
        self.before("ping")
        await super().ping()

    def version(self) -> int | None:
        try:
            self.before("version")
        except StoreUnavailable:
            return None  # as a store that cannot tell says
        return super().version()

    async def get(self, key: str) -> bytes | None:
        self.before("get")
        return await super().get(key)

    async def set(self, key: str, value: bytes, ttl: float, *, sub: str | None = None, sid: str | None = None) -> None:
        self.before("set")
        await super().set(key, value, ttl, sub=sub, sid=sid)

    async def replace(
        self,
        key: str,
        value: bytes,
        ttl: float,
        *,
        sub: str | None = None,
        sid: str | None = None,
        expected: bytes | None = None,
    ) -> bool:
        self.before("replace")
        return await super().replace(key, value, ttl, sub=sub, sid=sid, expected=expected)

    async def delete(self, key: str) -> bool:
        self.before("delete")
        return await super().delete(key)

    async def keys_where(self, *, sub: str | None = None, sid: str | None = None) -> list[str]:
        self.before("keys_where")
        return await super().keys_where(sub=sub, sid=sid)

    async def indexed_keys(self) -> list[str]:
        self.before("indexed_keys")
        return await super().indexed_keys()

    async def add_if_absent(self, key: str, value: bytes, ttl: float) -> bool:
        self.before("add_if_absent")
        return await super().add_if_absent(key, value, ttl)

    def lock(self, name: str, *, ttl: float, wait: float) -> AbstractAsyncContextManager[None]:
        return self._hooked_lock(name, ttl, wait)

    @contextlib.asynccontextmanager
    async def _hooked_lock(self, name: str, ttl: float, wait: float) -> AsyncIterator[None]:
        self.before("lock")  # on entering, where a real store's lock would fail
        async with super().lock(name, ttl=ttl, wait=wait):
            yield


class CountingStore(HookedStore):
    """A memory store that counts writes, and can serve one stale read."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.stale: dict[str, bytes] = {}

    def before(self, operation: str) -> None:
        if operation in ("set", "replace"):
            self.writes += 1

    def version(self) -> int | None:
        # A stale read is one that raced a write: the version it was read at is unknown.
        return None if self.stale else super().version()

    async def get(self, key: str) -> bytes | None:
        if key in self.stale:
            return self.stale.pop(key)
        return await super().get(key)


class ReadOnlyStore(HookedStore):
    """A store whose writes fail, as a locked SQLite file or a Redis failover would."""

    def before(self, operation: str) -> None:
        if operation == "replace":
            raise StoreUnavailable("read-only")


class UnreadableStore(HookedStore):
    """A memory store whose reads fail."""

    def before(self, operation: str) -> None:
        if operation == "get":
            raise StoreUnavailable("down")


class DownStore(HookedStore):
    """A store that is down: once `down` (the default), every call but `open` and `close` raises
    `StoreUnavailable(message)`, as an unreachable Redis or SQLite file would. Opened and closed
    like any store, so an app's lifespan starts with it."""

    def __init__(self, *, down: bool = True, message: str = "store down") -> None:
        super().__init__()
        self.down = down
        self.message = message

    def before(self, _operation: str, /) -> None:  # refuses them all alike
        if self.down:
            raise StoreUnavailable(self.message)


def holding(refresh_token: str) -> TokenSet:
    """A session's tokens holding `refresh_token` (what `LoginSource.refresh` is handed)."""
    return TokenSet(access_token="at-0", refresh_token=refresh_token)
