"""The HTTP listeners' bounds (httpguard.py), the Host policy, the metrics page: with a Clock."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from shellserver.app.tap import Options
from shellserver.ops import httpguard
from shellserver.ops.admission import split_connections
from shellserver.ops.httpguard import BoundedSite, Guard
from shellserver.ops.metricspage import BURST, MetricsPage, metrics_endpoint
from shellserver.wires.web.hosts import HostPolicy, parse_web_origin


class Leaf(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"x" * 1000


class PausingTransport(StringTransport):
    """Like a socket transport whose ``bufferSize`` is 0: any byte held pauses the producer."""

    aborted = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and self.streaming:
            self.producer.pauseProducing()

    def take(self) -> bytes:
        """The client reads everything; the emptied transport resumes its producer."""
        data = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return data

    def abortConnection(self) -> None:
        self.aborted = True
        self.disconnecting = True


def guard(clock: Clock, total: int = 0, per_address: int = 0) -> Guard:
    root = Resource()
    root.putChild(b"a", Leaf())
    return Guard(BoundedSite(root), clock, total, per_address)


def connect(g: Guard, host: str = "192.0.2.1") -> tuple[Any, PausingTransport]:
    addr = IPv4Address("TCP", host, 40000)
    proto = g.buildProtocol(addr)
    t = PausingTransport(peerAddress=addr)
    proto.makeConnection(t)
    return proto, t


GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


def test_pipelined_requests_wait_until_the_previous_response_is_taken() -> None:
    clock = Clock()
    proto, t = connect(guard(clock))
    proto.dataReceived(GET * 3)
    assert t.value().count(b"HTTP/1.1 200") == 1  # one response in flight, not three
    assert t.producerState == "paused"  # and nothing more is read meanwhile
    assert t.take().count(b"HTTP/1.1 200") == 1
    assert t.value().count(b"HTTP/1.1 200") == 1
    assert t.take().count(b"HTTP/1.1 200") == 1
    t.take()
    assert t.value() == b"" and t.producerState == "producing"
    proto.dataReceived(GET)  # the connection goes on as usual
    assert t.value().count(b"HTTP/1.1 200") == 1


def test_a_slow_request_is_cut_off_and_the_deadline_shortens_under_pressure() -> None:
    clock = Clock()
    g = guard(clock, total=10)
    proto, t = connect(g)
    proto.dataReceived(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    for _ in range(int(httpguard.REQUEST_TIMEOUT) - 1):
        clock.advance(1)
        proto.dataReceived(b"y")  # a byte now and then does not reset the deadline
    assert not t.aborted
    clock.advance(1 + httpguard.SWEEP)
    assert t.aborted and g.open == 0 and g.expired == 1
    # Full: the deadline is MIN_TIMEOUT, for those already waiting too.
    conns = [connect(g, f"192.0.2.{i}") for i in range(10)]
    assert g.timeout("request") == httpguard.MIN_TIMEOUT
    clock.advance(httpguard.MIN_TIMEOUT + httpguard.SWEEP)
    # Oldest first, until the pressure (and with it the deadline) has eased.
    assert conns[0][1].aborted and 0 < g.open < 10
    assert [t.aborted for _, t in conns] == sorted((t.aborted for _, t in conns), reverse=True)
    clock.advance(httpguard.REQUEST_TIMEOUT)
    assert all(t.aborted for _, t in conns) and g.open == 0


def test_a_response_not_taken_in_time_ends_the_connection() -> None:
    clock = Clock()
    g = guard(clock)
    proto, t = connect(g)
    proto.dataReceived(GET * 2)
    clock.advance(httpguard.RESPONSE_TIMEOUT - 1)
    assert not t.aborted
    clock.advance(1 + httpguard.SWEEP)
    assert t.aborted and g.open == 0


def test_a_full_house_gives_a_newcomer_the_busiest_addresses_oldest_slot() -> None:
    clock = Clock()
    g = guard(clock, total=4, per_address=3)
    greedy = [connect(g, "192.0.2.1") for _ in range(3)]
    connect(g, "192.0.2.2")
    assert g.open == 4
    _, clean = connect(g, "192.0.2.3")  # full, but 192.0.2.1 holds three
    assert not clean.disconnecting and g.open == 4 and g.displaced == 1
    assert greedy[0][1].aborted and not greedy[1][1].aborted
    _, again = connect(g, "192.0.2.1")  # no one holds more than one more than it: refused
    assert b"503" in again.value() and again.disconnecting
    _, fourth = connect(g, "192.0.2.4")  # 192.0.2.1 still holds two: more than 0 + 1
    assert not fourth.disconnecting and g.displaced == 2
    _, fifth = connect(g, "192.0.2.5")  # everyone holds one now: refused
    assert fifth.value().startswith(b"HTTP/1.1 503")


def test_connections_per_address_are_capped() -> None:
    g = guard(Clock(), total=100, per_address=2)
    connect(g)
    connect(g)
    _, third = connect(g)
    assert third.value().startswith(b"HTTP/1.1 503") and g.open == 2 and g.refused == 1


def test_connections_are_split_between_listeners() -> None:
    assert split_connections(20000, 200, 16) == split_connections(20000, 200, 16)
    shares = split_connections(20000, 200, 16)
    assert (shares.logins, shares.web_http, shares.metrics) == (19784, 200, 16)
    small = split_connections(40, 200, 16)
    assert (small.logins, small.web_http, small.metrics) == (20, 10, 10)
    assert split_connections(100, 0, 0).logins == 100  # no such listeners: nothing reserved


def test_host_policy_refuses_other_names() -> None:
    policy = HostPolicy(frozenset({"shellhost", "shellhost.example.org"}))
    assert policy.host_allowed("shellhost:8080", "192.0.2.5")
    assert policy.host_allowed("ShellHost.Example.org.", "192.0.2.5")
    assert policy.host_allowed("192.0.2.5:8080", "192.0.2.5")  # the address it arrived at
    assert policy.host_allowed("localhost:8080", "127.0.0.1")
    assert policy.host_allowed("[::1]:8080", "::1")
    assert not policy.host_allowed("localhost:8080", "192.0.2.5")  # loopback names on loopback
    assert not policy.host_allowed("evil.test:8080", "127.0.0.1")  # DNS rebinding
    assert not policy.host_allowed("192.0.2.6", "192.0.2.5")
    assert not policy.host_allowed(None, "127.0.0.1")
    assert not policy.host_allowed("a b/c", "127.0.0.1")
    # The socket: the page's own origin, with an allowed Host.
    assert policy.origin_allowed("http://shellhost:8080", "shellhost:8080", "192.0.2.5")
    assert policy.origin_allowed("https://shellhost", "shellhost", "192.0.2.5")  # TLS proxy
    assert not policy.origin_allowed("http://evil.test:8080", "evil.test:8080", "127.0.0.1")
    assert not policy.origin_allowed("http://evil.test", "shellhost", "192.0.2.5")
    assert not policy.origin_allowed("null", "shellhost", "192.0.2.5")
    assert policy.origin_allowed(None, "shellhost", "192.0.2.5")  # not a browser


def test_web_origin_lists_the_names_and_origins() -> None:
    policy = HostPolicy.from_options(("https://shell.example.org", "intranet:8080"))
    assert policy.host_allowed("shell.example.org", "10.0.0.5")
    assert policy.host_allowed("intranet:8080", "10.0.0.5")
    assert not policy.host_allowed("10.0.0.5:8080", "10.0.0.5")  # only what was listed
    assert policy.host_allowed("127.0.0.1:8080", "127.0.0.1")  # a proxy on loopback
    # A proxy that rewrites Host: the listed origin may still open the socket.
    assert policy.origin_allowed("https://shell.example.org", "127.0.0.1:8080", "127.0.0.1")
    assert not policy.origin_allowed("http://shell.example.org", "127.0.0.1:8080", "127.0.0.1")
    assert parse_web_origin("https://Shell.Example.org:443/") == (
        "shell.example.org",
        "https://shell.example.org",
    )
    assert parse_web_origin("http://[::1]:8080") == ("::1", "http://[::1]:8080")
    for bad in ["ftp://x", "https://", "https://x/path", "a b", "https://u@x"]:
        with pytest.raises(ValueError):
            parse_web_origin(bad)
    with pytest.raises(usage.UsageError, match="--web-origin"):
        Options().parseOptions(["--web-origin", "https://x/path"])
    options = Options()
    options.parseOptions(["--web-origin", "https://x.example", "--web-origin", "y"])
    assert options.config.web_origins == ("https://x.example", "y")


def test_metrics_bind_to_loopback_unless_told() -> None:
    assert metrics_endpoint("tcp:9323") == "tcp:9323:interface=127.0.0.1"
    assert metrics_endpoint("tcp6:9323") == r"tcp6:9323:interface=\:\:1"
    assert metrics_endpoint("tcp:9323:interface=0.0.0.0") == "tcp:9323:interface=0.0.0.0"
    assert metrics_endpoint("unix:/run/m.sock") == "unix:/run/m.sock"


def test_scrapes_within_a_second_share_one_rendering_and_floods_get_429() -> None:
    clock = Clock()
    registry = CollectorRegistry()
    renders = Counter("renders", "", registry=registry)
    page = MetricsPage(registry, clock, renders.inc)
    first = page.render_GET(DummyRequest([b"metrics"]))  # type: ignore[arg-type]
    for _ in range(BURST - 2):
        assert page.render_GET(DummyRequest([b"metrics"])) == first  # type: ignore[arg-type]
    assert registry.get_sample_value("renders_total") == 1
    clock.advance(1.0)
    assert page.render_GET(DummyRequest([b"metrics"])) != first  # type: ignore[arg-type]
    assert registry.get_sample_value("renders_total") == 2
    refused = DummyRequest([b"metrics"])
    for _ in range(20):
        page.render_GET(refused)  # type: ignore[arg-type]
    assert refused.responseCode == 429 and registry.get_sample_value("renders_total") == 2
