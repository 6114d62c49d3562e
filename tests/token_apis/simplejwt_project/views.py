"""The test API's own code: the protected `/api/me/`, the request counters and the padding claim.

Logins, refreshes and the blacklist are SimpleJWT's views as they come (`urls.py`)."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer
from rest_framework_simplejwt.tokens import Token

PADDING_CLAIM = "bff_test_padding"
EXTRA_CLAIM_BYTES = int(os.environ.get("TOKEN_API_EXTRA_CLAIM_BYTES", "0"))

_counts: Counter[str] = Counter()
_counts_lock = threading.Lock()


class CountRequests:
    """Middleware: counts every request by path (answered or refused), except `/test/...`."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path: str = request.path
        if not path.startswith("/test/"):
            with _counts_lock:
                _counts[path] += 1
        return self.get_response(request)


def counts(request: HttpRequest) -> HttpResponse:
    """`GET /test/counts`: `{path: requests}` since the start or the last reset."""
    if request.method != "GET":
        return HttpResponseNotAllowed(["GET"])
    with _counts_lock:
        return JsonResponse(dict(_counts))


def reset(request: HttpRequest) -> HttpResponse:
    """`POST /test/reset` (no CSRF check: the project has no CSRF middleware, and the REST
    framework checks CSRF only for session authentication)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    with _counts_lock:
        _counts.clear()
    return JsonResponse({})


def _me(request: Request) -> Response:
    """Who the access token belongs to, and the request it came with (authentication and the
    `IsAuthenticated` check are the REST framework defaults of `settings.py`)."""
    body: bytes = request.body
    return Response(
        {
            "user_id": request.user.pk,
            "username": request.user.get_username(),
            "method": request.method,
            "body": body.decode(errors="replace"),
        }
    )


me = api_view(["GET", "POST"])(_me)


class ObtainPairWithPadding(TokenObtainPairSerializer):
    """SimpleJWT's login serializer, with a claim of `TOKEN_API_EXTRA_CLAIM_BYTES` characters added
    to the refresh token when that is set (SimpleJWT copies it into the access tokens and keeps
    it through rotations), for tests of large tokens."""

    @classmethod
    def get_token(cls, user: object) -> Token:
        token = super().get_token(user)
        if EXTRA_CLAIM_BYTES > 0:
            token[PADDING_CLAIM] = "x" * EXTRA_CLAIM_BYTES
        return token
