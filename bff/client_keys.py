"""The BFF's own signing keys for `private_key_jwt` (RFC 7523): loading, publishing, generating.

`oidc.client_keys` lists key files, each a PEM private key (RSA of 2048 bits or more, or EC
P-256), a private JWK, or a JWKS of private JWKs. The first key signs the client assertions; all
of them are published (`public_jwks`, served at `/bff/jwks`), so a provider already knows the
next key before it signs: rotation is "add the new key second, then move it first".

Owns reading the files, the `alg` and `kid` of each key (the JWK's own, else the RFC 7638
thumbprint), their public halves and new keys for `bff keys generate`. Leaves signing the
assertion to `bff.client_auth` and serving the JWKS to `bff.endpoints`. A problem is one
`ConfigError` line naming the setting and the file, never the file's content.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bff.dpop import jwk_thumbprint
from bff.errors import ConfigError

__all__ = [
    "CLIENT_ASSERTION_ALGORITHMS",
    "ClientAssertionAlg",
    "ClientAuthMethod",
    "ClientKey",
    "PrivateKey",
    "client_credential_problems",
    "generate_private_jwk",
    "load_client_keys",
    "public_jwks",
]

ClientAssertionAlg = Literal["RS256", "PS256", "ES256"]
ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]
CLIENT_ASSERTION_ALGORITHMS: tuple[ClientAssertionAlg, ...] = ("RS256", "PS256", "ES256")
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_SETTING = "oidc.client_keys"
_MIN_RSA_BITS = 2048  # FAPI 2.0 §5.4.1 and NIST: shorter RSA keys are refused
_ALGS_OF_KTY: Mapping[str, tuple[ClientAssertionAlg, ...]] = {"RSA": ("RS256", "PS256"), "EC": ("ES256",)}
# RFC 7638 §3.2: the required members of each key type, the only ones the thumbprint hashes.
_PUBLIC_MEMBERS: Mapping[str, tuple[str, ...]] = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}


@dataclass(frozen=True)
class ClientKey:
    """One private key with the `kid` and `alg` it signs with; `public_jwk` is safe to publish."""

    kid: str
    alg: ClientAssertionAlg
    private_key: PrivateKey = field(repr=False)
    public_jwk: Mapping[str, str] = field(repr=False)


def load_client_keys(paths: Sequence[str], alg: ClientAssertionAlg | None = None) -> tuple[ClientKey, ...]:
    """The keys of `oidc.client_keys`, in order; `alg` (`oidc.client_assertion_alg`) overrides
    each key's own. Raises `ConfigError` listing every file that cannot be used."""
    problems: list[str] = []
    keys: list[ClientKey] = []
    for index, path in enumerate(paths):
        where = f"{_SETTING}[{index}] ({path!r})"
        try:
            keys.extend(_client_key(key, jwk_alg, kid, alg) for key, jwk_alg, kid in _read_key_file(Path(path)))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    if problems:
        raise ConfigError(problems)
    return tuple(keys)


def client_credential_problems(
    method: ClientAuthMethod, client_secret: str, paths: Sequence[str], alg: ClientAssertionAlg | None
) -> list[str]:
    """Config check: the secret the secret methods need, the key files `private_key_jwt` needs."""
    if method != "private_key_jwt":
        return [] if client_secret else ["oidc.client_secret: missing (required for a confidential client)"]
    if not paths:
        return [f"{_SETTING}: missing (token_endpoint_auth_method 'private_key_jwt' signs with them)"]
    try:
        load_client_keys(paths, alg)
    except ConfigError as error:
        return error.problems
    return []


def public_jwks(keys: Sequence[ClientKey]) -> dict[str, list[dict[str, str]]]:
    """The JWKS a provider verifies the assertions with: public members, `kid`, `alg`, `use`."""
    return {"keys": [dict(key.public_jwk) for key in keys]}


def generate_private_jwk(alg: ClientAssertionAlg) -> dict[str, str]:
    """A new private JWK for `alg` (RSA 2048 for RS256/PS256, P-256 for ES256) with `kid`, `alg`, `use`."""
    key: PrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else rsa.generate_private_key(65537, 2048)
    )
    jwk = _to_jwk(key)
    jwk.pop("key_ops", None)
    return {**jwk, "kid": jwk_thumbprint(jwk), "alg": alg, "use": "sig"}


def _read_key_file(path: Path) -> list[tuple[PrivateKey, str | None, str | None]]:
    """(private key, the JWK's `alg`, the JWK's `kid`) of each key in the file."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise ValueError("not found") from None
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror})") from None
    if content.lstrip().startswith(b"-----BEGIN"):
        return [(_pem_private_key(content), None, None)]
    try:
        document = json.loads(content)
    except ValueError:
        raise ValueError("is neither a PEM private key nor JSON (a JWK or JWKS)") from None
    if not isinstance(document, dict):
        raise ValueError("is not a JSON object (a JWK or JWKS)")
    jwks = document.get("keys", [document])
    if not isinstance(jwks, list) or not jwks or not all(isinstance(jwk, dict) for jwk in jwks):
        raise ValueError('has no keys (a JWKS needs a non-empty "keys" list of JWK objects)')
    return [_jwk_private_key(jwk) for jwk in jwks]


def _pem_private_key(content: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(content, password=None)
    except TypeError:
        raise ValueError("is an encrypted PEM key; store it unencrypted with file mode 0600") from None
    except ValueError:
        raise ValueError("is not a PEM private key (a public key or certificate cannot sign)") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("is not an RSA or EC private key")
    return key


def _jwk_private_key(jwk: dict[str, Any]) -> tuple[PrivateKey, str | None, str | None]:
    if jwk.get("kty") not in _ALGS_OF_KTY:
        raise ValueError(f"has a JWK of kty {str(jwk.get('kty'))[:20]!r}; RSA or EC is supported")
    if "d" not in jwk:
        raise ValueError("has a public JWK only; the private key is needed to sign")
    try:
        # Without its "alg": PyJWK would refuse a misfit with a vaguer message than ours.
        key = jwt.PyJWK({name: value for name, value in jwk.items() if name != "alg"}).key
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, KeyError):
        raise ValueError("has a JWK that is not a valid private key") from None
    alg, kid = jwk.get("alg"), jwk.get("kid")
    return key, str(alg) if alg is not None else None, str(kid) if kid is not None else None


def _client_key(key: PrivateKey, jwk_alg: str | None, kid: str | None, configured: str | None) -> ClientKey:
    if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"is an EC key on {key.curve.name}; only P-256 (ES256) is supported")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < _MIN_RSA_BITS:
        raise ValueError(f"is an RSA key of {key.key_size} bits; at least {_MIN_RSA_BITS} are required")
    kty = "EC" if isinstance(key, ec.EllipticCurvePrivateKey) else "RSA"
    fitting = _ALGS_OF_KTY[kty]
    alg = configured or jwk_alg or fitting[0]
    if alg not in fitting:
        source = "oidc.client_assertion_alg" if configured else 'the JWK\'s "alg"'
        raise ValueError(f"{source} {alg[:20]!r} does not fit an {kty} key (use {' or '.join(fitting)})")
    public = {name: value for name, value in _to_jwk(key.public_key()).items() if name in _PUBLIC_MEMBERS[kty]}
    kid = kid or jwk_thumbprint(public)
    signing_alg = next(choice for choice in fitting if choice == alg)
    return ClientKey(
        kid=kid, alg=signing_alg, private_key=key, public_jwk={**public, "kid": kid, "alg": alg, "use": "sig"}
    )


def _to_jwk(key: PrivateKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> dict[str, str]:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return dict(jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True))
    return dict(jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True))
