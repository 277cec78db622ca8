"""Listeners behind a load balancer: ``haproxy:tcp:2323`` reads HAProxy's PROXY header.

A TCP balancer (HAProxy in ``mode tcp``, an AWS NLB, …) hides the client: every
connection comes from the balancer's address, so per-address limits, bans, ``who``'s FROM
and the log would all name the balancer. With ``send-proxy-v2`` (or ``send-proxy``) the
balancer starts each connection with a PROXY header naming the client, and a listen
endpoint wrapped as ``haproxy:ENDPOINT`` takes it: the client's address is then what the
connection's ``getPeer()`` returns.

Twisted's own wrapper (:mod:`twisted.protocols.haproxy`, its parsers and its
``HAProxyProtocolWrapper``) does the parsing, but it connects the wrapped protocol at
once, before the header has arrived: a protocol that reads its peer in ``connectionMade``
(every wire here does: admission, the login record) would see the balancer. So
:class:`HeldProxyProtocol` holds the wrapped protocol back until the header is read,
then connects it, then passes on what followed the header. A connection that sends no
valid header is closed without a word: it did not come through the balancer. The header
must come within :data:`HEADER_TIMEOUT` seconds, and at most :data:`MAX_WAITING`
connections may be waiting for theirs, so a peer that reaches the port directly cannot
hold sockets open.

The header is trusted as it is: a listener wrapped this way must be reachable only by the
balancer (docs/security.md).
"""

from __future__ import annotations

import ipaddress
from typing import Any, cast

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

PREFIX = "haproxy:"
#: Seconds a connection has to send its PROXY header (the balancer sends it at once).
HEADER_TIMEOUT = 10.0
#: Connections waiting for their header at once; more are closed as they come.
MAX_WAITING = 1024
#: Bytes that decide the header's version: v2's 12-byte signature and its version byte.
_V2_START = 16
_V1_START = b"PROXY "


