"""CookieCodec: the signed session-id cookie, sealed values, and the Set-Cookie attributes."""

from __future__ import annotations

import base64
import hashlib
import secrets
from http.cookies import SimpleCookie
from typing import Literal

import pytest
from itsdangerous import Signer
from starlette.datastructures import Secret

from bff.config import SessionSettings, Settings
from bff.cookies import CookieCodec
from tests.fakes import Clock
from tests.support.cookies import parse_set_cookie

NEW_KEY = "n" * 40
OLD_KEY = "o" * 40
OTHER_KEY = "x" * 40


def settings(
    *keys: str, public_url: str = "http://127.0.0.1:8000", same_site: Literal["strict", "lax"] = "strict"
) -> Settings:
    return Settings(
        secret_keys=tuple(Secret(key) for key in keys or (NEW_KEY,)),
        public_url=public_url,
        session=SessionSettings(same_site=same_site),
    )


def codec(*keys: str, public_url: str = "http://127.0.0.1:8000", clock: Clock | None = None) -> CookieCodec:
    return CookieCodec(settings(*keys, public_url=public_url), clock=clock or Clock())


def cookie_header(value: str, name: str = "bff") -> list[tuple[bytes, bytes]]:
    return [(b"cookie", f"theme=dark; {name}={value}; other=1".encode("latin-1"))]


SESSION_ID = secrets.token_urlsafe(32)


# -- the session cookie -----------------------------------------------------------------------


def test_a_signed_session_id_reads_back() -> None:
    c = codec()
    signed = c.sign_session_id(SESSION_ID)
    assert signed.startswith(SESSION_ID + ".")
    assert c.read_session_id(cookie_header(signed)) == SESSION_ID


def test_a_missing_cookie_reads_as_none() -> None:
    c = codec()
    assert c.read_session_id([]) is None
    assert c.read_session_id([(b"cookie", b"theme=dark")]) is None
    assert c.read_session_id([(b"cookie", b"")]) is None
    assert c.read_session_id([(b"host", b"bff=" + c.sign_session_id(SESSION_ID).encode())]) is None


def test_a_tampered_cookie_reads_as_none() -> None:
    c = codec()
    signed = c.sign_session_id(SESSION_ID)
    session_id, signature = signed.split(".")
    other_id = secrets.token_urlsafe(32)
    flipped_signature = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for bad in (f"{other_id}.{signature}", f"{session_id}.{flipped_signature}", f"{session_id[::-1]}.{signature}"):
        assert c.read_session_id(cookie_header(bad)) is None, bad


def test_a_verified_value_is_remembered_and_a_forged_one_never(monkeypatch: pytest.MonkeyPatch) -> None:
    """The signature is checked once per value and process; a failed check is never cached, so
    a forgery is refused however often it comes, also after the genuine value was read."""
    c = codec()
    signed = c.sign_session_id(SESSION_ID)
    session_id, signature = signed.split(".")
    forged = f"{secrets.token_urlsafe(32)}.{signature}"
    checks: list[bytes] = []
    unsign = Signer.unsign

    def counted(self: Signer, value: bytes) -> bytes:
        checks.append(value)
        return unsign(self, value)

    monkeypatch.setattr(Signer, "unsign", counted)
    for _ in range(3):
        assert c.read_session_id(cookie_header(signed)) == session_id
        assert c.read_session_id(cookie_header(forged)) is None
    assert checks == [signed.encode(), *[forged.encode()] * 3]


def test_a_truncated_cookie_reads_as_none() -> None:
    c = codec()
    signed = c.sign_session_id(SESSION_ID)
    for length in (0, 1, 10, 43, 44, len(signed) - 1):
        assert c.read_session_id(cookie_header(signed[:length])) is None, length


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        ".",
        "..",
        "abc",
        "a.b.c",
        "%00%ff",
        "\u00ff\u00fe.\u00e9",
        '"quoted.value"',
        "x" * 10_000,
        "=====",
        "eyJhbGciOiJub25lIn0.e30.",
    ],
)
def test_garbage_reads_as_none(garbage: str) -> None:
    assert codec().read_session_id(cookie_header(garbage)) is None


