"""DevIdentityProvider: the in-memory OpenID provider of `bff demo`. DEVELOPMENT ONLY, NOT FOR PRODUCTION.

There are no passwords: the login page lets anyone sign in as any name. Everything lives in this
process's memory and is gone at a restart, signing key included. It exists so that a newcomer can
watch the BFF log in, refresh and log out against something real, with nothing else installed.

What it does, relative to the issuer URL (the app is mounted there, e.g. at `/idp`):

    GET  /.well-known/openid-configuration   discovery
    GET  /authorize                          code flow only; PKCE S256, `state` and `nonce` required
    POST /authorize                          the login form: issues the code, redirects back
    POST /token                              authorization_code (PKCE checked), refresh_token (rotation;
                                             reusing a rotated token revokes the whole grant),
                                             client_credentials; client_secret_basic or _post
    GET  /jwks                               the RS256 key made at start
    GET|POST /userinfo                       claims for a bearer access token
    POST /revoke                             RFC 7009; a refresh token revokes its whole grant
    GET|POST /end-session                    RP-initiated logout: ends the session named by
                                             `id_token_hint` (or, without one, this browser's, from
                                             the provider's cookie) and sends back-channel logout
                                             tokens to the clients that had grants in it

Access tokens are JWTs (`typ: at+jwt`) for one API audience, with `sub`, `sid`, `name`,
`client_id`, `scope`, `exp` = now + `access_ttl`. Refresh responses carry no new ID token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

import httpx
import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bff.demo.keys import ALGORITHM, SigningKey
from bff.demo.pages import login_page, message_page

log = logging.getLogger("bff.demo.idp")

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
DEFAULT_USERS = ("alice", "bob", "carol")
SESSION_COOKIE = "dev_idp_session"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
Form = Mapping[str, list[str]]  # a parsed urlencoded body: name → values
_PKCE_VALUE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636 §4.1: unreserved characters


@dataclass(frozen=True)
class DemoClient:
    """A client registration. The BFF is one; tests may add others."""

    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    backchannel_logout_uri: str | None = None


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, error: str, description: str, status_code: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status_code = status_code

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.error == "invalid_client":
            headers["WWW-Authenticate"] = 'Basic realm="dev-idp"'
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status_code, headers=headers)


@dataclass
class _Transaction:
    """An authorization request waiting for the login form."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str
    nonce: str
    code_challenge: str
    expires_at: float


@dataclass
class _Session:
    """The provider's login session: one per sign-in, named by `sid` in every token."""

    sid: str
    sub: str
    name: str
    auth_time: int


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    code_challenge: str
    nonce: str
    sid: str
    scope: str
    expires_at: float
    grant_id: str | None = None  # set once exchanged: a second exchange revokes this grant


@dataclass
class _Grant:
    """What a code exchange starts: a family of refresh tokens of one client and session."""

    grant_id: str
    client_id: str
    sid: str
    sub: str
    name: str
    scope: str
    refresh_digests: set[str] = field(default_factory=set)
    revoked: bool = False


@dataclass
class _RefreshToken:
    grant_id: str
    expires_at: float
    rotated: bool = False


