"""Metrics: Prometheus counters, histograms and a gauge (`prometheus_client`), rendered by `/metrics`.

Each `Metrics` has its own registry (tests build many apps in one process). Under
`bff serve --workers N` (N > 1) the environment variable `PROMETHEUS_MULTIPROC_DIR` names a
directory every worker writes its values to, and `render()` sums them all
(`MultiProcessCollector`): one scrape of any worker covers them all.

Label children are cached per label values, so counting on the proxy's hot path is a dict
lookup and an increment.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["MULTIPROCESS_VARIABLE", "Metrics"]

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside every counter and histogram

_UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self._proxy_requests = Counter(
            "bff_proxy_requests", "Proxied requests by route and status code.", ["route", "status"], registry=registry
        )
        self._refreshes = Counter(
            "bff_token_refreshes", "Access-token refreshes at the provider by outcome.", ["outcome"], registry=registry
        )
        self._logins = Counter("bff_logins", "Completed logins by outcome.", ["outcome"], registry=registry)
        self._logouts = Counter("bff_logouts", "Logouts by outcome.", ["outcome"], registry=registry)
        self._store_errors = Counter(
            "bff_store_errors",
            "Session-store operations that failed (StoreUnavailable).",
            ["operation"],
            registry=registry,
        )
        self._refresh_waits = Counter(
            "bff_refresh_waits", "Requests that awaited a refresh another request started.", registry=registry
        )
        self._upstream = Histogram(
            "bff_upstream_seconds",
            "Time from sending a proxied request to the upstream's response headers, by route.",
            ["route"],
            buckets=_UPSTREAM_BUCKETS,
            registry=registry,
        )
        self._refresh_seconds = Histogram(
            "bff_refresh_seconds",
            "Duration of refresh calls to the provider.",
            buckets=_PROVIDER_BUCKETS,
            registry=registry,
        )
        self._refresh_wait_seconds = Histogram(
            "bff_refresh_wait_seconds",
            "How long requests waited for a refresh another request started.",
            buckets=_PROVIDER_BUCKETS,
            registry=registry,
        )
        # livesum: under --workers N the scrape adds up the live workers' values.
        self._open_streams = Gauge(
            "bff_open_streams",
            "Open SSE responses and WebSocket relays of signed-in sessions, by kind.",
            ["kind"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self._proxied: dict[tuple[str, int], Any] = {}
        self._upstreams: dict[str, Any] = {}

    # -- counting -------------------------------------------------------------------------------

    def proxied(self, route: str, status: int) -> None:
        child = self._proxied.get((route, status))
        if child is None:
            child = self._proxied[(route, status)] = self._proxy_requests.labels(route, str(status))
        child.inc()

    def upstream(self, route: str, seconds: float) -> None:
        child = self._upstreams.get(route)
        if child is None:
            child = self._upstreams[route] = self._upstream.labels(route)
        child.observe(seconds)

    def refreshed(self, outcome: str) -> None:
        self._refreshes.labels(outcome).inc()

    def refresh_took(self, seconds: float) -> None:
        self._refresh_seconds.observe(seconds)

    def waited_for_refresh(self, seconds: float) -> None:
        self._refresh_waits.inc()
        self._refresh_wait_seconds.observe(seconds)

    def logged_in(self, outcome: str) -> None:
        self._logins.labels(outcome).inc()

    def logged_out(self, outcome: str) -> None:
        self._logouts.labels(outcome).inc()

    def store_failed(self, operation: str) -> None:
        self._store_errors.labels(operation).inc()

    def stream_opened(self, kind: str) -> None:
        self._open_streams.labels(kind).inc()

    def stream_closed(self, kind: str) -> None:
        self._open_streams.labels(kind).dec()

    # -- reading --------------------------------------------------------------------------------

    def value(self, name: str, **labels: str) -> int:
        """A counter's or gauge's value in this process (tests), 0 before its first change."""
        return int(self.registry.get_sample_value(name, labels) or 0)

    def render(self) -> bytes:
        """The Prometheus text exposition: of every worker when in multiprocess mode."""
        if os.environ.get(MULTIPROCESS_VARIABLE):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
