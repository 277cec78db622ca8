"""Prometheus metrics: counters bumped where things happen, gauges read when scraped.

Each server has its own ``CollectorRegistry`` (never the process-global one),
so tests and several servers in one process never collide.

Message counts run once per ``write`` line, so they are plain integers in a
list, bumped on the reactor thread (about 0.1 µs) and turned into a
prometheus_client ``CounterMetricFamily`` when scraped, on the reactor thread
too: a prometheus_client ``Counter`` takes a lock on every ``inc()`` (about
0.4 µs on a bound child, 1.2 µs more through ``.labels()``). A wall counts its
whole fan-out at once, not per recipient. Per-login and per-store-call
metrics are ordinary prometheus_client objects: they run rarely enough.
Sums over sessions (sessions by wire and role, output held) are never
updated per event: a collector reads them at scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred

from shellserver.ops.threads import Runner


class Watched(Protocol):
    """What the scrape reads of the running server (``Server`` provides it)."""

    def session_counts(self) -> dict[tuple[str, str], int]:
        """Sessions by (tty kind, role), counted from the connection table at scrape time."""
        ...

    def output_held_bytes(self) -> int:
        """Output held for clients that do not read, summed at scrape time, never per write."""
        ...


#: tty kinds (``tel/3``) to the wire names the ``wire`` label uses.
WIRE_NAMES = {"tel": "telnet", "ssh": "ssh", "web": "web"}
#: Sessions series shown even at zero, so a dashboard has a line before the first login.
ALWAYS_SHOWN = (("tel", "admin"), ("tel", "user"))
#: Message kinds counted; any other kind is counted as "other" (labels stay bounded).
MESSAGE_KINDS = ("write", "wall", "room")
#: The reactor-lag histogram reaches from 1 ms (normal) to 5 s (a stall worth paging for).
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: The HTTP statuses the pages listener answers with, each its own series.
PAGE_STATUSES = (200, 206, 301, 304, 404, 405, 416, 500)
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Metrics:
    """The server's metrics on a registry of its own (see the module's docstring): the hot-path
    counts are plain integers here, and the other parts get runners and gauges from it."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = CollectorRegistry() if registry is None else registry
        # The process's CPU, memory and open descriptors (``process_*``), Python's GC and version.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        logins = Counter(
            "shellserver_logins", "Password logins, by result.", ["result"], registry=r
        )
        self._login_ok = logins.labels(result="ok")
        self._login_failed = logins.labels(result="failed")
        self._registrations = Counter(
            "shellserver_registrations", "Accounts created with 'new' at the login prompt.",
            registry=r,
        )  # fmt: skip
        #: kind -> [delivered, dropped]; "other" for any kind not listed.
        self._messages: dict[str, list[int]] = {kind: [0, 0] for kind in MESSAGE_KINDS}
        self._other = self._messages["other"] = [0, 0]
        r.register(_MessageCollector(self._messages))
        self.hash_queue = Gauge(
            "shellserver_hash_queue",
            "Password hashes asked for and not yet done (running or waiting for a thread).",
            registry=r,
        )
        self.store_seconds = Histogram(
            "shellserver_store_seconds",
            "Time from a store call to its answer, waiting for the database thread included.",
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.reactor_lag = Histogram(
            "shellserver_reactor_lag_seconds",
            "How late a 100 ms timer fires: time the event loop spent busy with something else.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        moved = Counter(
            "shellserver_sftp_bytes",
            "File content moved over SFTP (sftp, scp, sshfs), by direction: in is uploads.",
            ["direction"],
            registry=r,
        )
        self._sftp_in = moved.labels(direction="in")
        self._sftp_out = moved.labels(direction="out")
        self._sftp_ops = Counter(
            "shellserver_sftp_operations",
            "SFTP requests by operation and result (ok, failed, or refused by the sandbox or a "
            "limit).",
            ["op", "result"],
            registry=r,
        )
        #: Counted when a scrape is rendered (scrapes within a second share one: metricspage.py).
        self.renders = Counter(
            "shellserver_metrics_renders",
            "Expositions rendered for /metrics (scrapes within a second share one).",
            registry=r,
        )

        pages = Counter(
            "shellserver_pages_requests",
            "Answers of the personal pages listener (--pages), by HTTP status.",
            ["status"],
            registry=r,
        )
        #: The statuses the pages give; any other is counted as "other" (labels stay bounded).
        self._page_status = {code: pages.labels(status=str(code)) for code in PAGE_STATUSES}
        self._page_other = pages.labels(status="other")
        self._page_bytes = Counter(
            "shellserver_pages_sent_bytes",
            "Body bytes the personal pages listener (--pages) handed to its connections.",
            registry=r,
        )

    # -- the hot paths: one attribute read and one inc ----------------------------

    def page_answered(self, status: int) -> None:
        """One answer of the pages listener, by status (a bounded set of labels)."""
        self._page_status.get(status, self._page_other).inc()

    def page_bytes(self, count: int) -> None:
        """Body bytes of the pages listener, counted per chunk (64 KiB), not per byte."""
        self._page_bytes.inc(count)

    def login(self, ok: bool) -> None:
        """A password login's result; the children are bound once, since ``.labels()`` costs."""
        (self._login_ok if ok else self._login_failed).inc()

    def registered(self) -> None:
        """An account made with ``new``: watched to spot a registration flood."""
        self._registrations.inc()

    def messages(self, kind: str, delivered: int, dropped: int = 0) -> None:
        """``delivered`` and ``dropped`` copies of one message (a wall counts its fan-out)."""
        counts = self._messages.get(kind, self._other)
        counts[0] += delivered
        counts[1] += dropped

    def message(self, kind: str, delivered: bool) -> None:
        """One copy of one message (a ``write``)."""
        self._messages.get(kind, self._other)[0 if delivered else 1] += 1

    def sftp_bytes(self, direction: str, size: int) -> None:
        """File content moved over SFTP: ``in`` (uploads) or ``out`` (downloads)."""
        (self._sftp_in if direction == "in" else self._sftp_out).inc(size)

    def sftp_operation(self, op: str, result: str) -> None:
        """One SFTP request's result; ``op`` and ``result`` come from a fixed set, never from the
        client, so the series stay bounded."""
        self._sftp_ops.labels(op=op, result=result).inc()

    # -- runners that measure the store and the hashing pool ------------------------

    def timed(self, run: Runner, now: Callable[[], float] = time.perf_counter) -> Runner:
        """``run`` (the database thread), each call's latency observed in ``store_seconds``."""
        observe = self.store_seconds.observe

        def timed_run(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
            started = now()

            def done(result: object) -> object:
                observe(now() - started)
                return result

            return run(f, *args, **kwargs).addBoth(done)

        return timed_run

    def queued(self, run: Runner) -> Runner:
        """``run`` (the hashing pool), each call counted in ``hash_queue`` until it is done."""
        gauge = self.hash_queue

        def counted_run(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
            gauge.inc()

            def done(result: object) -> object:
                gauge.dec()
                return result

            return run(f, *args, **kwargs).addBoth(done)

        return counted_run

    def watch(self, server: Watched) -> None:
        """Report ``server``'s sessions and held output, read when scraped."""
        self.registry.register(ServerCollector(server))

    def watch_cluster(self, nodes: Callable[[], int]) -> None:
        """Clustered: ``shellserver_cluster_nodes``, the live nodes at the last heartbeat."""
        self.registry.register(_ClusterCollector(nodes))


class _ClusterCollector:
    def __init__(self, nodes: Callable[[], int]) -> None:
        self.nodes = nodes

    def describe(self) -> Iterable[Metric]:
        """The names, so the registry can refuse a clash at registration without collecting."""
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        """Called by the scrape on the reactor thread, where the hub's node count may be read."""
        family = self._family()
        family.add_metric([], self.nodes())
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "shellserver_cluster_nodes", "Nodes alive in the cluster at the last heartbeat."
        )


class _MessageCollector:
    """``shellserver_messages_total`` from the plain counts (read on the reactor thread)."""

    def __init__(self, counts: dict[str, list[int]]) -> None:
        self.counts = counts

    def describe(self) -> Iterable[Metric]:
        """The names, so the registry can refuse a clash at registration without collecting."""
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        """The plain integers turned into a counter family only when someone scrapes."""
        family = self._family()
        for kind, (delivered, dropped) in self.counts.items():
            family.add_metric([kind, "delivered"], delivered)
            family.add_metric([kind, "dropped"], dropped)
        yield family

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "shellserver_messages",
            "Messages to other people's terminals, by kind and by what became of each copy.",
            labels=["kind", "outcome"],
        )


class ServerCollector:
    """Gauges that are sums over connections, computed per scrape instead of per event."""

    def __init__(self, server: Watched) -> None:
        self.server = server

    def describe(self) -> Iterable[Metric]:
        """The names, so the registry can refuse a clash at registration without reading the
        sessions."""
        return self._families()

    def collect(self) -> Iterator[Metric]:
        """Read the sessions at scrape time on the reactor thread (the page renders there)."""
        sessions, held = self._families()
        counts = dict.fromkeys(ALWAYS_SHOWN, 0)
        counts.update(self.server.session_counts())
        for (wire, role), count in sorted(counts.items()):
            sessions.add_metric([WIRE_NAMES.get(wire, wire), role], count)
        held.add_metric([], self.server.output_held_bytes())
        yield sessions
        yield held

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        sessions = GaugeMetricFamily(
            "shellserver_sessions",
            "Logged-in sessions, by wire and role.",
            labels=["wire", "role"],
        )
        held = GaugeMetricFamily(
            "shellserver_output_held_bytes",
            "Output held for clients that are not reading, summed over every connection.",
        )
        return sessions, held
