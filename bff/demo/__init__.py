"""`bff demo`: the whole product on one port, for trying it out. Development only.

    idp.py     DevIdentityProvider: an in-memory OpenID provider (not for production), HTTP side
    grants.py  GrantBook: its login sessions, codes, grants, refresh tokens and the JWTs it signs
    pages.py   its HTML pages (login, signed out, errors)
    keys.py    SigningKey: the RS256 key the provider makes at start, its JWK and JWTs
    api.py     DemoAPI: a small JWT-protected API (who am I, to-dos, an SSE clock)
    run.py     run_demo: wires the provider, the API and frontend-demo/ through `create_app`

Nothing in the BFF imports this package; only `bff.cli` does, for `bff demo`. It runs under
`bff.server`, as `bff serve` does.
"""

__all__: list[str] = []