class HeldProxyProtocol(HAProxyProtocolWrapper):
    """Twisted's PROXY wrapper, with the wrapped protocol connected only once the header is
    read, so that its ``connectionMade`` already sees the client's address."""

    factory: ProxyHeaderFactory
    #: The wrapped protocol is connected (the header was read).
    _passing = False
    _timer: IDelayedCall | None = None
    _waiting = False

    def makeConnection(self, transport: Any) -> None:
        """As ``ProtocolWrapper.makeConnection``, without connecting the wrapped protocol:
        that waits for the header (:meth:`dataReceived`)."""
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._start = b""
        if not self.factory.wait(self):
            self._refuse()
            return
        self._waiting = True
        self._timer = self.factory.clock.callLater(HEADER_TIMEOUT, self._refuse)

    def dataReceived(self, data: bytes) -> None:
        """The header first (in as many reads as it takes), then everything is passed on."""
        if self._passing:
            self.wrappedProtocol.dataReceived(data)
            return
        if self.disconnecting:
            return  # refused: nothing more is read
        parser = self._parser
        if parser is None:
            start = self._start + data
            if not _may_start_header(start):
                self._refuse()
                return
            if len(start) < _V2_START and not (start.startswith(_V1_START) and b"\r\n" in start):
                self._start = start
                return
            self._start = b""
            if start[:12] == V2Parser.PREFIX and start[12] & 0xF0 == 0x20:
                parser = self._parser = V2Parser()
            elif start.startswith(_V1_START):
                parser = self._parser = V1Parser()
            else:
                self._refuse()
                return
            data = start
        try:
            info, rest = parser.feed(data)
        except InvalidProxyHeader:
            self._refuse()
            return
        if info is None:
            return  # more of the header to come
        self._proxyInfo = info
        self._done_waiting()
        self._passing = True
        self.wrappedProtocol.makeConnection(cast(ITransport, self))  # provides what it wraps
        if rest and self.connected and not self.disconnecting:
            self.wrappedProtocol.dataReceived(rest)

    def getPeer(self) -> IAddress:
        """The client named by the header (its address in canonical form, as a direct
        connection's would be); the balancer for a ``LOCAL`` header (a health check)."""
        peer = super().getPeer()
        if isinstance(peer, (IPv4Address, IPv6Address)) and self._proxyInfo is not None:
            return _canonical(peer)
        return peer

    def _refuse(self) -> None:
        """No valid header (or none in time, or too many waiting): close at once."""
        self._done_waiting()
        self.disconnecting = True
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def _done_waiting(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._waiting:
            self._waiting = False
            self.factory.waited(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The wrapped protocol hears of the loss only if it was connected."""
        self._done_waiting()
        if self._passing:
            super().connectionLost(reason)
            return
        self.factory.unregisterProtocol(self)
        self.wrappedProtocol = None  # type: ignore[assignment]


def beneath_header(transport: object) -> object:
    """The connection under a :class:`HeldProxyProtocol` (else ``transport`` itself): after
    the header the wrapper only passes bytes on, so a writer that wants the socket's own
    transport (a write straight into the kernel) may use this one."""
    if isinstance(transport, HeldProxyProtocol) and transport._passing:
        return transport.transport
    return transport


def _may_start_header(start: bytes) -> bool:
    """Whether ``start`` can still be the beginning of a v1 or v2 header."""
    head = start[:12]
    return V2Parser.PREFIX.startswith(head) or start[:6] == _V1_START[: len(start[:6])]


def _canonical(peer: IPv4Address | IPv6Address) -> IPv4Address | IPv6Address:
    """Twisted writes a v2 header's IPv6 address uncompressed (``0:0:…:1``); limits and bans
    compare addresses as text, so give it its usual short form (``::1``), and an IPv4 client
    seen through IPv6 (``::ffff:192.0.2.1``) its IPv4 address: one client, one key."""
    try:
        ip = ipaddress.ip_address(peer.host)
    except ValueError:
        return peer
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return IPv4Address(peer.type, str(ip.ipv4_mapped), peer.port)
    if ip.compressed == peer.host:
        return peer
    return type(peer)(peer.type, ip.compressed, peer.port)


class ProxyHeaderFactory(HAProxyWrappingFactory):
    """Wraps a listener's factory: each connection gets a :class:`HeldProxyProtocol`."""

    protocol = HeldProxyProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, wrappedFactory: IProtocolFactory, clock: IReactorTime) -> None:
        super().__init__(wrappedFactory)
        self.clock = clock
        #: Connections waiting for their header now.
        self.waiting = 0

    def wait(self, proto: HeldProxyProtocol) -> bool:
        """Count a connection waiting for its header; False when too many already are."""
        if self.waiting >= MAX_WAITING:
            return False
        self.waiting += 1
        return True

    def waited(self, proto: HeldProxyProtocol) -> None:
        """It has its header, or is gone."""
        self.waiting -= 1


@implementer(IStreamServerEndpoint)
@frozen
class ProxyHeaderEndpoint:
    """A listen endpoint whose connections start with a PROXY header."""

    inner: IStreamServerEndpoint
    clock: IReactorTime

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Listen on the inner endpoint, each connection held until its header is read."""
        return self.inner.listen(ProxyHeaderFactory(protocolFactory, self.clock))


def is_proxied(description: str) -> bool:
    """Whether a listen endpoint string asks for the PROXY header (``haproxy:…``)."""
    return description[: len(PREFIX)].lower() == PREFIX


def listen_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """The endpoint for ``description``: Twisted's ``serverFromString``, except that
    ``haproxy:ENDPOINT`` is :class:`ProxyHeaderEndpoint` around ``ENDPOINT``.

    Raises ValueError (as ``serverFromString`` does for a bad string) for ``haproxy:``
    around ``ssl:``: Twisted would expect the header inside TLS, where no balancer puts it.
    """
    if not is_proxied(description):
        endpoint: IStreamServerEndpoint = serverFromString(reactor, description)
        return endpoint
    inner = description[len(PREFIX) :]
    kind = inner.split(":", 1)[0].lower()
    if kind == "ssl":
        raise ValueError(
            "haproxy:ssl: is not supported (the PROXY header comes before TLS); "
            "terminate TLS at the balancer and listen with haproxy:tcp:"
        )
    if kind == "haproxy" or not inner:
        raise ValueError("haproxy: needs an endpoint to wrap, as haproxy:tcp:2323")
    return ProxyHeaderEndpoint(serverFromString(reactor, inner), reactor)
