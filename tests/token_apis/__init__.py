"""Real third-party JWT login APIs for the token-API mode's integration tests (test fixtures only).

`simplejwt_project/` is Django REST framework with `djangorestframework-simplejwt` (rotating,
blacklisted refresh tokens), `flask_jwt_app.py` is Flask with `flask-jwt-extended` (refresh
tokens that do not rotate, revoked through a blocklist). The authentication logic is the
libraries'; the code here only configures them and adds `/test/counts` and `/test/reset`.
`tests/support/token_apis.py` starts them under waitress on free loopback ports.
"""
