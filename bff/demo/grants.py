"""GrantBook: the development provider's memory of login sessions, codes, grants and refresh
tokens, and the JWTs it signs for them. DEVELOPMENT ONLY. No HTTP here: `idp.py` is the endpoints.

    login session (sid) ──< code ── exchanged once ──> grant ──< refresh tokens (one live, the
                                                                 rotated ones kept to spot reuse)

A grant is revoked, and every refresh token of it dropped, when: its code is exchanged a second
time, a rotated refresh token comes back (reuse), its client revokes a refresh token of it, or
its login session ends. Tokens are kept by SHA-256 only, also in the snapshot that `bff demo`
writes at shutdown and reads at start (`snapshot`/`restore`), so that a restart keeps sessions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import jwt

from bff.demo.authorize import PKCE_VALUE
from bff.demo.keys import TokenMinter
from bff.demo.oauth import OAuthError

__all__ = ["SNAPSHOT_VERSION", "GrantBook", "LoginSession", "s256"]

log = logging.getLogger("bff.demo.idp")

SNAPSHOT_VERSION = 1


@dataclass
class LoginSession:
    """One sign-in at the provider, named by `sid` in every token issued under it."""

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


class GrantBook:
    def __init__(
        self,
        *,
        minter: TokenMinter,
        refresh_ttl: float,
        code_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._minter = minter
        self._refresh_ttl = refresh_ttl
        self._code_ttl = code_ttl
        self._clock = clock
        self._sessions: dict[str, LoginSession] = {}
        self._codes: dict[str, _Code] = {}
        self._grants: dict[str, _Grant] = {}
        self._refresh_tokens: dict[str, _RefreshToken] = {}
        self._revoked_jtis: dict[str, float] = {}

    # -- sign-in and sign-out -----------------------------------------------------------------

    def sign_in(self, username: str) -> LoginSession:
        session = LoginSession(secrets.token_urlsafe(16), username, username, int(self._clock()))
        self._sessions[session.sid] = session
        log.info("Signed in. sub: '%s', sid: '%s'", session.sub, session.sid)
        return session

    def issue_code(
        self, session: LoginSession, *, client_id: str, redirect_uri: str, code_challenge: str, nonce: str, scope: str
    ) -> str:
        code = secrets.token_urlsafe(32)
        expires_at = self._clock() + self._code_ttl
        self._codes[_digest(code)] = _Code(
            client_id, redirect_uri, code_challenge, nonce, session.sid, scope, expires_at
        )
        return code

    def end_session(self, sid: str) -> tuple[LoginSession, list[str]] | None:
        """Forget the login session and revoke its grants; the session and the ids of the clients
        that had grants in it (to be told by back-channel logout), or None if it is unknown."""
        session = self._sessions.pop(sid, None)
        if session is None:
            return None
        grants = [grant for grant in self._grants.values() if grant.sid == sid]
        for grant in grants:
            self._revoke(grant)
        log.info("Session ended. sub: '%s', sid: '%s'", session.sub, sid)
        return session, sorted({grant.client_id for grant in grants})

    def session(self, sid: object) -> LoginSession | None:
        return self._sessions.get(sid) if isinstance(sid, str) else None

    def grant_is_active(self, sid: str) -> bool:
        return any(grant.sid == sid and not grant.revoked for grant in self._grants.values())

    # -- the grant types ------------------------------------------------------------------------

    def exchange_code(self, client_id: str, code_value: str, redirect_uri: str, verifier: str) -> dict[str, Any]:
        self._purge()
        code = self._codes.get(_digest(code_value))
        if code is None:
            raise OAuthError("invalid_grant", "unknown or expired authorization code")
        if code.grant_id is not None:
            # RFC 6749 §4.1.2: a code used twice revokes what it was exchanged for.
            used = self._grants.get(code.grant_id)
            if used is not None:
                self._revoke(used)
            raise OAuthError("invalid_grant", "authorization code was already used; its grant is revoked")
        session = self._sessions.get(code.sid)
        if code.client_id != client_id or session is None or code.expires_at <= self._clock():
            raise OAuthError("invalid_grant", "authorization code is not valid for this client")
        if redirect_uri != code.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
        grant = _Grant(secrets.token_urlsafe(12), client_id, session.sid, session.sub, session.name, code.scope)
        code.grant_id = grant.grant_id  # used, whatever the PKCE check says
        self._grants[grant.grant_id] = grant
        if not PKCE_VALUE.match(verifier) or not hmac.compare_digest(s256(verifier), code.code_challenge):
            self._revoke(grant)
            raise OAuthError("invalid_grant", "PKCE verification failed: code_verifier does not match code_challenge")
        body = self._issue(grant, grant.scope)
        body["id_token"] = self._minter.id_token(
            sub=grant.sub,
            client_id=grant.client_id,
            auth_time=session.auth_time,
            nonce=code.nonce,
            sid=session.sid,
            name=session.name,
            preferred_username=session.sub,
        )
        return body

    def refresh(self, client_id: str, refresh_token: str, scope: str | None) -> dict[str, Any]:
        self._purge()
        record = self._refresh_tokens.get(_digest(refresh_token))
        grant = self._grants.get(record.grant_id) if record is not None else None
        if record is None or grant is None or grant.client_id != client_id:
            raise OAuthError("invalid_grant", "unknown refresh token")
        if grant.revoked:
            raise OAuthError("invalid_grant", "the grant of this refresh token was revoked")
        if record.rotated:
            # Reuse of a rotated token means two parties hold it: end the whole family
            # (OAuth 2.0 Security BCP, RFC 9700 §4.14.2).
            self._revoke(grant)
            log.warning("Refresh token reuse; grant revoked. sub: '%s', sid: '%s'", grant.sub, grant.sid)
            raise OAuthError("invalid_grant", "refresh token was already used; its grant is revoked")
        if record.expires_at <= self._clock():
            raise OAuthError("invalid_grant", "refresh token expired")
        requested = (scope or grant.scope).split()
        if not set(requested) <= set(grant.scope.split()):
            raise OAuthError("invalid_scope", "a refresh cannot widen the granted scope")
        record.rotated = True
        return self._issue(grant, " ".join(requested))

    def client_credentials(self, client_id: str, scope: str) -> dict[str, Any]:
        token = self._minter.access_token(sub=client_id, client_id=client_id, scope=scope)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self._minter.access_ttl, "scope": scope}

    # -- revocation -----------------------------------------------------------------------------

    def revoke_token(self, client_id: str, token: str) -> None:
        """RFC 7009 for `client_id`: a refresh token ends its grant; an access token's `jti` is
        remembered until its `exp` (only userinfo asks; the demo API trusts the signature)."""
        record = self._refresh_tokens.get(_digest(token))
        if record is not None:
            grant = self._grants.get(record.grant_id)
            if grant is not None and grant.client_id == client_id:
                self._revoke(grant)
                log.info("Grant revoked by its client. sub: '%s', sid: '%s'", grant.sub, grant.sid)
            return
        claims = self.verify_access_token(token)
        if claims is not None and claims.get("client_id") == client_id and "jti" in claims:
            self._revoked_jtis[claims["jti"]] = float(claims["exp"])

    def verify_access_token(self, token: str) -> dict[str, Any] | None:
        """Claims of a live access token of this provider (for userinfo), else None."""
        try:
            claims = self._minter.key.verify(token, issuer=self._minter.issuer)
        except jwt.InvalidTokenError:
            return None
        if claims.get("jti") in self._revoked_jtis:
            return None
        return claims

    # -- persistence ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Login sessions, grants and refresh-token records as JSON-able data (codes, which live
        a minute, are left out). Holds token hashes, never a token."""
        self._purge()
        return {
            "version": SNAPSHOT_VERSION,
            "sessions": [asdict(session) for session in self._sessions.values()],
            "grants": [
                {**asdict(grant), "refresh_digests": sorted(grant.refresh_digests)} for grant in self._grants.values()
            ],
            "refresh_tokens": {digest: asdict(record) for digest, record in self._refresh_tokens.items()},
            "revoked_jtis": dict(self._revoked_jtis),
        }

    def restore(self, data: Any) -> None:
        """Take over a `snapshot`; raises `ValueError` (and keeps nothing) when it is not one."""
        try:
            if data["version"] != SNAPSHOT_VERSION:
                raise ValueError(f"snapshot version {data['version']!r}")
            sessions = {item["sid"]: LoginSession(**item) for item in data["sessions"]}
            grants = {
                item["grant_id"]: _Grant(**{**item, "refresh_digests": set(item["refresh_digests"])})
                for item in data["grants"]
            }
            refresh_tokens = {digest: _RefreshToken(**item) for digest, item in data["refresh_tokens"].items()}
            revoked = {str(jti): float(exp) for jti, exp in data["revoked_jtis"].items()}
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a snapshot of this provider ({type(exc).__name__})") from None
        self._sessions, self._grants, self._refresh_tokens, self._revoked_jtis = (
            sessions,
            grants,
            refresh_tokens,
            revoked,
        )
        self._purge()

    # -- tokens ---------------------------------------------------------------------------------

    def _issue(self, grant: _Grant, scope: str) -> dict[str, Any]:
        access_token = self._minter.access_token(
            sub=grant.sub, client_id=grant.client_id, scope=scope, sid=grant.sid, name=grant.name
        )
        refresh_token = secrets.token_urlsafe(32)
        digest = _digest(refresh_token)
        self._refresh_tokens[digest] = _RefreshToken(grant.grant_id, self._clock() + self._refresh_ttl)
        grant.refresh_digests.add(digest)
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self._minter.access_ttl,
            "refresh_token": refresh_token,
            "scope": scope,
        }

    def _revoke(self, grant: _Grant) -> None:
        grant.revoked = True
        for digest in grant.refresh_digests:
            self._refresh_tokens.pop(digest, None)
        grant.refresh_digests.clear()

    def _purge(self) -> None:
        now = self._clock()
        for table in (self._codes, self._refresh_tokens):
            for key in [key for key, item in table.items() if item.expires_at <= now - self._code_ttl]:
                del table[key]
        for jti in [jti for jti, exp in self._revoked_jtis.items() if exp <= now]:
            del self._revoked_jtis[jti]


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
