"""The development identity provider of `bff demo`, in-process: discovery, code + PKCE, refresh
rotation and reuse detection, client authentication, revocation, end-session with back-channel
logout, userinfo, JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import httpx2
import jwt
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from bff.demo.backchannel import BACKCHANNEL_EVENT
from bff.demo.idp import DevIdentityProvider
from bff.demo.keys import SigningKey
from bff.demo.oauth import DemoClient
from bff.demo.pages import login_page
from tests.fakes import Clock

ISSUER = "http://idp.test/idp"
API = "http://api.test"
CALLBACK = "http://app.test/bff/callback"
BACKCHANNEL = "http://app.test/bff/backchannel-logout"
SECRET = "bff-client-secret-of-thirty-two-characters"
BFF = DemoClient(
    "bff",
    SECRET,
    redirect_uris=(CALLBACK,),
    post_logout_redirect_uris=("http://app.test/",),
    backchannel_logout_uri=BACKCHANNEL,
)


class Harness:
    """The provider mounted at /idp, a clock, and the back-channel calls it made."""

    def __init__(self, key: SigningKey | None = None) -> None:
        self.clock = Clock(time.time())  # real time: tokens are checked by PyJWT against it
        self.backchannel: list[httpx.Request] = []

        def receive(request: httpx.Request) -> httpx.Response:
            self.backchannel.append(request)
            return httpx.Response(200)

        self.idp = DevIdentityProvider(
            issuer=ISSUER,
            clients=[BFF],
            api_audience=API,
            access_ttl=60,
            refresh_ttl=3600,
            clock=self.clock,
            backchannel_transport=httpx.MockTransport(receive),
            key=key,
        )
        app = Starlette(routes=[Mount("/idp", app=self.idp.app())])
        self.http = TestClient(app, base_url="http://idp.test", follow_redirects=False)

    def authorize(self, verifier: str, **overrides: str) -> httpx2.Response:
        params = {
            "response_type": "code",
            "client_id": "bff",
            "redirect_uri": CALLBACK,
            "scope": "openid profile offline_access",
            "state": "state-1",
            "nonce": "nonce-1",
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
            **overrides,
        }
        return self.http.get("/idp/authorize", params=params)

    def login(self, verifier: str, username: str = "alice") -> dict[str, str]:
        """Authorize and post the login form; the callback's query parameters."""
        page = self.authorize(verifier)
        assert page.status_code == 200, page.text
        transaction = re.search(r'name="transaction" value="([^"]+)"', page.text)
        assert transaction is not None
        answer = self.http.post("/idp/authorize", data={"transaction": transaction[1], "username": username})
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert location.startswith(CALLBACK + "?")
        return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}

    def token(self, data: dict[str, str], *, auth: str = "basic", secret: str = SECRET) -> httpx2.Response:
        if auth == "basic":
            return self.http.post("/idp/token", data=data, auth=("bff", secret))
        return self.http.post("/idp/token", data={**data, "client_id": "bff", "client_secret": secret})

    def code_exchange(self, username: str = "alice") -> dict[str, Any]:
        verifier = secrets.token_urlsafe(48)
        callback = self.login(verifier, username)
        response = self.token(
            {
                "grant_type": "authorization_code",
                "code": callback["code"],
                "redirect_uri": CALLBACK,
                "code_verifier": verifier,
            }
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def refresh(self, refresh_token: str) -> httpx2.Response:
        return self.token({"grant_type": "refresh_token", "refresh_token": refresh_token})

    def verify(self, token: str, audience: str, leeway: float = 0) -> dict[str, Any]:
        keys = jwt.PyJWKSet.from_dict(self.http.get("/idp/jwks").json())
        kid = jwt.get_unverified_header(token)["kid"]
        key = next(k for k in keys.keys if k.key_id == kid)
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=["RS256"], audience=audience, issuer=ISSUER, leeway=leeway
        )
        return claims


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    with h.http:
        yield h


