"""A minimal Django project around `djangorestframework-simplejwt`; `serve.py` runs it.

Configured through the environment (`tests/support/token_apis.py` sets it):

- `TOKEN_API_DB_DIR` (required): directory of the SQLite database, migrated at start;
- `TOKEN_API_ACCESS_LIFETIME`, `TOKEN_API_REFRESH_LIFETIME`: seconds (default 4 and 3600);
- `TOKEN_API_PASSWORD`: `alice`'s password (default `TEST_PASSWORD`, a test-fixture constant);
- `TOKEN_API_EXTRA_CLAIM_BYTES`: when > 0, every token carries a padding claim that long;
- `TOKEN_API_PORT` (required), `TOKEN_API_THREADS` (default 64): for waitress.
"""
