"""``--metrics ENDPOINT``: the Prometheus text exposition at ``/metrics``, from ``twisted.web``.

``prometheus_client.twisted.MetricsResource`` renders on the reactor's thread
pool; our collectors read the connection table, which only the reactor thread
may touch, so the page is rendered here, on the reactor (a scrape of 20,000
sessions costs a few milliseconds, every 15 s or so).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class MetricsPage(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


class MetricsSite(Site):
    """No access-log line per scrape (one every 15 s would drown the events that matter)."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def metrics_site(registry: CollectorRegistry) -> Site:
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    site = MetricsSite(root)
    site.displayTracebacks = False
    return site