def test_raw_non_text_bytes_read_as_none() -> None:
    assert codec().read_session_id([(b"cookie", b"bff=\xff\xfe\x00\x80.\x01")]) is None


def test_a_cookie_signed_with_an_unknown_key_reads_as_none() -> None:
    assert codec(NEW_KEY).read_session_id(cookie_header(codec(OTHER_KEY).sign_session_id(SESSION_ID))) is None


def test_a_cookie_signed_by_another_itsdangerous_use_of_the_same_key_reads_as_none() -> None:
    foreign = Signer(NEW_KEY, key_derivation="hmac", digest_method=hashlib.sha256).sign(SESSION_ID).decode()
    assert codec(NEW_KEY).read_session_id(cookie_header(foreign)) is None


def test_a_signed_value_that_is_not_a_session_id_reads_as_none() -> None:
    c = codec()
    assert c.read_session_id(cookie_header(c.sign_session_id("admin"))) is None


def test_key_rotation_keeps_old_cookies_valid_until_the_old_key_is_removed() -> None:
    signed_with_old = codec(OLD_KEY).sign_session_id(SESSION_ID)
    rotated = codec(NEW_KEY, OLD_KEY)
    assert rotated.read_session_id(cookie_header(signed_with_old)) == SESSION_ID
    # New cookies are signed with the first key: they stay valid once the old key is gone.
    signed_after_rotation = rotated.sign_session_id(SESSION_ID)
    assert codec(NEW_KEY).read_session_id(cookie_header(signed_after_rotation)) == SESSION_ID
    assert codec(OLD_KEY).read_session_id(cookie_header(signed_after_rotation)) is None
    assert codec(NEW_KEY).read_session_id(cookie_header(signed_with_old)) is None


def test_the_first_valid_of_several_same_named_cookies_wins() -> None:
    c = codec()
    signed = c.sign_session_id(SESSION_ID)
    headers = [(b"cookie", b"bff=planted.value"), (b"cookie", f"bff={signed}".encode())]
    assert c.read_session_id(headers) == SESSION_ID


def test_the_https_session_cookie_is_read_under_its_host_prefixed_name() -> None:
    c = codec(public_url="https://app.example.com")
    signed = c.sign_session_id(SESSION_ID)
    assert c.read_session_id(cookie_header(signed, name="__Host-bff")) == SESSION_ID
    assert c.read_session_id(cookie_header(signed, name="bff")) is None


# -- attributes -------------------------------------------------------------------------------


def test_session_cookie_over_http_is_httponly_strict_and_not_secure() -> None:
    c = codec()
    signed = c.sign_session_id(SESSION_ID)
    name, value, attributes = parse_set_cookie(c.session_set_cookie(signed, 3600))
    assert (name, value) == ("bff", signed)
    assert attributes == {"max-age": "3600", "path": "/", "httponly": "", "samesite": "Strict"}
    # The standard library's parser agrees on the shape.
    jar: SimpleCookie = SimpleCookie()
    jar.load(c.session_set_cookie(signed, 3600))
    assert jar["bff"].value == signed
    assert jar["bff"]["httponly"] is True


def test_session_cookie_over_https_is_secure_and_host_prefixed() -> None:
    c = codec(public_url="https://app.example.com")
    assert c.session_cookie_name == "__Host-bff"
    name, _, attributes = parse_set_cookie(c.session_set_cookie(c.sign_session_id(SESSION_ID), 60))
    assert name == "__Host-bff"
    assert attributes == {"max-age": "60", "path": "/", "httponly": "", "secure": "", "samesite": "Strict"}
    assert "domain" not in attributes  # __Host- forbids it


def test_session_cookie_same_site_follows_the_settings() -> None:
    c = CookieCodec(settings(NEW_KEY, same_site="lax"))
    _, _, attributes = parse_set_cookie(c.session_set_cookie("v", 60))
    assert attributes["samesite"] == "Lax"


def test_clearing_the_session_cookie_keeps_its_attributes() -> None:
    for url, secure in (("http://127.0.0.1:8000", False), ("https://app.example.com", True)):
        c = codec(public_url=url)
        name, value, attributes = parse_set_cookie(c.session_clear_cookie())
        assert (name, value, attributes["max-age"], attributes["path"]) == (c.session_cookie_name, "", "0", "/")
        assert ("secure" in attributes) is secure
        assert "httponly" in attributes


