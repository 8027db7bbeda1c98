"""Prometheus metrics: /api/v1/metrics and its four parts, with upstream's names and labels.

Upstream registered these only with `subsystem.enable_prometheus` and left them open to anyone;
here they answer 404 while that key is false, and ask for the API token unless
`api.metrics_auth: none` opens them (upstream's behaviour, for a trusted monitoring network).
Health and resource text come from the metrics cache (pvc.cluster.metrics.cache); the Ceph and
ZooKeeper proxies are bounded in time and fetched at most once per cache interval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response

from pvc.adapters import metricsproxy
from pvc.api.auth import require_auth
from pvc.cluster.metrics import CONTENT_TYPE, CertificateExpiry, MetricsCache, RequestTimes
from pvc.cluster.metrics.cache import INTERVAL, MAX_STALE, Refreshing
from pvc.core.errors import NotFound

router = APIRouter(tags=["metrics"])
TEXT = {
    200: {
        "description": "Prometheus text exposition format 0.0.4",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


async def metrics_allowed(request: Request) -> None:
    """404 while subsystem.enable_prometheus is false; the API token (X-Api-Key, a session, or
    `Authorization: Bearer <token>` as Prometheus sends it) unless api.metrics_auth: none."""
    settings = request.app.state.settings
    if not settings.subsystem.enable_prometheus:
        raise NotFound("Metrics are disabled (subsystem.enable_prometheus: false)")
    if settings.api.metrics_auth == "none":
        return
    # Prometheus sends a token as `Authorization: Bearer` (its scrape configs cannot set X-Api-Key)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token and request.app.state.auth.token_valid(token.strip()):
        return
    await require_auth(request)


class Metrics:
    """Per application: the metrics cache, the proxies' cached answers, the request timer and
    the served certificate's expiry."""

    def __init__(self, app: FastAPI, interval: float = INTERVAL) -> None:
        self.app = app
        self.cache = MetricsCache(app.state.zk, interval=interval)
        self.times = RequestTimes()
        ssl = app.state.settings.api.ssl
        self.certificate = CertificateExpiry(ssl.certificate if ssl.enabled else None)
        self.ceph = Refreshing(self._ceph, interval, MAX_STALE)
        self.zookeeper = Refreshing(self._zookeeper, interval, MAX_STALE)
        self._storage_lock = threading.Lock()

    def _ceph(self) -> bytes:
        def mgr_dump() -> dict[str, Any]:
            storage = self.app.state.storage
            if storage is None:
                from pvc.adapters.ceph import storage_from_settings

                with self._storage_lock:
                    storage = self.app.state.storage
                    if storage is None:
                        storage = self.app.state.storage = storage_from_settings(self.app.state.settings)
            return storage.mon_command("mgr dump")

        return metricsproxy.ceph_metrics(mgr_dump).text.encode()

    def _zookeeper(self) -> bytes:
        settings = self.app.state.settings
        return metricsproxy.zookeeper_metrics(
            list(settings.zookeeper.hosts), settings.zookeeper.metrics_port
        ).text.encode()


def _metrics(request: Request) -> Metrics:
    found: Metrics | None = getattr(request.app.state, "metrics", None)
    if found is None:
        found = request.app.state.metrics = Metrics(request.app)
    return found


def _text(body: bytes) -> Response:
    return Response(body, media_type=CONTENT_TYPE)


DOCS: dict[str, Any] = {
    "responses": {**TEXT, 404: {"description": "Metrics are disabled (subsystem.enable_prometheus: false)"}},
    "response_class": Response,
    "dependencies": [Depends(metrics_allowed)],
}


@router.get(
    "/metrics", summary="All metrics: health, resource, Ceph and ZooKeeper (the scrape target)", **DOCS
)
def all_metrics(request: Request) -> Response:
    metrics = _metrics(request)
    build = metrics.cache.get()
    return _text(
        b"".join(
            (
                build.health,
                build.resource,
                metrics.times.render(),
                metrics.certificate.render(),
                metrics.ceph.get(),
                metrics.zookeeper.get(),
            )
        )
    )


@router.get("/metrics/health", summary="Health metrics (cluster and node health, states, counts)", **DOCS)
def health_metrics(request: Request) -> Response:
    return _text(_metrics(request).cache.get().health)


@router.get(
    "/metrics/resource",
    summary="Resource metrics (cluster, nodes, VMs, OSDs, pools, API timings, API certificate expiry)",
    **DOCS,
)
def resource_metrics(request: Request) -> Response:
    metrics = _metrics(request)
    return _text(metrics.cache.get().resource + metrics.times.render() + metrics.certificate.render())


@router.get("/metrics/ceph", summary="The active Ceph mgr's prometheus module, proxied", **DOCS)
def ceph_metrics(request: Request) -> Response:
    return _text(_metrics(request).ceph.get())


@router.get("/metrics/zookeeper", summary="ZooKeeper's metrics, proxied", **DOCS)
def zookeeper_metrics(request: Request) -> Response:
    return _text(_metrics(request).zookeeper.get())


class RequestTimer:
    """ASGI middleware: each HTTP request's duration into pvc_api_request_duration_seconds, by its
    route template (unmatched paths count as "other", so no path creates a series)."""

    def __init__(self, app: Callable[..., Awaitable[None]], owner: FastAPI) -> None:
        self.inner, self.owner = app, owner

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.inner(scope, receive, send)
            return
        began = time.perf_counter()
        status = {"code": 500}

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                status["code"] = int(message.get("status", 500))
            await send(message)

        try:
            await self.inner(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "other"
            metrics: Metrics | None = getattr(self.owner.state, "metrics", None)
            if metrics is None:
                metrics = self.owner.state.metrics = Metrics(self.owner)
            metrics.times.observe(
                scope.get("method", ""), template, status["code"], time.perf_counter() - began
            )


def install(app: FastAPI, prefix: str) -> None:
    """Register the routes and the request timer on the application."""
    app.include_router(router, prefix=prefix)
    app.add_middleware(RequestTimer, owner=app)
