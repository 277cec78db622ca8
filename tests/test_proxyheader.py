"""The PROXY header on ``haproxy:`` listeners: the wrapped protocol is connected only once the
header names the client, so every check made at connect time sees the client, not the
balancer; connections without a valid header, or too slow with it, are closed."""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.usage import UsageError

from shellserver.ops import proxyheader
from shellserver.ops.proxyheader import (
    HEADER_TIMEOUT,
    ProxyHeaderEndpoint,
    ProxyHeaderFactory,
    listen_endpoint,
)
from shellserver.ops.sockets import socket_of

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
BALANCER = IPv4Address("TCP", "10.0.0.9", 40000)


def v2(src: str, dst: str = "10.0.0.1", sport: int = 51000, dport: int = 2323) -> bytes:
    """A PROXY v2 header as HAProxy's ``send-proxy-v2`` writes it (TCP over IPv4 or IPv6)."""
    if ":" in src:
        body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        family = 0x21
    else:
        body = socket.inet_aton(src) + socket.inet_aton(dst)
        family = 0x11
    body += struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


V2_LOCAL = V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)


class Seen(Protocol):
    """Records what the wrapped protocol saw, and when."""

    def __init__(self) -> None:
        self.peer: Any = None
        self.data = b""
        self.made = 0
        self.lost = 0

    def connectionMade(self) -> None:
        self.made += 1
        self.peer = self.transport.getPeer()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost += 1


class Transport(StringTransport):
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


def connect(factory: ProxyHeaderFactory) -> tuple[Any, Seen, Transport]:
    wrapper = factory.buildProtocol(BALANCER)
    transport = Transport(peerAddress=BALANCER)
    wrapper.makeConnection(transport)
    inner = wrapper.wrappedProtocol
    assert isinstance(inner, Seen)
    return wrapper, inner, transport


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def factory(clock: Clock) -> ProxyHeaderFactory:
    return ProxyHeaderFactory(Factory.forProtocol(Seen), clock)


def test_v2_header_client_is_the_peer_before_connection_made(factory: ProxyHeaderFactory) -> None:
    wrapper, inner, transport = connect(factory)
    assert inner.made == 0  # nothing is known of the client yet
    wrapper.dataReceived(v2("192.0.2.7") + b"hello")
    assert inner.made == 1
    assert inner.peer == IPv4Address("TCP", "192.0.2.7", 51000)
    assert inner.data == b"hello"  # what followed the header, in the same read
    assert wrapper.getHost() == IPv4Address("TCP", "10.0.0.1", 2323)
    wrapper.dataReceived(b" world")
    assert inner.data == b"hello world" and not transport.aborted
    wrapper.connectionLost(None)
    assert inner.lost == 1 and factory.waiting == 0


def test_v1_header_and_one_byte_at_a_time(factory: ProxyHeaderFactory) -> None:
    wrapper, inner, _ = connect(factory)
    for byte in b"PROXY TCP4 198.51.100.4 10.0.0.1 5000 2323\r\nx":
        wrapper.dataReceived(bytes([byte]))
    assert inner.peer == IPv4Address("TCP", "198.51.100.4", 5000)
    assert inner.data == b"x"
    wrapper, inner, _ = connect(factory)
    header = v2("192.0.2.8")
    for i in range(len(header)):
        assert inner.made == 0
        wrapper.dataReceived(header[i : i + 1])
    assert inner.peer.host == "192.0.2.8"


def test_ipv6_client_in_its_short_form(factory: ProxyHeaderFactory) -> None:
    wrapper, inner, _ = connect(factory)
    wrapper.dataReceived(v2("2001:db8::7", "2001:db8::1"))
    assert inner.peer == IPv6Address("TCP", "2001:db8::7", 51000)
    wrapper, inner, _ = connect(factory)
    wrapper.dataReceived(v2("::ffff:192.0.2.9", "::ffff:10.0.0.1"))
    assert inner.peer == IPv4Address("TCP", "192.0.2.9", 51000)  # one client, one key


def test_local_header_is_the_balancer(factory: ProxyHeaderFactory) -> None:
    """A health check's ``LOCAL`` header names no client: the peer is the balancer."""
    wrapper, inner, _ = connect(factory)
    wrapper.dataReceived(V2_LOCAL)
    assert inner.made == 1 and inner.peer == BALANCER