def test_generic_cookies_get_the_same_rules_with_their_own_same_site() -> None:
    c = codec(public_url="https://app.example.com")
    name, value, attributes = parse_set_cookie(c.set_cookie("__Host-bff-login", "sealed", max_age=600, same_site="lax"))
    assert (name, value) == ("__Host-bff-login", "sealed")
    assert attributes == {"max-age": "600", "path": "/", "httponly": "", "secure": "", "samesite": "Lax"}
    _, value, attributes = parse_set_cookie(c.clear_cookie("__Host-bff-login", same_site="Lax"))
    assert (value, attributes["max-age"], attributes["samesite"]) == ("", "0", "Lax")
    with pytest.raises(ValueError, match="same_site"):
        c.set_cookie("x", "y", max_age=1, same_site="none")


def test_cookie_value_reads_any_named_cookie() -> None:
    c = codec()
    assert c.cookie_value([(b"cookie", b"a=1; bff-login=xyz")], "bff-login") == "xyz"
    assert c.cookie_value([(b"cookie", b"a=1")], "bff-login") is None


# -- sealed values ----------------------------------------------------------------------------


def test_sealed_data_unseals_for_its_purpose_only() -> None:
    c = codec()
    data = {"state": "s-123", "nonce": "n-456", "verifier": "v" * 43, "returnTo": "/x?y=1"}
    sealed = c.seal(data, purpose="login")
    assert c.unseal(sealed, purpose="login", max_age=600) == data
    assert c.unseal(sealed, purpose="other", max_age=600) is None


def test_sealed_text_is_cookie_and_url_safe_and_hides_its_content() -> None:
    c = codec()
    sealed = c.seal({"verifier": "plain-secret-verifier"}, purpose="login")
    assert sealed.replace("-", "").replace("_", "").isalnum()
    raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    assert b"plain-secret-verifier" not in raw
    assert c.seal({"a": 1}, purpose="login") != c.seal({"a": 1}, purpose="login")  # fresh nonce


def test_a_sealed_value_expires_after_max_age() -> None:
    clock = Clock()
    c = codec(clock=clock)
    sealed = c.seal({"a": 1}, purpose="login")
    clock.now += 600
    assert c.unseal(sealed, purpose="login", max_age=600) == {"a": 1}
    clock.now += 1
    assert c.unseal(sealed, purpose="login", max_age=600) is None


def test_a_sealed_value_from_the_future_is_refused() -> None:
    clock = Clock()
    sealed = codec(clock=Clock(clock.now + 3600)).seal({"a": 1}, purpose="login")
    assert codec(clock=clock).unseal(sealed, purpose="login", max_age=7200) is None


def test_tampered_truncated_and_garbage_sealed_values_unseal_as_none() -> None:
    c = codec()
    sealed = c.seal({"a": 1}, purpose="login")
    flipped = sealed[:20] + ("A" if sealed[20] != "A" else "B") + sealed[21:]
    for bad in (flipped, sealed[:-1], sealed[:30], "", "garbage", "!!!!", "A" * 5000, sealed + "AAAA"):
        assert c.unseal(bad, purpose="login", max_age=600) is None, bad


def test_sealing_uses_the_first_key_and_unsealing_tries_all() -> None:
    sealed_with_old = codec(OLD_KEY).seal({"a": 1}, purpose="login")
    assert codec(NEW_KEY, OLD_KEY).unseal(sealed_with_old, purpose="login", max_age=60) == {"a": 1}
    assert codec(NEW_KEY).unseal(sealed_with_old, purpose="login", max_age=60) is None
    sealed_after_rotation = codec(NEW_KEY, OLD_KEY).seal({"a": 1}, purpose="login")
    assert codec(NEW_KEY).unseal(sealed_after_rotation, purpose="login", max_age=60) == {"a": 1}


def test_the_codec_repr_holds_no_secret() -> None:
    c = codec(NEW_KEY, OLD_KEY)
    assert NEW_KEY not in repr(c)
    assert OLD_KEY not in repr(c)
