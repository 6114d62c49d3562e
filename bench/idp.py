"""The identity provider of the opt-in `bff-user` set-up: `bff demo`'s development provider alone,
on uvicorn, with the issuer at `http://127.0.0.1:PORT/idp`. It is only called at login (before
the measurement) and at refresh (never during one: access tokens live an hour).

    python bench/idp.py --port 9100 --client-secret S --redirect-uri http://127.0.0.1:8000/bff/callback
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from bff.demo.idp import DevIdentityProvider
from bff.demo.oauth import DemoClient

CLIENT_ID = "bench-bff"


def main() -> None:
    parser = argparse.ArgumentParser(description="development OpenID provider for the bench's bff-user set-up")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--redirect-uri", required=True)
    parser.add_argument("--audience", default="bench-api")
    parser.add_argument("--access-ttl", type=float, default=3600)
    args = parser.parse_args()
    issuer = f"http://127.0.0.1:{args.port}/idp"
    provider = DevIdentityProvider(
        issuer=issuer,
        clients=[DemoClient(CLIENT_ID, args.client_secret, redirect_uris=(args.redirect_uri,))],
        api_audience=args.audience,
        access_ttl=args.access_ttl,
    )
    app = Starlette(routes=[Mount("/idp", app=provider.app())])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
