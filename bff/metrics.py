"""Metrics: in-process counters, rendered in the Prometheus text format by `/metrics`.

Counting is a dict increment, cheap enough for the proxy's hot path. Each worker process counts
its own requests (scrape each worker, or run one worker per replica).
"""

from __future__ import annotations

from collections import Counter

_HELP = {
    "bff_proxy_requests_total": "Proxied requests by route and status code.",
    "bff_token_refreshes_total": "Access-token refreshes at the provider by outcome.",
    "bff_logins_total": "Completed logins by outcome.",
}


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, Counter[tuple[tuple[str, str], ...]]] = {name: Counter() for name in _HELP}

    def proxied(self, route: str, status: int) -> None:
        self._counters["bff_proxy_requests_total"][(("route", route), ("status", str(status)))] += 1

    def refreshed(self, outcome: str) -> None:
        self._counters["bff_token_refreshes_total"][(("outcome", outcome),)] += 1

    def logged_in(self, outcome: str) -> None:
        self._counters["bff_logins_total"][(("outcome", outcome),)] += 1

    def value(self, name: str, **labels: str) -> int:
        return self._counters[name][tuple(sorted(labels.items()))]

    def render(self) -> str:
        lines: list[str] = []
        for name, counter in self._counters.items():
            lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} counter"]
            for labels, count in sorted(counter.items()):
                label_text = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
                lines.append(f"{name}{{{label_text}}} {count}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
