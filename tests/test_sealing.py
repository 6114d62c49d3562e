"""Sealer: AES-GCM under HKDF-derived keys, newest key first, every key opens."""

from __future__ import annotations

from bff.sealing import OVERHEAD, Sealer

SALT, INFO = b"salt", b"info"


def test_a_sealed_value_opens_and_reveals_nothing() -> None:
    sealer = Sealer([b"key-one"], salt=SALT, info=INFO)
    sealed = sealer.seal(b"the plaintext", b"aad")
    assert len(sealed) == len(b"the plaintext") + OVERHEAD
    assert b"plaintext" not in sealed
    assert sealer.open(sealed, b"aad") == b"the plaintext"
    assert sealer.seal(b"the plaintext", b"aad") != sealed  # a fresh nonce each time


def test_tampered_short_other_aad_and_other_purposes_do_not_open() -> None:
    sealer = Sealer([b"key-one"], salt=SALT, info=INFO)
    sealed = sealer.seal(b"x", b"aad")
    assert sealer.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"aad") is None
    assert sealer.open(sealed[: OVERHEAD - 1], b"aad") is None
    assert sealer.open(sealed, b"other") is None
    assert Sealer([b"key-one"], salt=SALT, info=b"other purpose").open(sealed, b"aad") is None


def test_the_first_key_seals_and_every_listed_key_opens() -> None:
    old = Sealer([b"old"], salt=SALT, info=INFO)
    rotated = Sealer([b"new", b"old"], salt=SALT, info=INFO)
    from_old = old.seal(b"before")
    assert rotated.open(from_old) == b"before"
    assert old.open(rotated.seal(b"after")) is None  # sealed under the new key
    assert Sealer([b"new"], salt=SALT, info=INFO).open(from_old) is None  # the old key retired