def test_discovery_names_every_endpoint_under_the_issuer(harness: Harness) -> None:
    metadata = harness.http.get("/idp/.well-known/openid-configuration").json()
    assert metadata["issuer"] == ISSUER
    for name in ("authorization", "token", "userinfo", "revocation", "end_session"):
        assert metadata[f"{name}_endpoint"].startswith(ISSUER + "/")
    assert metadata["jwks_uri"] == ISSUER + "/jwks"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["backchannel_logout_session_supported"] is True
    assert set(metadata["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}


def test_login_page_is_marked_development_only(harness: Harness) -> None:
    page = harness.authorize(secrets.token_urlsafe(48))
    assert "not for production" in page.text
    assert 'id="username"' in page.text
    assert 'id="login-submit"' in page.text
    assert "script" not in page.headers["content-security-policy"]


def test_code_flow_with_pkce_issues_signed_tokens(harness: Harness) -> None:
    verifier = secrets.token_urlsafe(48)
    callback = harness.login(verifier, "Zoë")
    assert callback["state"] == "state-1"
    assert callback["iss"] == ISSUER
    response = harness.token(
        {
            "grant_type": "authorization_code",
            "code": callback["code"],
            "redirect_uri": CALLBACK,
            "code_verifier": verifier,
        }
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 60
    assert body["refresh_token"]
    id_token = harness.verify(body["id_token"], audience="bff")
    assert id_token["nonce"] == "nonce-1"
    assert id_token["sub"] == "Zoë"
    assert id_token["name"] == "Zoë"
    assert id_token["azp"] == "bff"
    access = harness.verify(body["access_token"], audience=API)
    assert access["sub"] == "Zoë"
    assert access["sid"] == id_token["sid"]
    assert access["exp"] == access["iat"] + 60
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"


def test_client_secret_post_is_accepted_and_a_wrong_secret_is_not(harness: Harness) -> None:
    verifier = secrets.token_urlsafe(48)
    callback = harness.login(verifier)
    data = {"grant_type": "authorization_code", "code": callback["code"], "redirect_uri": CALLBACK}
    wrong = harness.token({**data, "code_verifier": verifier}, auth="post", secret="wrong")
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    right = harness.token({**data, "code_verifier": verifier}, auth="post")
    assert right.status_code == 200


def test_wrong_code_verifier_is_rejected_and_burns_the_code(harness: Harness) -> None:
    verifier = secrets.token_urlsafe(48)
    callback = harness.login(verifier)
    data = {"grant_type": "authorization_code", "code": callback["code"], "redirect_uri": CALLBACK}
    wrong = harness.token({**data, "code_verifier": secrets.token_urlsafe(48)})
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "invalid_grant"
    assert "PKCE" in wrong.json()["error_description"]
    assert harness.token({**data, "code_verifier": verifier}).json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "overrides",
    [{"code_challenge_method": "plain"}, {"code_challenge": ""}, {"state": ""}, {"nonce": ""}],
    ids=["plain-method", "no-challenge", "no-state", "no-nonce"],
)
def test_authorize_without_pkce_state_or_nonce_redirects_with_invalid_request(
    harness: Harness, overrides: dict[str, str]
) -> None:
    response = harness.authorize(secrets.token_urlsafe(48), **overrides)
    assert response.status_code == 303
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["invalid_request"]


def test_unregistered_redirect_uri_is_never_redirected_to(harness: Harness) -> None:
    response = harness.authorize(secrets.token_urlsafe(48), redirect_uri="https://evil.example/cb")
    assert response.status_code == 400
    assert "location" not in response.headers


def test_a_code_used_twice_revokes_its_grant(harness: Harness) -> None:
    verifier = secrets.token_urlsafe(48)
    callback = harness.login(verifier)
    data = {
        "grant_type": "authorization_code",
        "code": callback["code"],
        "redirect_uri": CALLBACK,
        "code_verifier": verifier,
    }
    first = harness.token(data).json()
    assert harness.token(data).json()["error"] == "invalid_grant"
    assert harness.refresh(first["refresh_token"]).json()["error"] == "invalid_grant"


def test_refresh_rotates_the_refresh_token(harness: Harness) -> None:
    first = harness.code_exchange()
    harness.clock.now += 30
    response = harness.refresh(first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert "id_token" not in second
    access = harness.verify(second["access_token"], audience=API, leeway=60)  # the clock ran ahead
    assert access["iat"] == int(harness.clock.now)
    assert harness.refresh(second["refresh_token"]).status_code == 200


def test_reusing_a_rotated_refresh_token_revokes_the_whole_grant(harness: Harness) -> None:
    first = harness.code_exchange()
    second = harness.refresh(first["refresh_token"]).json()
    reuse = harness.refresh(first["refresh_token"])
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    # The newest token of the family is dead too: whoever replayed the old one gets nothing.
    assert harness.refresh(second["refresh_token"]).json()["error"] == "invalid_grant"
    # Another login of the same user is a separate grant and keeps working.
    other = harness.code_exchange()
    assert harness.refresh(other["refresh_token"]).status_code == 200


def test_refresh_token_expires(harness: Harness) -> None:
    tokens = harness.code_exchange()
    harness.clock.now += 3601
    assert harness.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_revoking_a_refresh_token_ends_its_grant(harness: Harness) -> None:
    tokens = harness.code_exchange()
    unknown = harness.http.post("/idp/revoke", data={"token": "nonsense"}, auth=("bff", SECRET))
    assert unknown.status_code == 200  # RFC 7009 §2.2
    revoked = harness.http.post(
        "/idp/revoke", data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"}, auth=("bff", SECRET)
    )
    assert revoked.status_code == 200
    assert harness.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"
    unauthenticated = harness.http.post("/idp/revoke", data={"token": tokens["refresh_token"]})
    assert unauthenticated.status_code == 401


def test_end_session_sends_back_channel_logout_and_redirects(harness: Harness) -> None:
    tokens = harness.code_exchange("bob")
    sid = harness.verify(tokens["id_token"], audience="bff")["sid"]
    harness.clock.now += 900  # an expired ID token still names the session
    response = harness.http.get(
        "/idp/end-session",
        params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "http://app.test/", "state": "s"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "http://app.test/?state=s"
    assert [str(request.url) for request in harness.backchannel] == [BACKCHANNEL]
    form = parse_qs(harness.backchannel[0].content.decode())
    logout_token = form["logout_token"][0]
    assert jwt.get_unverified_header(logout_token)["typ"] == "logout+jwt"
    claims = jwt.decode(
        logout_token, options={"verify_signature": False}, audience="bff"
    )  # signature: see test_jwks_verifies_every_token_kind
    assert claims["sid"] == sid
    assert claims["sub"] == "bob"
    assert claims["events"] == {BACKCHANNEL_EVENT: {}}
    assert "nonce" not in claims
    assert harness.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert not harness.idp.grant_is_active(sid)


def test_end_session_refuses_an_unregistered_post_logout_redirect(harness: Harness) -> None:
    tokens = harness.code_exchange()
    response = harness.http.get(
        "/idp/end-session",
        params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "https://evil.example/"},
    )
    assert response.status_code == 400
    assert harness.backchannel == []
    assert harness.refresh(tokens["refresh_token"]).status_code == 200


def test_userinfo_answers_until_the_session_ends(harness: Harness) -> None:
    tokens = harness.code_exchange("carol")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert harness.http.get("/idp/userinfo", headers=headers).json() == {
        "sub": "carol",
        "name": "carol",
        "preferred_username": "carol",
    }
    sid = harness.verify(tokens["id_token"], audience="bff")["sid"]
    harness.http.get("/idp/end-session", params={"id_token_hint": tokens["id_token"]})
    assert not harness.idp.grant_is_active(sid)
    denied = harness.http.get("/idp/userinfo", headers=headers)
    assert denied.status_code == 401
    assert 'error="invalid_token"' in denied.headers["www-authenticate"]


def test_client_credentials_grant_has_no_refresh_token(harness: Harness) -> None:
    response = harness.token({"grant_type": "client_credentials", "scope": "api"})
    assert response.status_code == 200
    body = response.json()
    assert "refresh_token" not in body
    assert harness.verify(body["access_token"], audience=API)["sub"] == "bff"


def test_jwks_verifies_every_token_kind(harness: Harness) -> None:
    tokens = harness.code_exchange()
    harness.http.get("/idp/end-session", params={"id_token_hint": tokens["id_token"]})
    logout_token = parse_qs(harness.backchannel[0].content.decode())["logout_token"][0]
    keys = harness.http.get("/idp/jwks").json()["keys"]
    assert [key["alg"] for key in keys] == ["RS256"]
    assert "d" not in keys[0]  # the public half only
    harness.verify(logout_token, audience="bff")
    harness.verify(tokens["id_token"], audience="bff")
    harness.verify(tokens["access_token"], audience=API)


def test_end_session_without_a_hint_ends_this_browsers_session(harness: Harness) -> None:
    tokens = harness.code_exchange("dave")
    params = {"client_id": "bff", "post_logout_redirect_uri": "http://app.test/"}
    with TestClient(harness.http.app, base_url="http://idp.test", follow_redirects=False) as stranger:
        assert stranger.get("/idp/end-session", params=params).status_code == 303
    assert harness.backchannel == []  # another browser, no cookie: nothing ended
    response = harness.http.get("/idp/end-session", params=params)
    assert response.status_code == 303
    assert "dev_idp_session=" in response.headers["set-cookie"]  # cleared
    assert len(harness.backchannel) == 1
    assert harness.refresh(tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_a_snapshot_carries_grants_and_reuse_detection_into_a_new_provider(harness: Harness) -> None:
    first = harness.code_exchange("erin")
    second = harness.refresh(first["refresh_token"]).json()
    snapshot = json.loads(json.dumps(harness.idp.grants.snapshot()))
    assert first["refresh_token"] not in json.dumps(snapshot)  # hashes only
    restarted = Harness(key=SigningKey.from_pem(harness.idp.key.to_pem()))
    restarted.idp.grants.restore(snapshot)
    with restarted.http:
        assert restarted.http.get("/idp/jwks").json() == harness.http.get("/idp/jwks").json()
        third = restarted.refresh(second["refresh_token"])
        assert third.status_code == 200, third.text
        assert restarted.refresh(first["refresh_token"]).json()["error"] == "invalid_grant"  # reuse
        assert restarted.refresh(third.json()["refresh_token"]).json()["error"] == "invalid_grant"


def test_restore_refuses_what_is_not_a_snapshot(harness: Harness) -> None:
    with pytest.raises(ValueError, match="snapshot"):
        harness.idp.grants.restore({"version": 1, "sessions": [{"nope": 1}]})


def test_the_login_page_escapes_what_it_shows() -> None:
    page = login_page(transaction='"><script>x()</script>', client_id="<b>bff</b>", users=["<img src=x>"], error="<i>")
    text = bytes(page.body).decode()
    assert "<script>" not in text
    assert "<img" not in text
    assert "<b>bff" not in text
    assert "&lt;i&gt;" in text
    assert page.status_code == 400  # an error re-renders the form
