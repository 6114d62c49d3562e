"""Django settings of the SimpleJWT test API (see the package docstring for the environment)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

# Test fixture, not a secret: it signs the test API's tokens (SimpleJWT's SIGNING_KEY defaults to it).
SECRET_KEY = "bff-tests-simplejwt-fixture-key-not-a-secret-0123456789"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "tests.token_apis.simplejwt_project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
]
MIDDLEWARE = ["tests.token_apis.simplejwt_project.views.CountRequests"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": Path(os.environ["TOKEN_API_DB_DIR"]) / "simplejwt.sqlite3",
        "OPTIONS": {
            # Concurrent refreshes write (blacklist, outstanding tokens): WAL lets readers go on,
            # IMMEDIATE takes the write lock at BEGIN (waiting up to `timeout` seconds for it)
            # instead of failing with "database is locked" when a read transaction upgrades.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        },
    }
}

# A fast hasher: logins of the tests should not spend a second each in PBKDF2.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework_simplejwt.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=int(os.environ.get("TOKEN_API_ACCESS_LIFETIME", "4"))),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=int(os.environ.get("TOKEN_API_REFRESH_LIFETIME", "3600"))),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "TOKEN_OBTAIN_SERIALIZER": "tests.token_apis.simplejwt_project.views.ObtainPairWithPadding",
}
