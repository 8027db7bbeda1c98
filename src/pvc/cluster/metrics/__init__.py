"""Prometheus metrics with upstream PVC 1.0's names and labels (its Grafana dashboards work as they
are), plus PVC's documented extensions. Pure renderers (health.py, resource.py) of data collected
from ZooKeeper (collect.py), served from a cache (cache.py); the API routes are in
pvc.api.routers.metrics.

FAMILIES: every family name this package can emit (H8's dashboard and alert-rule tests check that
whatever they query exists).
"""

from __future__ import annotations

from pvc.cluster.metrics import health, resource
from pvc.cluster.metrics.cache import MetricsCache
from pvc.cluster.metrics.certificate import NAME as CERTIFICATE_EXPIRY
from pvc.cluster.metrics.certificate import PENDING as CERTIFICATE_PENDING_RESTART
from pvc.cluster.metrics.certificate import CertificateExpiry
from pvc.cluster.metrics.collect import collect
from pvc.cluster.metrics.data import ClusterData, VMData
from pvc.cluster.metrics.expo import CONTENT_TYPE
from pvc.cluster.metrics.health import render_health
from pvc.cluster.metrics.requests import NAME as REQUEST_DURATION
from pvc.cluster.metrics.requests import RequestTimes
from pvc.cluster.metrics.resource import render_resource

HEALTH_FAMILIES: frozenset[str] = frozenset(f.name for f in health.FAMILIES)
RESOURCE_FAMILIES: frozenset[str] = frozenset(f.name for f in resource.FAMILIES)
# the API process's own families (served with the resource part), not rendered from the cluster data
API_FAMILIES: frozenset[str] = frozenset({REQUEST_DURATION, CERTIFICATE_EXPIRY, CERTIFICATE_PENDING_RESTART})
FAMILIES: frozenset[str] = HEALTH_FAMILIES | RESOURCE_FAMILIES | API_FAMILIES

__all__ = [
    "API_FAMILIES",
    "CONTENT_TYPE",
    "FAMILIES",
    "HEALTH_FAMILIES",
    "RESOURCE_FAMILIES",
    "CertificateExpiry",
    "ClusterData",
    "MetricsCache",
    "RequestTimes",
    "VMData",
    "collect",
    "render_health",
    "render_resource",
]
