"""`bff keys generate`: a new private key for `private_key_jwt`, and its public JWKS to register.

Writes the private JWK to a new file that only its owner can read (0600, never over an existing
file) and prints the public JWKS on stdout, for the provider's client registration (`jwks`).
Only the command: the key itself is `bff.client_keys`'.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bff.client_keys import CLIENT_ASSERTION_ALGORITHMS, generate_private_jwk, load_client_keys, public_jwks

__all__ = ["DEFAULT_KEY_FILE", "EXIT_REFUSED", "add_keys_parser", "run_keys"]

DEFAULT_KEY_FILE = "client-key.jwk"
EXIT_REFUSED = 1


def add_keys_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="client keys for private_key_jwt")
    actions = keys.add_subparsers(dest="action", required=True)
    generate = actions.add_parser("generate", help="write a new private JWK, print its public JWKS")
    generate.add_argument("--alg", choices=CLIENT_ASSERTION_ALGORITHMS, default="ES256", help="default ES256")
    generate.add_argument("--out", default=DEFAULT_KEY_FILE, help=f"the new key file (default {DEFAULT_KEY_FILE})")


def run_keys(args: argparse.Namespace) -> int:
    """`bff keys generate`: 0 with the public JWKS on stdout, 1 when `--out` exists or cannot be written."""
    jwk = generate_private_jwk(args.alg)
    try:
        # O_EXCL: never replace a key a provider may still know; 0600 from the first byte on.
        descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"bff: keys: {args.out!r} exists; not overwritten", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"bff: keys: {args.out!r}: {exc.strerror}", file=sys.stderr)
        return EXIT_REFUSED
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(jwk, file, indent=2)
        file.write("\n")
    print(json.dumps(public_jwks(load_client_keys([args.out])), indent=2))
    print(f"bff: keys: wrote {args.out!r} ({args.alg}, kid {jwk['kid']})", file=sys.stderr)
    return 0
