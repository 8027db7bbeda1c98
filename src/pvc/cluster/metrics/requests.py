"""pvc_api_request_duration_seconds: how long the API takes to answer, by route (a PVC extension).

A prometheus_client Histogram in a registry of its own (not the process-wide default one, which
would add the Python runtime's families to every scrape); labelled by the route's path template,
never the raw path, so a VM name cannot create a series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

NAME = "pvc_api_request_duration_seconds"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestTimes:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.histogram = Histogram(
            NAME,
            "API answer time, seconds, by method, route template (under /api/v1) and status",
            ("method", "route", "status"),
            buckets=BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.histogram.labels(method, route, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
