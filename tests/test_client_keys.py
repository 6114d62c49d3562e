"""Client keys of `private_key_jwt`: each file format and algorithm, `kid`s, bad files, the
published JWKS (never a private member) and `generate_private_jwk`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bff.client_keys import (
    ClientAssertionAlg,
    client_credential_problems,
    generate_private_jwk,
    load_client_keys,
    public_jwks,
)
from bff.dpop import jwk_thumbprint
from bff.errors import ConfigError

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def config_problems(paths: list[str], alg: ClientAssertionAlg | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_client_keys(paths, alg)
    return info.value.problems


@pytest.mark.parametrize(("alg", "kty"), [("ES256", "EC"), ("PS256", "RSA"), ("RS256", "RSA")])
def test_a_generated_jwk_loads_with_its_own_alg_and_kid(tmp_path: Path, alg: ClientAssertionAlg, kty: str) -> None:
    jwk = generate_private_jwk(alg)
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == (kty, alg, "sig")
    (key,) = load_client_keys([write(tmp_path, "key.jwk", json.dumps(jwk))])
    assert (key.alg, key.kid) == (alg, jwk["kid"])
    assert key.kid == jwk_thumbprint(jwk)


@pytest.mark.parametrize(
    ("key", "alg"),
    [(rsa.generate_private_key(65537, 2048), "RS256"), (ec.generate_private_key(ec.SECP256R1()), "ES256")],
)
def test_a_pem_key_gets_the_default_alg_and_its_thumbprint_as_kid(
    tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, alg: str
) -> None:
    (loaded,) = load_client_keys([write(tmp_path, "key.pem", pem(key))])
    assert loaded.alg == alg
    assert loaded.kid == jwk_thumbprint(loaded.public_jwk)


def test_the_configured_alg_overrides_the_default(tmp_path: Path) -> None:
    path = write(tmp_path, "key.pem", pem(rsa.generate_private_key(65537, 2048)))
    (key,) = load_client_keys([path], "PS256")
    assert key.alg == "PS256"
    assert key.public_jwk["alg"] == "PS256"


def test_rfc7638_thumbprint_example() -> None:
    # RFC 7638 §3.1
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRX"
        "jBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8K"
        "JZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBn"
        "iIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_a_jwks_file_and_several_files_keep_their_order(tmp_path: Path) -> None:
    first, second, third = (generate_private_jwk(alg) for alg in ("ES256", "PS256", "RS256"))
    jwks_path = write(tmp_path, "keys.json", json.dumps({"keys": [first, second]}))
    keys = load_client_keys([jwks_path, write(tmp_path, "third.jwk", json.dumps(third))])
    assert [key.kid for key in keys] == [first["kid"], second["kid"], third["kid"]]


def test_the_published_jwks_has_no_private_member(tmp_path: Path) -> None:
    paths = [write(tmp_path, f"{alg}.jwk", json.dumps(generate_private_jwk(alg))) for alg in ("ES256", "RS256")]
    jwks = public_jwks(load_client_keys(paths))
    assert [sorted(jwk) for jwk in jwks["keys"]] == [
        ["alg", "crv", "kid", "kty", "use", "x", "y"],
        ["alg", "e", "kid", "kty", "n", "use"],
    ]
    assert not PRIVATE_MEMBERS & {member for jwk in jwks["keys"] for member in jwk}


def test_a_key_repr_shows_no_key_material(tmp_path: Path) -> None:
    jwk = generate_private_jwk("ES256")
    (key,) = load_client_keys([write(tmp_path, "key.jwk", json.dumps(jwk))])
    assert jwk["d"] not in repr(key)
    assert jwk["x"] not in repr(key)


def test_bad_files_are_one_line_each_naming_the_setting_and_the_file(tmp_path: Path) -> None:
    public_only = {k: v for k, v in generate_private_jwk("ES256").items() if k != "d"}
    small_rsa = rsa.generate_private_key(65537, 1024)  # noqa: S505 (the key this test refuses)
    paths = [
        str(tmp_path / "missing.pem"),
        write(tmp_path, "public.jwk", json.dumps(public_only)),
        write(
            tmp_path,
            "public.pem",
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        ),
        write(tmp_path, "p384.pem", pem(ec.generate_private_key(ec.SECP384R1()))),
        write(tmp_path, "small.pem", pem(small_rsa)),
        write(tmp_path, "oct.jwk", json.dumps({"kty": "oct", "k": "c2VjcmV0"})),
        write(tmp_path, "garbage.txt", "not a key"),
        write(tmp_path, "empty.json", json.dumps({"keys": []})),
        str(tmp_path),
    ]
    assert config_problems(paths) == [
        f"oidc.client_keys[0] ({paths[0]!r}): not found",
        f"oidc.client_keys[1] ({paths[1]!r}): has a public JWK only; the private key is needed to sign",
        f"oidc.client_keys[2] ({paths[2]!r}): is not a PEM private key (a public key or certificate cannot sign)",
        f"oidc.client_keys[3] ({paths[3]!r}): is an EC key on secp384r1; only P-256 (ES256) is supported",
        f"oidc.client_keys[4] ({paths[4]!r}): is an RSA key of 1024 bits; at least 2048 are required",
        f"oidc.client_keys[5] ({paths[5]!r}): has a JWK of kty 'oct'; RSA or EC is supported",
        f"oidc.client_keys[6] ({paths[6]!r}): is neither a PEM private key nor JSON (a JWK or JWKS)",
        f'oidc.client_keys[7] ({paths[7]!r}): has no keys (a JWKS needs a non-empty "keys" list of JWK objects)',
        f"oidc.client_keys[8] ({paths[8]!r}): cannot be read (Is a directory)",
    ]


def test_an_encrypted_pem_key_is_refused_with_a_hint(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    path = write(tmp_path, "encrypted.pem", encrypted)
    assert config_problems([path]) == [
        f"oidc.client_keys[0] ({path!r}): is an encrypted PEM key; store it unencrypted with file mode 0600"
    ]


def test_a_problem_line_never_shows_the_key(tmp_path: Path) -> None:
    jwk = {**generate_private_jwk("RS256"), "alg": "ES256"}
    path = write(tmp_path, "key.jwk", json.dumps(jwk))
    (problem,) = config_problems([path])
    assert (
        problem
        == f"oidc.client_keys[0] ({path!r}): the JWK's \"alg\" 'ES256' does not fit an RSA key (use RS256 or PS256)"
    )
    assert jwk["d"][:16] not in problem


def test_an_alg_that_does_not_fit_the_key_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "key.pem", pem(ec.generate_private_key(ec.SECP256R1())))
    assert config_problems([path], "PS256") == [
        f"oidc.client_keys[0] ({path!r}): oidc.client_assertion_alg 'PS256' does not fit an EC key (use ES256)"
    ]


def test_credential_problems_of_each_method(tmp_path: Path) -> None:
    path = write(tmp_path, "key.jwk", json.dumps(generate_private_jwk("ES256")))
    assert client_credential_problems("client_secret_basic", "", (), None) == [
        "oidc.client_secret: missing (required for a confidential client)"
    ]
    assert client_credential_problems("client_secret_post", "s3cret", (), None) == []
    assert client_credential_problems("private_key_jwt", "", (), None) == [
        "oidc.client_keys: missing (token_endpoint_auth_method 'private_key_jwt' signs with them)"
    ]
    assert client_credential_problems("private_key_jwt", "", (path,), None) == []
