"""A DPoP-protected upstream API (RFC 9449 resource server) for the tests: every request must
present `Authorization: DPoP <access token>` and one `DPoP` proof, checked as §4.3 and §7.1 say.

The proof: a JWT with `typ` `dpop+jwt`, an asymmetric `alg`, a public `jwk` (no private member)
whose signature verifies, `htm` the request's method, `htu` its URL without query and fragment,
`iat` within `IAT_WINDOW` seconds, a `jti` never seen before, `ath` the SHA-256 of the presented
token, and, while `require_nonce` is on, the API's current `nonce`. The access token: whatever
`token_claims` accepts (the provider's JWT, its signature, `aud` and `exp` checked), with a
`cnf.jkt` equal to the proof key's RFC 7638 thumbprint. A missing or wrong nonce is answered 401
`WWW-Authenticate: DPoP error="use_dpop_nonce"` with a `DPoP-Nonce` header; any other failure 401
`DPoP error="invalid_dpop_proof"` or `error="invalid_token"`. A valid request gets its description
back as JSON (method, path, query, body, `sha256`, the token's `sub`, `jti`, `exp` and `jkt`).

Every request is recorded (`DPoPApi.requests`, with its token and proof), and `accepted` and
`refused` (by reason) count the proofs. It runs under real uvicorn in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bff.dpop import access_token_hash, jwk_thumbprint
from tests.support.jwt_api import echo
from tests.support.processes import free_port
from tests.support.server_thread import ServedApp

IAT_WINDOW = 60  # seconds either side of now
ASYMMETRIC = ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"]
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}
USE_DPOP_NONCE = "use_dpop_nonce"


@dataclass
class SeenRequest:
    method: str
    path: str
    url: str
    body_sha256: str
    authorization: str
    proof: str | None
    status: int = 401
    error: str | None = None


class Refused(Exception):
    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


class DPoPApi(ServedApp):
    server_name = "the DPoP API"

    def __init__(self, token_claims: Callable[[str], dict[str, Any]], *, port: int | None = None) -> None:
        """`token_claims` verifies an access token and returns its claims (raises `jwt.PyJWTError`)."""
        self.token_claims = token_claims
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.require_nonce = False
        self.nonce = secrets.token_urlsafe(16)
        self.requests: list[SeenRequest] = []
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self._jtis: set[str] = set()
        self._lock = threading.Lock()
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    # ------------------------------------------------------------------ what it saw

    def seen_for(self, path: str) -> list[SeenRequest]:
        with self._lock:
            return [seen for seen in self.requests if seen.path == path]

    def rotate_nonce(self) -> str:
        self.nonce = secrets.token_urlsafe(16)
        return self.nonce

    # ------------------------------------------------------------------ the checks

    def _check(self, request: Request, seen: SeenRequest) -> dict[str, Any]:
        scheme, _, token = seen.authorization.partition(" ")
        if scheme != "DPoP" or not token:
            raise Refused("invalid_token", f"Authorization scheme {scheme!r}, expected DPoP")
        proofs = request.headers.getlist("dpop")
        if len(proofs) != 1:
            raise Refused("invalid_dpop_proof", f"{len(proofs)} DPoP headers")
        proof = proofs[0]
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.PyJWTError as exc:
            raise Refused("invalid_dpop_proof", f"not a JWT: {exc}") from None
        if header.get("typ") != "dpop+jwt":
            raise Refused("invalid_dpop_proof", f"typ {header.get('typ')!r}")
        if header.get("alg") not in ASYMMETRIC:
            raise Refused("invalid_dpop_proof", f"alg {header.get('alg')!r}")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or PRIVATE_MEMBERS & set(jwk):
            raise Refused("invalid_dpop_proof", "jwk missing or holding a private key")
        try:
            key = jwt.PyJWK(jwk, algorithm=header["alg"])
            claims = jwt.decode(
                proof, key.key, algorithms=[header["alg"]], options={"require": ["jti", "htm", "htu", "iat"]}
            )
        except jwt.PyJWTError as exc:
            raise Refused("invalid_dpop_proof", f"signature or claims: {exc}") from None
        self._check_claims(claims, request, token)
        try:
            token_claims = self.token_claims(token)
        except jwt.PyJWTError as exc:
            raise Refused("invalid_token", f"access token: {type(exc).__name__}") from None
        cnf = token_claims.get("cnf")
        if not isinstance(cnf, dict) or cnf.get("jkt") != jwk_thumbprint(jwk):
            raise Refused("invalid_token", "cnf.jkt is not the proof key's thumbprint")
        return token_claims

    def _check_claims(self, claims: dict[str, Any], request: Request, token: str) -> None:
        if claims["htm"] != request.method:
            raise Refused("invalid_dpop_proof", f"htm {claims['htm']!r}")
        if claims["htu"] != str(request.url.replace(query="", fragment="")):
            raise Refused("invalid_dpop_proof", f"htu {claims['htu']!r}")
        if abs(time.time() - float(claims["iat"])) > IAT_WINDOW:
            raise Refused("invalid_dpop_proof", "iat outside the window")
        if claims.get("ath") != access_token_hash(token):
            raise Refused("invalid_dpop_proof", "ath is not the hash of the access token")
        if self.require_nonce and claims.get("nonce") != self.nonce:
            raise Refused(USE_DPOP_NONCE, "nonce missing or stale")
        with self._lock:
            if claims["jti"] in self._jtis:
                raise Refused("invalid_dpop_proof", "jti used before (a replayed proof)")
            self._jtis.add(claims["jti"])

    # ------------------------------------------------------------------ the endpoint

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        digest = hashlib.sha256(body).hexdigest()
        seen = SeenRequest(
            method=request.method,
            path=request.url.path,
            url=str(request.url),
            body_sha256=digest,
            authorization=request.headers.get("authorization", ""),
            proof=request.headers.get("dpop"),
        )
        with self._lock:
            self.requests.append(seen)
        try:
            # The provider's JWKS is fetched with urllib (blocking): keep it off the event loop.
            claims = await asyncio.to_thread(self._check, request, seen)
        except Refused as refused:
            seen.error = refused.reason
            with self._lock:
                self.refused[refused.error] += 1
            return self._unauthorized(refused.error)
        seen.status = 200
        with self._lock:
            self.accepted += 1
        return JSONResponse({**echo(request, body, digest, claims), "jkt": claims["cnf"]["jkt"]})

    def _unauthorized(self, error: str) -> Response:
        headers = {"WWW-Authenticate": f'DPoP error="{error}", algs="ES256 PS256 RS256"'}
        if error == USE_DPOP_NONCE:
            headers["DPoP-Nonce"] = self.nonce
        return JSONResponse({"error": error}, status_code=401, headers=headers)


def provider_token_claims(issuer: str, audience: str) -> Callable[[str], dict[str, Any]]:
    """Verifies the provider's JWT access tokens: signature by its JWKS, `iss`, `aud`, `exp` (no leeway)."""
    keys = jwt.PyJWKClient(f"{issuer}/jwks", cache_keys=True, lifespan=3600)

    def verify(token: str) -> dict[str, Any]:
        key = keys.get_signing_key_from_jwt(token)
        return dict(
            jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=audience,
                issuer=issuer,
                options={"require": ["exp", "iat", "sub", "jti", "cnf"]},
                leeway=0,
            )
        )

    return verify


@contextlib.contextmanager
def running_dpop_api(issuer: str, audience: str) -> Iterator[DPoPApi]:
    """A DPoP API for the provider's access tokens that demands its nonce, stopped afterwards."""
    api = DPoPApi(provider_token_claims(issuer, audience))
    api.require_nonce = True
    api.start()
    try:
        yield api
    finally:
        api.stop()
