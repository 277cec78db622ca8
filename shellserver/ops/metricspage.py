"""``--metrics ENDPOINT``: the Prometheus text exposition at ``/metrics``, from ``twisted.web``.

``prometheus_client.twisted.MetricsResource`` renders on the reactor's thread
pool; our collectors read the connection table, which only the reactor thread
may touch, so the page is rendered here, on the reactor (a scrape of 20,000
sessions costs a few milliseconds, every 15 s or so).

The listener is for one scraper, not for the world, and is bounded so that a
flood of scrapes costs the sessions nothing:

- it binds to loopback unless the endpoint names an interface
  (:func:`metrics_endpoint`);
- at most :data:`MAX_CONNECTIONS` connections (a small share of
  ``--max-connections``, reserved beside the logins' so neither can take the
  other's descriptors), each with one response in flight and the deadlines
  of :mod:`shellserver.ops.httpguard`;
- scrapes within :data:`CACHE_SECONDS` share one rendering, and at most
  :data:`RATE` requests a second (a burst of :data:`BURST`) are answered;
  more get ``429 Too Many Requests``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Request

from shellserver.ops.httpguard import BoundedSite, Guard
from shellserver.ops.throttle import TokenBucket

#: Connections the metrics listener holds at once: Prometheus needs one, curl another.
MAX_CONNECTIONS = 16
#: Scrapes within this many seconds are answered with the same rendering.
CACHE_SECONDS = 1.0
#: Requests answered per second over the whole listener, after a burst of BURST.
RATE, BURST = 10.0, 20
TOO_MANY_REQUESTS = 429


def _reactor() -> IReactorTime:
    from twisted.internet import reactor

    return cast(IReactorTime, reactor)


def metrics_endpoint(description: str) -> str:
    """``tcp:9323`` listens on 127.0.0.1 (``tcp6:``: ``::1``) unless ``interface=`` says where."""
    if "interface=" in description:
        return description
    inner = description[len("haproxy:") :] if description.startswith("haproxy:") else description
    kind = inner.split(":", 1)[0]
    if kind in ("tcp", "ssl"):
        return description + ":interface=127.0.0.1"
    if kind == "tcp6":
        return description + r":interface=\:\:1"
    return description


class MetricsPage(Resource):
    """``/metrics``, rendered on the reactor (the collectors read the connection table) and
    bounded by a rate and a one-second shared rendering, so scrapes cannot starve sessions."""

    isLeaf = True

    def __init__(
        self,
        registry: CollectorRegistry,
        clock: IReactorTime | None = None,
        rendered: Callable[[], object] = lambda: None,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.clock = _reactor() if clock is None else clock
        self.bucket = TokenBucket(RATE, BURST)
        self.rendered = rendered
        self._cached = b""
        self._cached_at = float("-inf")

    def render_GET(self, request: Request) -> bytes:
        """The rate is checked before any rendering, so a refused scrape costs almost nothing;
        a clock stepping back renders afresh rather than serving a stale page forever."""
        now = self.clock.seconds()
        if not self.bucket.take(now):
            request.setResponseCode(TOO_MANY_REQUESTS)
            request.setHeader(b"Retry-After", b"1")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Too many requests; scrape less often.\n"
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        if now - self._cached_at >= CACHE_SECONDS or now < self._cached_at:
            self.rendered()
            self._cached, self._cached_at = generate_latest(self.registry), now
        return self._cached


class MetricsSite(BoundedSite):
    """No access-log line per scrape (one every 15 s would drown the events that matter)."""


def metrics_site(
    registry: CollectorRegistry,
    clock: IReactorTime | None = None,
    max_connections: int = MAX_CONNECTIONS,
    rendered: Callable[[], object] = lambda: None,
) -> Guard:
    """The whole ``--metrics`` listener's factory: the page under a :class:`Guard` with its own
    small connection cap, and no tracebacks shown to whoever scrapes."""
    clock = _reactor() if clock is None else clock
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry, clock, rendered))
    site = MetricsSite(root)
    site.displayTracebacks = False
    return Guard(site, clock, max_connections, 0)
