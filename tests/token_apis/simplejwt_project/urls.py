"""SimpleJWT's own views at the usual paths, the protected API and the test counters."""

from __future__ import annotations

from django.urls import path
from rest_framework_simplejwt.views import TokenBlacklistView, TokenObtainPairView, TokenRefreshView

from tests.token_apis.simplejwt_project import views

urlpatterns = [
    path("api/token/", TokenObtainPairView.as_view()),
    path("api/token/refresh/", TokenRefreshView.as_view()),
    path("api/token/blacklist/", TokenBlacklistView.as_view()),
    path("api/me/", views.me),
    path("test/counts", views.counts),
    path("test/reset", views.reset),
]
