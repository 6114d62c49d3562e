"""The demo API of `bff demo`: JWT checks against the provider's JWKS, to-dos per user, the SSE clock."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from starlette.testclient import TestClient

from bff.demo.api import DemoAPI
from bff.demo.keys import SigningKey

ISSUER = "http://idp.test/idp"
AUDIENCE = "http://api.test"
JWKS_URL = ISSUER + "/jwks"


class Provider:
    """A signing key, its JWKS behind a mock transport, and a count of JWKS fetches."""

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.jwks_fetches = 0

        def serve(request: httpx.Request) -> httpx.Response:
            assert str(request.url) == JWKS_URL
            self.jwks_fetches += 1
            return httpx.Response(200, json={"keys": [self.key.public_jwk()]})

        self.transport = httpx.MockTransport(serve)

    def token(self, sub: str = "alice", ttl: int = 60, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "name": sub.title(), "iat": now, "exp": now + ttl, **claims}
        return self.key.sign(body, typ="at+jwt")


@pytest.fixture
def provider() -> Provider:
    return Provider()


@pytest.fixture
def client(provider: Provider) -> Iterator[TestClient]:
    api = DemoAPI(issuer=ISSUER, audience=AUDIENCE, jwks_url=JWKS_URL, transport=provider.transport)
    with TestClient(api.app(), base_url="http://api.test") as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_me_answers_who_the_token_names(client: TestClient, provider: Provider) -> None:
    token = provider.token("alice")
    response = client.get("/me", headers=bearer(token))
    assert response.status_code == 200
    body = response.json()
    assert body["sub"] == "alice"
    assert body["name"] == "Alice"
    assert body["tokenExpiresAt"] == jwt.decode(token, options={"verify_signature": False})["exp"]
    assert 0 < body["tokenExpiresIn"] <= 60


def test_the_jwks_is_fetched_once(client: TestClient, provider: Provider) -> None:
    for _ in range(3):
        assert client.get("/me", headers=bearer(provider.token())).status_code == 200
    assert provider.jwks_fetches == 1


def test_no_token_gets_a_bearer_challenge_without_error(client: TestClient) -> None:
    response = client.get("/todos")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="demo-api"'


def test_forged_token_with_another_key_is_refused(client: TestClient) -> None:
    forger = Provider()
    response = client.get("/me", headers=bearer(forger.token()))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"ttl": -5}, "expired"),
        ({"aud": "http://other-api.test"}, "InvalidAudienceError"),
        ({"iss": "http://evil.test"}, "InvalidIssuerError"),
    ],
    ids=["expired", "wrong-aud", "wrong-iss"],
)
def test_invalid_tokens_get_401_invalid_token(
    client: TestClient, provider: Provider, claims: dict[str, Any], why: str
) -> None:
    response = client.get("/me", headers=bearer(provider.token(**claims)))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer realm="demo-api", error="invalid_token"')
    assert why in response.json()["detail"]


def test_alg_none_is_refused(client: TestClient, provider: Provider) -> None:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 60}
    unsigned = jwt.encode(claims, key="", algorithm="none", headers={"kid": provider.key.kid})
    assert client.get("/me", headers=bearer(unsigned)).status_code == 401


def test_todos_belong_to_their_user(client: TestClient, provider: Provider) -> None:
    alice, bob = bearer(provider.token("alice")), bearer(provider.token("bob"))
    created = client.post("/todos", json={"text": "  buy milk "}, headers=alice)
    assert created.status_code == 201
    todo = created.json()
    assert todo["text"] == "buy milk"
    client.post("/todos", json={"text": "fix bike"}, headers=bob)
    assert [t["text"] for t in client.get("/todos", headers=alice).json()] == ["buy milk"]
    assert [t["text"] for t in client.get("/todos", headers=bob).json()] == ["fix bike"]
    assert client.delete(f"/todos/{todo['id']}", headers=bob).status_code == 404
    assert client.delete(f"/todos/{todo['id']}", headers=alice).status_code == 204
    assert client.get("/todos", headers=alice).json() == []


@pytest.mark.parametrize("body", [{"text": ""}, {"text": "x" * 201}, {"title": "x"}, ["x"]])
def test_a_bad_todo_is_refused(client: TestClient, provider: Provider, body: object) -> None:
    response = client.post("/todos", json=body, headers=bearer(provider.token()))
    assert response.status_code == 400


def test_clock_streams_one_event_per_tick(provider: Provider) -> None:
    api = DemoAPI(
        issuer=ISSUER, audience=AUDIENCE, jwks_url=JWKS_URL, transport=provider.transport, tick=0.01, max_ticks=3
    )
    with TestClient(api.app()) as http, http.stream("GET", "/clock", headers=bearer(provider.token())) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = [block for block in text.split("\n\n") if block.startswith("id:")]
    assert len(events) == 3
    data = [
        json.loads(line.removeprefix("data: ")) for event in events for line in event.splitlines() if "data:" in line
    ]
    assert all(item["time"].endswith("Z") for item in data)
    assert data[0]["epoch"] <= data[-1]["epoch"]


def test_clock_stream_ends_when_its_token_expires(provider: Provider) -> None:
    api = DemoAPI(issuer=ISSUER, audience=AUDIENCE, jwks_url=JWKS_URL, transport=provider.transport, tick=0.2)
    started = time.monotonic()
    with TestClient(api.app()) as http, http.stream("GET", "/clock", headers=bearer(provider.token(ttl=1))) as response:
        text = "".join(response.iter_text())
    assert text.rstrip().endswith("event: token-expired\ndata: {}")
    assert time.monotonic() - started < 3