class DevIdentityProvider:
    """An in-memory OpenID provider; `app()` is its Starlette app, to be mounted at the issuer's path.

    `clock` is injectable so that tests can advance time; `backchannel_transport` lets tests
    receive the back-channel logout calls in-process.
    """

    def __init__(
        self,
        *,
        issuer: str,
        clients: Sequence[DemoClient],
        api_audience: str,
        access_ttl: float = 60,
        id_token_ttl: float = 600,
        refresh_ttl: float = 86400,
        code_ttl: float = 60,
        login_ttl: float = 600,
        users: Sequence[str] = DEFAULT_USERS,
        clock: Callable[[], float] = time.time,
        backchannel_transport: httpx.AsyncBaseTransport | None = None,
        key: SigningKey | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self._cookie_path = urlsplit(self.issuer).path or "/"
        self.api_audience = api_audience
        self.access_ttl = access_ttl
        self.key = key or SigningKey.generate()
        self._clients = {client.client_id: client for client in clients}
        self._id_token_ttl = id_token_ttl
        self._refresh_ttl = refresh_ttl
        self._code_ttl = code_ttl
        self._login_ttl = login_ttl
        self._users = tuple(users)
        self._clock = clock
        self._backchannel_transport = backchannel_transport
        self._transactions: dict[str, _Transaction] = {}
        self._sessions: dict[str, _Session] = {}
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, _Grant] = {}
        self._refresh_tokens: dict[str, _RefreshToken] = {}
        self._revoked_jtis: dict[str, float] = {}

    # -- wiring ------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/.well-known/openid-configuration", self._discovery, methods=["GET"]),
            Route("/authorize", self._authorize, methods=["GET"]),
            Route("/authorize", self._login, methods=["POST"]),
            Route("/token", self._token, methods=["POST"]),
            Route("/jwks", self._jwks, methods=["GET"]),
            Route("/userinfo", self._userinfo, methods=["GET", "POST"]),
            Route("/revoke", self._revoke, methods=["POST"]),
            Route("/end-session", self._end_session, methods=["GET", "POST"]),
        ]

    def app(self) -> Starlette:
        return Starlette(routes=self.routes())

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "revocation_endpoint": f"{self.issuer}/revoke",
            "end_session_endpoint": f"{self.issuer}/end-session",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "subject_types_supported": ["public"],
            "scopes_supported": ["openid", "profile", "offline_access"],
            "claims_supported": ["sub", "name", "preferred_username", "sid", "auth_time", "nonce"],
            "authorization_response_iss_parameter_supported": True,
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
        }

    # -- operations tests and the demo may call directly ---------------------------------------

    async def end_session(self, sid: str) -> None:
        """End a login session: revoke its grants and tell each client by back-channel logout."""
        session = self._sessions.pop(sid, None)
        if session is None:
            return
        grants = [grant for grant in self._grants.values() if grant.sid == sid]
        for grant in grants:
            self._revoke_grant(grant)
        log.info("Session ended. sub: '%s', sid: '%s'", session.sub, sid)
        for client_id in sorted({grant.client_id for grant in grants}):
            client = self._clients.get(client_id)
            if client is not None and client.backchannel_logout_uri:
                await self._send_backchannel_logout(client, session)

    def grant_is_active(self, sid: str) -> bool:
        """Whether the session `sid` still has a grant that is not revoked."""
        return any(grant.sid == sid and not grant.revoked for grant in self._grants.values())

    # -- endpoints -----------------------------------------------------------------------------

    async def _discovery(self, request: Request) -> Response:
        return JSONResponse(self.metadata())

    async def _jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.public_jwk()]}, headers={"Cache-Control": "max-age=300"})

    async def _authorize(self, request: Request) -> Response:
        params = request.query_params
        client = self._clients.get(params.get("client_id", ""))
        if client is None:
            return message_page("Sign-in failed", "Unknown client_id.", status_code=400)
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            # RFC 6749 §4.1.2.1: never redirect to an unregistered URI.
            return message_page("Sign-in failed", "redirect_uri is not registered for this client.", status_code=400)
        state = params.get("state", "")

        def fail(error: str, description: str) -> Response:
            query = {"error": error, "error_description": description, "state": state, "iss": self.issuer}
            return RedirectResponse(_with_query(redirect_uri, query), status_code=303)

        if params.get("response_type") != "code":
            return fail("unsupported_response_type", "only response_type=code is supported")
        scope = params.get("scope", "")
        if "openid" not in scope.split():
            return fail("invalid_scope", "scope must include openid")
        challenge = params.get("code_challenge", "")
        if params.get("code_challenge_method") != "S256" or not _PKCE_VALUE.match(challenge):
            return fail("invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256")
        if not state:
            return fail("invalid_request", "state is required")
        nonce = params.get("nonce", "")
        if not nonce:
            return fail("invalid_request", "nonce is required")
        if params.get("prompt") == "none":
            return fail("login_required", "this provider keeps no login session between sign-ins")
        now = self._clock()
        self._purge(now)
        transaction = secrets.token_urlsafe(16)
        self._transactions[transaction] = _Transaction(
            client.client_id, redirect_uri, scope, state, nonce, challenge, now + self._login_ttl
        )
        return login_page(transaction=transaction, client_id=client.client_id, users=self._users)

    async def _login(self, request: Request) -> Response:
        form = await _read_form(request)
        transaction_id = _field(form, "transaction") or ""
        username = (_field(form, "username") or "").strip()
        now = self._clock()
        transaction = self._transactions.get(transaction_id)
        if transaction is None or transaction.expires_at <= now:
            text = "This sign-in has expired or was already used. Start again from the application."
            return message_page("Sign-in expired", text, status_code=400)
        if not username or len(username) > 64 or not username.isprintable():
            error = "Type a name of 1 to 64 printable characters."
            return login_page(
                transaction=transaction_id, client_id=transaction.client_id, users=self._users, error=error
            )
        del self._transactions[transaction_id]
        session = _Session(secrets.token_urlsafe(16), username, username, int(now))
        self._sessions[session.sid] = session
        code = secrets.token_urlsafe(32)
        self._codes[_digest(code)] = _Code(
            transaction.client_id,
            transaction.redirect_uri,
            transaction.code_challenge,
            transaction.nonce,
            session.sid,
            transaction.scope,
            now + self._code_ttl,
        )
        log.info("Signed in. sub: '%s', sid: '%s'", session.sub, session.sid)
        query = {"code": code, "state": transaction.state, "iss": self.issuer}
        response = RedirectResponse(_with_query(transaction.redirect_uri, query), status_code=303)
        # Only end-session reads this cookie (to find the browser's session when the client sends
        # no id_token_hint); there is no single sign-on: every authorization shows the login page.
        response.set_cookie(
            SESSION_COOKIE,
            session.sid,
            path=self._cookie_path,
            httponly=True,
            samesite="lax",
            secure=self.issuer.startswith("https://"),
        )
        return response

    async def _token(self, request: Request) -> Response:
        form = await _read_form(request)
        try:
            client = self._authenticate_client(request, form)
            grant_type = _field(form, "grant_type")
            self._purge(self._clock())
            if grant_type == "authorization_code":
                body = self._exchange_code(client, form)
            elif grant_type == "refresh_token":
                body = self._refresh(client, form)
            elif grant_type == "client_credentials":
                body = self._client_credentials(client, form)
            else:
                raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
        except OAuthError as exc:
            return exc.response()
        return JSONResponse(body, headers=_NO_STORE)

    async def _userinfo(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer" or not token:
                raise jwt.InvalidTokenError("no bearer token")
            claims = self.key.verify(token, issuer=self.issuer)
            if claims.get("jti") in self._revoked_jtis or claims.get("sid") not in self._sessions:
                raise jwt.InvalidTokenError("token revoked or its session ended")
        except jwt.InvalidTokenError:
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return JSONResponse({"sub": claims["sub"], "name": claims.get("name"), "preferred_username": claims["sub"]})

    async def _revoke(self, request: Request) -> Response:
        form = await _read_form(request)
        try:
            client = self._authenticate_client(request, form)
            token = _required(form, "token")
        except OAuthError as exc:
            return exc.response()
        record = self._refresh_tokens.get(_digest(token))
        if record is not None:
            grant = self._grants.get(record.grant_id)
            if grant is not None and grant.client_id == client.client_id:
                self._revoke_grant(grant)
                log.info("Grant revoked by its client. sub: '%s', sid: '%s'", grant.sub, grant.sid)
        else:
            try:
                claims = self.key.verify(token, issuer=self.issuer)
            except jwt.InvalidTokenError:
                claims = {}
            if claims.get("client_id") == client.client_id and "jti" in claims:
                self._revoked_jtis[claims["jti"]] = float(claims["exp"])
        # RFC 7009 §2.2: 200 whether or not the token was known.
        return Response(status_code=200, headers=_NO_STORE)

    async def _end_session(self, request: Request) -> Response:
        params: Mapping[str, str] = dict(request.query_params)
        if request.method == "POST":
            params = {key: values[0] for key, values in (await _read_form(request)).items()}
        hint = params.get("id_token_hint")
        redirect_uri = params.get("post_logout_redirect_uri")
        claims: dict[str, Any] = {}
        if hint:
            try:
                # An expired ID token still names the session to end (RP-Initiated Logout §2).
                claims = self.key.verify(hint, verify_exp=False, issuer=self.issuer)
            except jwt.InvalidTokenError:
                return message_page(
                    "Sign-out failed", "id_token_hint is not an ID token of this provider.", status_code=400
                )
        audience = claims.get("aud")
        client_id = audience[0] if isinstance(audience, list) and audience else audience
        client = self._clients.get(str(client_id or params.get("client_id", "")))
        if redirect_uri and (client is None or redirect_uri not in client.post_logout_redirect_uris):
            return message_page("Sign-out failed", "post_logout_redirect_uri is not registered.", status_code=400)
        # The session to end: the one the hint names, else this browser's own (the provider's cookie).
        sid = claims.get("sid") if hint else request.cookies.get(SESSION_COOKIE)
        ended = isinstance(sid, str) and sid in self._sessions
        if isinstance(sid, str):
            await self.end_session(sid)
        response: Response
        if redirect_uri:
            state = params.get("state")
            response = RedirectResponse(_with_query(redirect_uri, {"state": state} if state else {}), status_code=303)
        elif ended:
            response = message_page("Signed out", "You are signed out of the development identity provider.")
        else:
            response = message_page("Nothing to sign out", "This browser has no session here; nothing was ended.")
        response.delete_cookie(SESSION_COOKIE, path=self._cookie_path, httponly=True, samesite="lax")
        return response

    # -- grants ----------------------------------------------------------------------------------

    def _exchange_code(self, client: DemoClient, form: Form) -> dict[str, Any]:
        code = self._codes.get(_digest(_required(form, "code")))
        redirect_uri = _required(form, "redirect_uri")
        verifier = _required(form, "code_verifier")
        if code is None:
            raise OAuthError("invalid_grant", "unknown or expired authorization code")
        if code.grant_id is not None:
            # RFC 6749 §4.1.2: a code used twice revokes what it was exchanged for.
            grant = self._grants.get(code.grant_id)
            if grant is not None:
                self._revoke_grant(grant)
            raise OAuthError("invalid_grant", "authorization code was already used; its grant is revoked")
        session = self._sessions.get(code.sid)
        if code.client_id != client.client_id or session is None or code.expires_at <= self._clock():
            raise OAuthError("invalid_grant", "authorization code is not valid for this client")
        if redirect_uri != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        grant = _Grant(secrets.token_urlsafe(12), client.client_id, session.sid, session.sub, session.name, code.scope)
        code.grant_id = grant.grant_id  # used, whatever the PKCE check says
        self._grants[grant.grant_id] = grant
        if not _PKCE_VALUE.match(verifier) or not hmac.compare_digest(_s256(verifier), code.code_challenge):
            self._revoke_grant(grant)
            raise OAuthError("invalid_grant", "PKCE verification failed: code_verifier does not match code_challenge")
        body = self._issue(grant)
        body["id_token"] = self._id_token(grant, session, nonce=code.nonce)
        return body

    def _refresh(self, client: DemoClient, form: Form) -> dict[str, Any]:
        record = self._refresh_tokens.get(_digest(_required(form, "refresh_token")))
        grant = self._grants.get(record.grant_id) if record is not None else None
        if record is None or grant is None or grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "unknown refresh token")
        if grant.revoked:
            raise OAuthError("invalid_grant", "the grant of this refresh token was revoked")
        if record.rotated:
            # Reuse of a rotated token means two parties hold it: end the whole family
            # (OAuth 2.0 Security BCP, RFC 9700 §4.14.2).
            self._revoke_grant(grant)
            log.warning("Refresh token reuse; grant revoked. sub: '%s', sid: '%s'", grant.sub, grant.sid)
            raise OAuthError("invalid_grant", "refresh token was already used; its grant is revoked")
        if record.expires_at <= self._clock():
            raise OAuthError("invalid_grant", "refresh token expired")
        requested = (_field(form, "scope") or grant.scope).split()
        if not set(requested) <= set(grant.scope.split()):
            raise OAuthError("invalid_scope", "a refresh cannot widen the granted scope")
        record.rotated = True
        return self._issue(grant, scope=" ".join(requested))

    def _client_credentials(self, client: DemoClient, form: Form) -> dict[str, Any]:
        now = int(self._clock())
        scope = _field(form, "scope") or ""
        claims = {
            "iss": self.issuer,
            "sub": client.client_id,
            "aud": self.api_audience,
            "iat": now,
            "exp": now + int(self.access_ttl),
            "jti": secrets.token_urlsafe(12),
            "client_id": client.client_id,
            "scope": scope,
        }
        token = self.key.sign(claims, typ="at+jwt")
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(self.access_ttl), "scope": scope}

    def _issue(self, grant: _Grant, *, scope: str | None = None) -> dict[str, Any]:
        now = self._clock()
        issued_at = int(now)
        scope = grant.scope if scope is None else scope
        claims = {
            "iss": self.issuer,
            "sub": grant.sub,
            "aud": self.api_audience,
            "iat": issued_at,
            "exp": issued_at + int(self.access_ttl),
            "jti": secrets.token_urlsafe(12),
            "client_id": grant.client_id,
            "sid": grant.sid,
            "scope": scope,
            "name": grant.name,
        }
        refresh_token = secrets.token_urlsafe(32)
        digest = _digest(refresh_token)
        self._refresh_tokens[digest] = _RefreshToken(grant.grant_id, now + self._refresh_ttl)
        grant.refresh_digests.add(digest)
        return {
            "access_token": self.key.sign(claims, typ="at+jwt"),
            "token_type": "Bearer",
            "expires_in": int(self.access_ttl),
            "refresh_token": refresh_token,
            "scope": scope,
        }

    def _id_token(self, grant: _Grant, session: _Session, *, nonce: str) -> str:
        issued_at = int(self._clock())
        claims = {
            "iss": self.issuer,
            "sub": grant.sub,
            "aud": grant.client_id,
            "azp": grant.client_id,
            "iat": issued_at,
            "exp": issued_at + int(self._id_token_ttl),
            "auth_time": session.auth_time,
            "nonce": nonce,
            "sid": session.sid,
            "name": session.name,
            "preferred_username": session.sub,
        }
        return self.key.sign(claims)

    def _revoke_grant(self, grant: _Grant) -> None:
        grant.revoked = True
        for digest in grant.refresh_digests:
            self._refresh_tokens.pop(digest, None)
        grant.refresh_digests.clear()

    def _authenticate_client(self, request: Request, form: Form) -> DemoClient:
        """client_secret_basic or client_secret_post, exactly one of them (RFC 6749 §2.3)."""
        authorization = request.headers.get("authorization", "")
        if authorization[:6].lower() == "basic ":
            if "client_secret" in form:
                raise OAuthError("invalid_request", "use one client authentication method, not two")
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
            raw_id, _, raw_secret = decoded.partition(":")
            # RFC 6749 §2.3.1: both parts are form-urlencoded before the Basic encoding.
            client_id, secret = unquote(raw_id.replace("+", " ")), unquote(raw_secret.replace("+", " "))
        else:
            client_id, secret = _field(form, "client_id") or "", _field(form, "client_secret") or ""
        client = self._clients.get(client_id)
        if client is None or not secret or not hmac.compare_digest(secret.encode(), client.client_secret.encode()):
            raise OAuthError("invalid_client", "client authentication failed", 401)
        return client

    async def _send_backchannel_logout(self, client: DemoClient, session: _Session) -> None:
        assert client.backchannel_logout_uri is not None
        issued_at = int(self._clock())
        token = self.key.sign(
            {
                "iss": self.issuer,
                "aud": client.client_id,
                "iat": issued_at,
                "exp": issued_at + 120,
                "jti": secrets.token_urlsafe(12),
                "sub": session.sub,
                "sid": session.sid,
                "events": {BACKCHANNEL_EVENT: {}},
            },
            typ="logout+jwt",
        )
        try:
            async with httpx.AsyncClient(transport=self._backchannel_transport, timeout=5) as http:
                response = await http.post(client.backchannel_logout_uri, data={"logout_token": token})
        except httpx.HTTPError as exc:
            log.warning("Back-channel logout failed. client: '%s', error: %s", client.client_id, type(exc).__name__)
            return
        log.info("Back-channel logout sent. client: '%s', status: %d", client.client_id, response.status_code)

    def _purge(self, now: float) -> None:
        for table in (self._transactions, self._codes, self._refresh_tokens):
            for key in [key for key, item in table.items() if item.expires_at <= now - self._code_ttl]:
                del table[key]
        for jti in [jti for jti, exp in self._revoked_jtis.items() if exp <= now]:
            del self._revoked_jtis[jti]


async def _read_form(request: Request) -> Form:
    """An `application/x-www-form-urlencoded` body (RFC 6749 §3.2); anything else reads as empty.
    Parsed here rather than by `request.form()`, which needs python-multipart."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return {}
    try:
        return parse_qs((await request.body()).decode(), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        return {}


def _field(form: Form, name: str) -> str | None:
    values = form.get(name, [])
    if len(values) > 1:
        raise OAuthError("invalid_request", f"parameter {name!r} appears more than once")
    return values[0] if values else None


def _required(form: Form, name: str) -> str:
    value = _field(form, name)
    if not value:
        raise OAuthError("invalid_request", f"parameter {name!r} is required")
    return value


def _digest(token: str) -> str:
    # Tokens are kept by hash only, so a dump of this provider's memory holds none.
    return hashlib.sha256(token.encode()).hexdigest()


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, urlencode(params)) if part)
    return urlunsplit(parts._replace(query=query))


__all__ = ["BACKCHANNEL_EVENT", "DemoClient", "DevIdentityProvider", "OAuthError"]
