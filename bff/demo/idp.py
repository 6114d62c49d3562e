"""DevIdentityProvider: the in-memory OpenID provider of `bff demo`. DEVELOPMENT ONLY, NOT FOR PRODUCTION.

There are no passwords: the login page lets anyone sign in as any name. Everything lives in this
process's memory (`bff demo` saves a snapshot at shutdown, see `run.py`). It exists so that a
newcomer can watch the BFF log in, refresh and log out against something real, with nothing else
installed.

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
This module is the endpoints; `grants.py` keeps the sessions, codes, grants and tokens, `oauth.py`
the client registrations and the OAuth wire format (client authentication, forms, errors),
`backchannel.py` the logout tokens it sends.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bff.demo import oauth
from bff.demo.authorize import AuthorizationRefused, Transaction, check_authorization_request
from bff.demo.backchannel import send_backchannel_logout
from bff.demo.grants import GrantBook
from bff.demo.keys import ALGORITHM, SigningKey, TokenMinter
from bff.demo.oauth import DemoClient, OAuthError
from bff.demo.pages import login_page, message_page

DEFAULT_USERS = ("alice", "bob", "carol")
SESSION_COOKIE = "dev_idp_session"


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
        self.key = key or SigningKey.generate()
        minter = TokenMinter(
            self.key,
            issuer=self.issuer,
            api_audience=api_audience,
            access_ttl=access_ttl,
            id_token_ttl=id_token_ttl,
            clock=clock,
        )
        self.grants = GrantBook(
            minter=minter,
            refresh_ttl=refresh_ttl,
            code_ttl=code_ttl,
            clock=clock,
        )
        self._clients = {client.client_id: client for client in clients}
        self._cookie_path = urlsplit(self.issuer).path or "/"
        self._login_ttl = login_ttl
        self._users = tuple(users)
        self._clock = clock
        self._backchannel_transport = backchannel_transport
        self._transactions: dict[str, Transaction] = {}

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
        return oauth.discovery_document(self.issuer, algorithm=ALGORITHM)

    async def end_session(self, sid: str) -> bool:
        """End a login session: revoke its grants and tell each client by back-channel logout.
        False when there was no such session."""
        ended = self.grants.end_session(sid)
        if ended is None:
            return False
        session, client_ids = ended
        for client_id in client_ids:
            client = self._clients.get(client_id)
            if client is not None and client.backchannel_logout_uri:
                await send_backchannel_logout(
                    client,
                    session,
                    issuer=self.issuer,
                    key=self.key,
                    now=self._clock(),
                    transport=self._backchannel_transport,
                )
        return True

    def grant_is_active(self, sid: str) -> bool:
        """Whether the session `sid` still has a grant that is not revoked."""
        return self.grants.grant_is_active(sid)

    # -- endpoints -----------------------------------------------------------------------------

    async def _discovery(self, _request: Request) -> Response:
        return JSONResponse(self.metadata())

    async def _jwks(self, _request: Request) -> Response:
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
        try:
            asked = check_authorization_request(params)
        except AuthorizationRefused as refused:
            # RFC 6749 §4.1.2.1: errors go back to the (registered) redirect URI.
            query = {"error": refused.error, "error_description": refused.description, "state": state}
            return RedirectResponse(oauth.with_query(redirect_uri, {**query, "iss": self.issuer}), status_code=303)
        now = self._clock()
        for stale in [key for key, item in self._transactions.items() if item.expires_at <= now]:
            del self._transactions[stale]
        transaction = secrets.token_urlsafe(16)
        self._transactions[transaction] = Transaction(
            client.client_id,
            redirect_uri,
            asked.scope,
            asked.state,
            asked.nonce,
            asked.code_challenge,
            now + self._login_ttl,
        )
        return login_page(transaction=transaction, client_id=client.client_id, users=self._users)

    async def _login(self, request: Request) -> Response:
        form = await oauth.read_form(request)
        transaction_id = oauth.first_value(form, "transaction")
        username = oauth.first_value(form, "username").strip()
        transaction = self._transactions.get(transaction_id)
        if transaction is None or transaction.expires_at <= self._clock():
            text = "This sign-in has expired or was already used. Start again from the application."
            return message_page("Sign-in expired", text, status_code=400)
        if not username or len(username) > 64 or not username.isprintable():
            error = "Type a name of 1 to 64 printable characters."
            return login_page(
                transaction=transaction_id, client_id=transaction.client_id, users=self._users, error=error
            )
        del self._transactions[transaction_id]
        session = self.grants.sign_in(username)
        code = self.grants.issue_code(
            session,
            client_id=transaction.client_id,
            redirect_uri=transaction.redirect_uri,
            code_challenge=transaction.code_challenge,
            nonce=transaction.nonce,
            scope=transaction.scope,
        )
        query = {"code": code, "state": transaction.state, "iss": self.issuer}
        response = RedirectResponse(oauth.with_query(transaction.redirect_uri, query), status_code=303)
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
        form = await oauth.read_form(request)
        try:
            client = oauth.authenticate_client(self._clients, request, form)
            grant_type = oauth.form_field(form, "grant_type")
            if grant_type == "authorization_code":
                body = self.grants.exchange_code(
                    client.client_id,
                    oauth.required_field(form, "code"),
                    oauth.required_field(form, "redirect_uri"),
                    oauth.required_field(form, "code_verifier"),
                )
            elif grant_type == "refresh_token":
                body = self.grants.refresh(
                    client.client_id, oauth.required_field(form, "refresh_token"), oauth.form_field(form, "scope")
                )
            elif grant_type == "client_credentials":
                body = self.grants.client_credentials(client.client_id, oauth.form_field(form, "scope") or "")
            else:
                raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
        except OAuthError as exc:
            return oauth.error_response(exc)
        return JSONResponse(body, headers=oauth.NO_STORE)

    async def _userinfo(self, request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        claims = self.grants.verify_access_token(token) if scheme.lower() == "bearer" and token else None
        if claims is None or self.grants.session(claims.get("sid")) is None:
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return JSONResponse({"sub": claims["sub"], "name": claims.get("name"), "preferred_username": claims["sub"]})

    async def _revoke(self, request: Request) -> Response:
        form = await oauth.read_form(request)
        try:
            client = oauth.authenticate_client(self._clients, request, form)
            self.grants.revoke_token(client.client_id, oauth.required_field(form, "token"))
        except OAuthError as exc:
            return oauth.error_response(exc)
        # RFC 7009 §2.2: 200 whether or not the token was known.
        return Response(status_code=200, headers=oauth.NO_STORE)

    async def _end_session(self, request: Request) -> Response:
        params: Mapping[str, str] = dict(request.query_params)
        if request.method == "POST":
            params = {key: values[0] for key, values in (await oauth.read_form(request)).items()}
        hint = params.get("id_token_hint")
        redirect_uri = params.get("post_logout_redirect_uri")
        claims: dict[str, Any] = {}
        if hint:
            try:
                # An expired ID token still names the session to end (RP-Initiated Logout §2).
                claims = self.key.verify(hint, verify_exp=False, issuer=self.issuer)
            except jwt.InvalidTokenError:
                text = "id_token_hint is not an ID token of this provider."
                return message_page("Sign-out failed", text, status_code=400)
        audience = claims.get("aud")
        client_id = audience[0] if isinstance(audience, list) and audience else audience
        client = self._clients.get(str(client_id or params.get("client_id", "")))
        if redirect_uri and (client is None or redirect_uri not in client.post_logout_redirect_uris):
            return message_page("Sign-out failed", "post_logout_redirect_uri is not registered.", status_code=400)
        # The session to end: the one the hint names, else this browser's own (the provider's cookie).
        sid = claims.get("sid") if hint else request.cookies.get(SESSION_COOKIE)
        ended = isinstance(sid, str) and await self.end_session(sid)
        response: Response
        if redirect_uri:
            state = params.get("state")
            response = RedirectResponse(
                oauth.with_query(redirect_uri, {"state": state} if state else {}), status_code=303
            )
        elif ended:
            response = message_page("Signed out", "You are signed out of the development identity provider.")
        else:
            response = message_page("Nothing to sign out", "This browser has no session here; nothing was ended.")
        response.delete_cookie(SESSION_COOKIE, path=self._cookie_path, httponly=True, samesite="lax")
        return response


__all__ = ["DEFAULT_USERS", "SESSION_COOKIE", "DevIdentityProvider"]
