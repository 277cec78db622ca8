"""Messages written straight into the socket (``Output._put``), on a real TCP connection.

When Twisted holds nothing for the client, a message is one ``send()`` at once; what the
kernel does not take goes to the transport, and from then on everything queues behind it,
so the client reads every byte in order however the two paths took turns.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport

from shellserver.wires.output import Output, _write_through


class Held(Protocol):
    made: ClassVar[list[Held]] = []

    def connectionMade(self) -> None:
        self.out = Output(self.transport, reactor, 1 << 20, lambda: None)  # type: ignore[arg-type]
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]
        Held.made.append(self)

    def pauseProducing(self) -> None:
        self.out.pause()

    def resumeProducing(self) -> None:
        self.out.resume()

    def stopProducing(self) -> None:
        self.out.stop()


@pytest.fixture
def pair() -> Iterator[tuple[Any, socket.socket]]:
    Held.made = []
    port = reactor.listenTCP(0, Factory.forProtocol(Held), interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    pytest_twisted.blockon(deferLater(reactor, 0.1, lambda: None))
    assert Held.made
    yield Held.made[0], client
    client.close()
    Held.made[0].transport.abortConnection()
    pytest_twisted.blockon(port.stopListening())


def test_a_plain_tcp_transport_is_written_through(pair: tuple[Any, socket.socket]) -> None:
    server, client = pair
    assert _write_through(server.transport)
    assert not _write_through(StringTransport())
    assert server.out.post(b"hello\r\n")
    t = server.transport
    assert t.dataBuffer == b"" and t._tempDataBuffer == []  # nothing left for Twisted
    client.settimeout(2)
    assert client.recv(100) == b"hello\r\n"  # there before any reactor turn


@pytest_twisted.ensureDeferred
async def test_order_holds_when_the_kernel_fills(pair: tuple[Any, socket.socket]) -> None:
    server, client = pair
    chunks = [bytes([65 + i % 26]) * 7001 for i in range(400)]  # 2.8 MB, past every buffer
    sent = []
    for chunk in chunks:
        if server.out.paused:  # the transport's buffer is full too: stop before dropping
            break
        assert server.out.post(chunk)
        sent.append(chunk)
    assert server.transport._tempDataBuffer or server.transport.dataBuffer  # some for Twisted
    server.out.write(b"own output, last\r\n")  # held or queued: after every message
    want = b"".join(sent) + b"own output, last\r\n"
    got = b""
    client.setblocking(False)
    for _ in range(1000):  # at most ~10 s
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                got += data
        except BlockingIOError:
            pass
        if len(got) >= len(want):
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert got == want


@pytest_twisted.ensureDeferred
async def test_own_output_goes_through_once_a_session_runs(
    pair: tuple[Any, socket.socket],
) -> None:
    """Before (the login dialogue) the transport joins a turn's writes; after, a prompt goes
    out at once, and TCP_NODELAY keeps the second of two small sends from waiting on an ACK."""
    server, client = pair
    t = server.transport
    assert t.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    server.out.write(b"login: ")
    assert t._tempDataBuffer == [b"login: "]  # joined with the rest of the turn
    await deferLater(reactor, 0.05, lambda: None)
    server.out.own_through = True  # what Fronted.session_started sets
    server.out.write(b"alice@host:~$ ")
    assert t.dataBuffer == b"" and t._tempDataBuffer == []
    client.settimeout(2)
    got = b""
    while not got.endswith(b"$ "):
        got += client.recv(100)
    assert got == b"login: alice@host:~$ "


@pytest_twisted.ensureDeferred
async def test_written_through_under_a_proxy_header_listener() -> None:
    """A ``haproxy:`` listener's wrapper only passes bytes on once the header is read: the
    socket beneath it is written straight into, as a plain connection's is."""
    from twisted.protocols.haproxy._v2parser import V2Parser

    from shellserver.ops.proxyheader import ProxyHeaderFactory

    Held.made = []
    factory = ProxyHeaderFactory(Factory.forProtocol(Held), reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    try:
        body = socket.inet_aton("192.0.2.5") + socket.inet_aton("10.0.0.1") + b"\x13\x88\x09\x13"
        client.sendall(V2Parser.PREFIX + b"\x21\x11\x00\x0c" + body)
        await deferLater(reactor, 0.1, lambda: None)
        (server,) = Held.made
        assert server.transport.getPeer().host == "192.0.2.5"
        assert server.out.post(b"hello\r\n")
        tcp = server.transport.transport
        assert tcp.dataBuffer == b"" and tcp._tempDataBuffer == []  # nothing left for Twisted
        client.settimeout(2)
        assert client.recv(100) == b"hello\r\n"  # there before any reactor turn
    finally:
        client.close()
        for server in Held.made:
            server.transport.abortConnection()
        await port.stopListening()