@pytest.mark.parametrize(
    "data",
    [
        b"login\r\n",  # a client that reached the port directly
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 nonsense\r\n",
        b"PROXY " + b"x" * 200,
        V2_SIGNATURE + b"\x99\x11\x00\x0c" + bytes(12),
    ],
)
def test_no_valid_header_is_closed_unseen(factory: ProxyHeaderFactory, data: bytes) -> None:
    wrapper, inner, transport = connect(factory)
    wrapper.dataReceived(data)
    assert transport.aborted and inner.made == 0 and inner.data == b""
    wrapper.dataReceived(b"more")  # nothing more is read
    wrapper.connectionLost(None)
    assert inner.lost == 0 and factory.waiting == 0


def test_header_must_come_in_time(factory: ProxyHeaderFactory, clock: Clock) -> None:
    wrapper, inner, transport = connect(factory)
    wrapper.dataReceived(V2_SIGNATURE[:5])
    clock.advance(HEADER_TIMEOUT - 0.1)
    assert not transport.aborted
    clock.advance(0.2)
    assert transport.aborted and inner.made == 0
    wrapper.connectionLost(None)
    assert factory.waiting == 0 and not clock.getDelayedCalls()


def test_waiting_connections_are_bounded(
    factory: ProxyHeaderFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxyheader, "MAX_WAITING", 2)
    first, _, _ = connect(factory)
    connect(factory)
    _, third, transport = connect(factory)
    assert transport.aborted and third.made == 0
    first.dataReceived(v2("192.0.2.1"))  # has its header: a place is free
    _, _, transport = connect(factory)
    assert not transport.aborted and factory.waiting == 2


def test_socket_options_find_the_socket_under_the_wrapper(factory: ProxyHeaderFactory) -> None:
    with socket.socket() as sock:
        wrapper = factory.buildProtocol(BALANCER)
        transport = Transport(peerAddress=BALANCER)
        transport.socket = sock  # type: ignore[attr-defined]
        wrapper.makeConnection(transport)
        wrapper.dataReceived(v2("192.0.2.7"))
        assert socket_of(wrapper.wrappedProtocol.transport) is sock


def test_endpoint_strings() -> None:
    reactor = MemoryReactor()
    endpoint = listen_endpoint(reactor, "haproxy:tcp:2323:interface=127.0.0.1")
    assert isinstance(endpoint, ProxyHeaderEndpoint)
    endpoint.listen(Factory.forProtocol(Seen))
    port, factory, _, interface = reactor.tcpServers[0]
    assert (port, interface) == (2323, "127.0.0.1")
    assert isinstance(factory, ProxyHeaderFactory)
    assert not isinstance(listen_endpoint(reactor, "tcp:2323"), ProxyHeaderEndpoint)
    assert isinstance(listen_endpoint(reactor, "HAPROXY:unix:/tmp/s.sock"), ProxyHeaderEndpoint)
    with pytest.raises(ValueError, match="haproxy:ssl: is not supported"):
        listen_endpoint(reactor, "haproxy:ssl:443:privateKey=k.pem")
    for bad in ("haproxy:", "haproxy:haproxy:tcp:1"):
        with pytest.raises(ValueError, match="haproxy: needs an endpoint"):
            listen_endpoint(reactor, bad)


def test_options_take_haproxy_listeners() -> None:
    from shellserver.app.service import with_backlog
    from shellserver.app.tap import Options

    options = Options()
    options.parseOptions(
        ["--telnet", "haproxy:tcp:2323", "--ssh", "haproxy:tcp:2222", "--web", "haproxy:tcp:80"]
    )
    cfg = options.config
    assert (cfg.telnet, cfg.ssh, cfg.web) == (
        ("haproxy:tcp:2323",),
        ("haproxy:tcp:2222",),
        ("haproxy:tcp:80",),
    )
    with pytest.raises(UsageError, match=r"--telnet: not a listen endpoint.*haproxy:ssl:"):
        Options().parseOptions(["--telnet", "haproxy:ssl:2323"])
    assert with_backlog("haproxy:tcp:2323") == "haproxy:tcp:2323:backlog=1024"
