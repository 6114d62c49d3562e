"""`/healthz` (liveness), `/readyz` (readiness: the store answers, and so does the login source;
503 `{"status": "shutting_down"}` from the moment `bff serve` is told to stop)
and `/metrics` (Prometheus text). Never behind the session or the anti-forgery check; what they
report holds no secret.
"""

from __future__ import annotations

import json
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bff.errors import BffError
from bff.login import LoginSource
from bff.metrics import Metrics
from bff.stores import Store

__all__ = ["HealthParts", "build_health_routes"]


class HealthParts(Protocol):
    @property
    def metrics(self) -> Metrics: ...
    @property
    def store(self) -> Store: ...
    @property
    def source(self) -> LoginSource | None: ...
    @property
    def draining(self) -> bool: ...


def build_health_routes(parts: HealthParts) -> list[BaseRoute]:
    async def healthz(_request: Request) -> Response:
        return _json({"status": "ok"}, 200)

    async def readyz(_request: Request) -> Response:
        if parts.draining:  # SIGTERM: out of the load balancer's rotation at once
            return _json({"status": "shutting_down"}, 503)
        checks: dict[str, str] = {}
        try:
            await parts.store.ping()
            checks["store"] = "ok"
        except BffError as exc:
            checks["store"] = exc.detail or exc.code
        if parts.source is not None:
            try:
                await parts.source.ready()
                checks["provider"] = "ok"
            except BffError as exc:
                checks["provider"] = exc.detail or exc.code
        ready = all(value == "ok" for value in checks.values())
        return _json({"status": "ok" if ready else "unavailable", **checks}, 200 if ready else 503)

    async def metrics(_request: Request) -> Response:
        return Response(parts.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def _json(body: dict[str, str], status: int) -> Response:
    return Response(
        json.dumps(body), status_code=status, media_type="application/json", headers={"cache-control": "no-store"}
    )
