"""Run the SimpleJWT test API: migrate its SQLite database, create (or reset) the user `alice`,
then serve the WSGI app under waitress with a pool of threads on `127.0.0.1:$TOKEN_API_PORT`.

    TOKEN_API_PORT=8000 TOKEN_API_DB_DIR=/tmp/simplejwt python -m tests.token_apis.simplejwt_project.serve
"""

from __future__ import annotations

import os

USERNAME = "alice"
# Test fixture, not a secret.
TEST_PASSWORD = "alice-test-password"


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.token_apis.simplejwt_project.settings")
    import django
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from waitress import serve

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username=USERNAME)
    user.set_password(os.environ.get("TOKEN_API_PASSWORD", TEST_PASSWORD))
    user.save()
    serve(
        get_wsgi_application(),
        host="127.0.0.1",
        port=int(os.environ["TOKEN_API_PORT"]),
        threads=int(os.environ.get("TOKEN_API_THREADS", "64")),
        ident="simplejwt-test-api",
    )


if __name__ == "__main__":
    main()
