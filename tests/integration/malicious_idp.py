"""A tiny, deliberately wrong OpenID provider: the negative case of ID-token validation.

The real provider never issues a bad ID token, so the tests that check the BFF refuses one use
this app: discovery, JWKS, an authorization endpoint that sends the browser straight back with a
code (no login page), and a token endpoint whose ID token is crafted according to `mode`:

    good           a correct token (the control: the same flow must then log in)
    alg_none       unsigned, `alg: none`
    wrong_aud      `aud` is another client
    wrong_nonce    `nonce` is not the one of the authorization request
    expired        `exp` an hour ago
    wrong_key      signed with a key that is not in the JWKS
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.support.processes import free_port
from tests.support.server_thread import ServedApp

MODES = ("good", "alg_none", "wrong_aud", "wrong_nonce", "expired", "wrong_key")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class MaliciousIdP(ServedApp):
    server_name = "the malicious IdP"

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.mode = "good"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._kid = "malicious-1"
        self._codes: dict[str, dict[str, str]] = {}
        self.token_requests = 0
        self.app = Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/auth", self._auth),
                Route("/token", self._token, methods=["POST"]),
            ]
        )

    async def _discovery(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/auth",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
            }
        )

    async def _jwks(self, _request: Request) -> Response:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": self._kid, "use": "sig", "alg": "RS256"})
        return JSONResponse({"keys": [jwk]})

    async def _auth(self, request: Request) -> Response:
        params = request.query_params
        code = secrets.token_urlsafe(16)
        self._codes[code] = {"nonce": params.get("nonce", ""), "client_id": params.get("client_id", "")}
        query = urlencode({"code": code, "state": params.get("state", ""), "iss": self.issuer})
        return RedirectResponse(f"{params['redirect_uri']}?{query}", status_code=302)

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        form = parse_qs((await request.body()).decode())  # (no python-multipart needed)
        grant = self._codes.pop(form.get("code", [""])[0], None)
        if grant is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(32),
                "token_type": "Bearer",
                "expires_in": 300,
                "refresh_token": secrets.token_urlsafe(32),
                "id_token": self.id_token(grant["nonce"]),
                "scope": "openid profile offline_access",
            }
        )

    def id_token(self, nonce: str) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "mallory",
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            "sid": secrets.token_urlsafe(8),
        }
        key = self._key
        if self.mode == "wrong_aud":
            claims["aud"] = "some-other-client"
        elif self.mode == "wrong_nonce":
            claims["nonce"] = secrets.token_urlsafe(16)
        elif self.mode == "expired":
            claims["iat"] = now - 7200
            claims["exp"] = now - 3600
        elif self.mode == "wrong_key":
            key = self._other_key
        elif self.mode == "alg_none":
            header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
            return f"{header}.{_b64(json.dumps(claims).encode())}."
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self._kid})
