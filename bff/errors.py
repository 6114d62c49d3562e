"""The BffError tree: the only place a failure gets its HTTP status and its JSON `error` code.

    BffError                     500 server_error
      ConfigError                startup only; lists every problem
      NotAuthenticated           401 not_authenticated
      SessionExpired             401 session_expired      the session is gone; cookie cleared
      CSRFRejected               403 csrf_rejected
      OriginRejected             403 origin_rejected      cross-site WebSocket upgrade or request
      PeerRejected               403 peer_rejected        auth-request endpoint asked by an untrusted peer
      NotFound                   404 not_found
      PayloadTooLarge            413 payload_too_large
      HeadersTooLarge            431 headers_too_large
      NotAvailable               404 not_available        a feature this configuration does not have
      LoginFailed                400 login_failed         state, nonce or issuer mismatch
      InvalidCredentials         401 invalid_credentials  the token API refused the user's credentials
      TooManyRequests            429 too_many_requests    the token API throttles logins; its Retry-After
      BadRequest                 400 bad_request
      SessionTooLarge            500 session_too_large    a cookie-mode session that no cookies can hold
      IdPError                   502 idp_error            .error .error_description .status
        RefreshRejected          401 session_expired      .error == "invalid_grant"; session deleted
        ProviderUnavailable      503 provider_unavailable  network error or 5xx; Retry-After; session kept
      StoreUnavailable           503 store_unavailable
      UpstreamUnavailable        502 upstream_unavailable
      UpstreamTimeout            504 upstream_timeout

Messages name what was checked and what was expected. They never contain a token, a code, a
cookie value or a secret.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

__all__ = [
    "BadRequest",
    "BffError",
    "CSRFRejected",
    "ConfigError",
    "HeadersTooLarge",
    "IdPError",
    "InvalidCredentials",
    "LoginFailed",
    "NotAuthenticated",
    "NotAvailable",
    "NotFound",
    "OriginRejected",
    "PayloadTooLarge",
    "PeerRejected",
    "ProviderUnavailable",
    "RefreshRejected",
    "SessionExpired",
    "SessionTooLarge",
    "StoreUnavailable",
    "TooManyRequests",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class BffError(Exception):
    status_code = 500
    code = "server_error"

    def __init__(self, detail: str = "", *, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        # Extra response headers, e.g. the Set-Cookie that clears a dead session.
        self.headers: list[tuple[str, str]] = list(headers)

    def body(self) -> bytes:
        return json.dumps({"error": self.code, "detail": self.detail}).encode()

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """ASGI response headers: JSON content type, no caching, plus `self.headers`."""
        body_length = str(len(self.body())).encode()
        return [
            (b"content-type", b"application/json"),
            (b"content-length", body_length),
            (b"cache-control", b"no-store"),
            *((name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers),
        ]


class ConfigError(BffError):
    """Invalid configuration; `problems` holds one line per problem, each naming its key."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n  " + "\n  ".join(self.problems))


class NotAuthenticated(BffError):
    status_code = 401
    code = "not_authenticated"


class SessionExpired(BffError):
    status_code = 401
    code = "session_expired"


class CSRFRejected(BffError):
    status_code = 403
    code = "csrf_rejected"


class OriginRejected(BffError):
    status_code = 403
    code = "origin_rejected"


class PeerRejected(BffError):
    status_code = 403
    code = "peer_rejected"


class NotFound(BffError):
    status_code = 404
    code = "not_found"


class NotAvailable(BffError):
    status_code = 404
    code = "not_available"


class InvalidCredentials(BffError):
    status_code = 401
    code = "invalid_credentials"


class TooManyRequests(BffError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, detail: str, *, retry_after: str | None = None) -> None:
        super().__init__(detail, headers=[("retry-after", retry_after)] if retry_after else [])


class SessionTooLarge(BffError):
    code = "session_too_large"


class PayloadTooLarge(BffError):
    status_code = 413
    code = "payload_too_large"


class HeadersTooLarge(BffError):
    status_code = 431
    code = "headers_too_large"


class BadRequest(BffError):
    status_code = 400
    code = "bad_request"


class LoginFailed(BffError):
    status_code = 400
    code = "login_failed"


class IdPError(BffError):
    """The provider answered with an error. `.error` is its OAuth error code: branch on that."""

    status_code = 502
    code = "idp_error"

    def __init__(
        self,
        detail: str,
        *,
        error: str = "",
        error_description: str = "",
        status: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(detail, headers=headers)
        self.error = error
        self.error_description = error_description
        self.status = status


class RefreshRejected(IdPError):
    status_code = 401
    code = "session_expired"


class ProviderUnavailable(IdPError):
    status_code = 503
    code = "provider_unavailable"

    def __init__(self, detail: str, *, retry_after: float = 5, status: int | None = None) -> None:
        super().__init__(detail, status=status, headers=[("retry-after", str(max(1, round(retry_after))))])


class StoreUnavailable(BffError):
    status_code = 503
    code = "store_unavailable"

    def __init__(self, detail: str, *, retry_after: float = 2) -> None:
        super().__init__(detail, headers=[("retry-after", str(max(1, round(retry_after))))])


class UpstreamUnavailable(BffError):
    status_code = 502
    code = "upstream_unavailable"


class UpstreamTimeout(BffError):
    status_code = 504
    code = "upstream_timeout"
