"""SSH output flow: what a session channel sends, holds and frees, and what a connection leaves.

Two layers. The channel alone (``SessionChannel`` over a recording connection): it never
sends more than the client's window, never grows conch's ``buf`` (``buf += data`` was
quadratic), holds at most the rest of one write, and pauses the wire's ``Output`` while
the window is empty or the whole connection is blocked. Then the real conch server and a
real conch client over loopback in this process: a client that advertises a 4 GiB window
and never reads has its session's output held to ``--max-output``, and a closed connection
is freed by reference counting (no cycle left for the collector, which ``gcpolicy`` may have
frozen).
"""

from __future__ import annotations

import gc
import struct
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ed25519
from harness import make_server_with
from twisted.conch.ssh import channel as conch_channel
from twisted.conch.ssh import common, connection, transport, userauth
from twisted.conch.ssh.keys import Key
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import Clock, deferLater
from twisted.python.filepath import FilePath

from shellserver.app.assembly import Assembly
from shellserver.ops.threads import inline_runner
from shellserver.wires.ssh import session as ssh_session
from shellserver.wires.ssh import setup as ssh_setup
from shellserver.wires.ssh import sftp as ssh_sftp
from shellserver.wires.ssh.hostkeys import HostKeys
from shellserver.wires.ssh.server import SessionChannel, ShellTransport
from shellserver.wires.ssh.session import Request, SSHWire

R: Any = reactor


# -- the channel alone -------------------------------------------------------------------


class Transport:
    blocked = False


class Conn:
    """The connection side of a channel: records what is sent."""

    def __init__(self) -> None:
        self.transport = Transport()
        self.sent: list[bytes] = []
        self.closed = 0

    def sendData(self, channel: Any, data: bytes) -> None:
        self.sent.append(data)

    def sendClose(self, channel: Any) -> None:
        self.closed += 1

    def sendRequest(self, channel: Any, kind: bytes, data: bytes) -> None:
        pass


def make_channel(window: int, packet: int = 1000) -> tuple[SessionChannel, Conn, SSHWire]:
    conn = Conn()
    ch = SessionChannel(remoteWindow=window, remoteMaxPacket=packet, conn=conn)
    wire = SSHWire(ch, Request(pty=False), "192.0.2.1", Clock(), max_output=10_000)
    ch.wire = wire
    return ch, conn, wire


def sent(conn: Conn) -> bytes:
    data = b"".join(conn.sent)
    conn.sent.clear()
    return data


def test_a_write_sends_what_the_window_takes_and_holds_only_its_rest() -> None:
    ch, conn, wire = make_channel(2500)
    wire.send("a" * 3000)
    assert sent(conn) == b"a" * 2500
    assert all(len(p) <= 1000 for p in conn.sent)
    assert wire.backlogged and ch.buf == b""  # conch's own buffer is never used
    assert wire.held_bytes == 500  # the rest of that write, counted in the metric
    for _ in range(100):  # later output waits in Output, capped, not in the channel
        wire.send("b" * 50)
    assert wire.held_bytes == 5500 and ch.pending_bytes == 500 and ch.buf == b""
    ch.addWindowBytes(400)  # less than the rest: no resume yet
    assert sent(conn) == b"a" * 400 and wire.backlogged
    ch.addWindowBytes(100_000)
    assert sent(conn) == b"a" * 100 + b"b" * 5000
    assert not wire.backlogged and wire.held_bytes == 0


def test_a_blocked_connection_pauses_every_channel_whatever_its_window() -> None:
    ch, conn, wire = make_channel(2**32 - 1)
    conn.transport.blocked = True
    ch.flow_changed()
    assert wire.backlogged
    wire.send("x" * 100)
    assert sent(conn) == b"" and wire.held_bytes == 100
    conn.transport.blocked = False
    ch.flow_changed()
    assert sent(conn) == b"x" * 100 and not wire.backlogged


def test_the_close_waits_for_what_is_pending() -> None:
    ch, conn, _ = make_channel(10)
    ch.write(b"y" * 25)
    ch.loseConnection()
    assert conn.closed == 0
    ch.addWindowBytes(10)
    assert conn.closed == 0
    ch.addWindowBytes(10)
    assert sent(conn) == b"y" * 25 and conn.closed == 1


def test_many_small_window_adjusts_cost_no_copying_of_the_rest() -> None:
    """The rest of a write is a memoryview: a 1-byte window adjust sends one byte and
    copies nothing else (a hostile client may send adjusts one byte at a time)."""
    ch, conn, _ = make_channel(0)
    big = b"z" * 200_000
    ch.write(big)
    for _ in range(1000):
        ch.addWindowBytes(1)
    assert sent(conn) == b"z" * 1000
    pending = ch._pending
    assert pending is not None and len(pending) == 1
    assert isinstance(pending[0], memoryview) and pending[0].obj is big


# -- the real server and a real client in this process -----------------------------------------


class Flood(conch_channel.SSHChannel):
    """A session with a pty and a shell, a 4 GiB window, then never read again."""

    name = b"session"

    def __init__(self, lines: list[bytes], opened: defer.Deferred[None], **kw: Any) -> None:
        super().__init__(localWindow=2**32 - 1, localMaxPacket=32768, **kw)
        self.lines = lines
        self.opened = opened

    def channelOpen(self, specificData: bytes) -> None:
        pty = common.NS(b"xterm") + struct.pack(">4L", 80, 24, 0, 0) + common.NS(b"")
        self.conn.sendRequest(self, b"pty-req", pty)
        self.conn.sendRequest(self, b"shell", b"")
        self.opened.callback(None)

    def dataReceived(self, data: bytes) -> None:
        pass


class Client(transport.SSHClientTransport):
    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> defer.Deferred[bool]:
        return defer.succeed(True)

    def connectionSecure(self) -> None:
        factory: Any = self.factory

        class Conn(connection.SSHConnection):
            def serviceStarted(self) -> None:
                super().serviceStarted()
                self.openChannel(Flood([], factory.opened, conn=self))

        class Auth(userauth.SSHUserAuthClient):
            preferredOrder = [b"password"]  # noqa: RUF012

            def getPassword(self, prompt: Any = None) -> defer.Deferred[bytes]:
                return defer.succeed(b"password1")

        self.requestService(Auth(b"alice", Conn()))


class Made(list[ShellTransport]):
    """The server-side transports the factory built."""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Assembly, Any, Made]]:
    server = make_server_with(tmp_path, ("alice",), admins=())
    keys = HostKeys((Key(ed25519.Ed25519PrivateKey.generate()),))
    home_root = FilePath(str(tmp_path / "home"))
    factory = ssh_setup.ssh_factory(
        keys, server.store, home_root, inline_runner, R, 60.0, server.admission,
        server.failed_logins,
        ssh_session.session_starter(server.start, R, 4096, 256 * 1024),
        server.account_pacing, server.metrics, server.second_factor.otp,
        ssh_sftp.sftp_starter(
            server.homes, server.metrics, R, ssh_sftp.login_gate(server.start, server.locks),
            server.transfers,
        ),
    )  # fmt: skip
    made = Made()
    build = factory.buildProtocol

    def record(addr: Any) -> ShellTransport:
        t = build(addr)
        made.append(t)
        return t

    factory.buildProtocol = record  # type: ignore[method-assign]
    port = R.listenTCP(0, factory, interface="127.0.0.1")
    try:
        yield server, port, made
    finally:
        pytest_twisted.blockon(port.stopListening())


async def open_session(port: Any) -> tuple[Client, Any]:
    f = protocol.ClientFactory()
    f.protocol = Client  # type: ignore[assignment]
    opened: defer.Deferred[None] = defer.Deferred()
    f.opened = opened  # type: ignore[attr-defined]
    connector = R.connectTCP("127.0.0.1", port.getHost().port, f)
    await opened
    await deferLater(R, 0.2, lambda: None)  # the shell starts, the prompt is sent
    return connector.transport.protocol, connector


@pytest_twisted.ensureDeferred
async def test_a_client_that_never_reads_is_held_to_max_output_whatever_its_window(
    served: tuple[Assembly, Any, Made],
) -> None:
    server, port, made = served
    client, _ = await open_session(port)
    client.transport.pauseProducing()  # from now on the client reads nothing
    (seat,) = server.seats
    ours = made[0]
    for _ in range(400):  # messages to alice: 400 × 8 KiB, far past every buffer
        seat.wire.send_message("", _message("m" * 8192 + "\n"))
        await deferLater(R, 0, lambda: None)
        if ours.blocked:
            break
    assert ours.blocked  # the socket's backpressure reached the connection…
    assert seat.wire.backlogged  # …and paused the session's output
    for _ in range(400):
        seat.wire.send_message("", _message("m" * 8192 + "\n"))
    tcp: Any = ours.transport
    queued = len(tcp.dataBuffer) + sum(map(len, tcp._tempDataBuffer))
    assert queued <= 64 * 1024 + 40_000  # Twisted's buffer: its bufferSize and one write
    assert seat.wire.held_bytes <= server.config.max_output
    client.transport.abortConnection()
    await deferLater(R, 0.1, lambda: None)


def _message(text: str) -> Any:
    from shellserver.text.message import Message

    return Message(text)


@pytest_twisted.ensureDeferred
async def test_a_closed_connection_is_freed_without_the_collector(
    served: tuple[Assembly, Any, Made],
) -> None:
    server, port, made = served
    client, _ = await open_session(port)
    (seat,) = server.seats
    ours = made.pop()
    refs = [
        weakref.ref(x)
        for x in (ours, ours.service, ours.transport, seat, seat.wire, seat.wire.channel)
    ]
    del seat
    gc.collect()
    gc.disable()
    try:
        client.transport.loseConnection()
        for _ in range(20):
            await deferLater(R, 0.05, lambda: None)
            if not server.seats and not ours.transport.connected:
                break
        del ours
        await deferLater(R, 0.05, lambda: None)
        alive = [type(r()).__name__ for r in refs if r() is not None]
        assert alive == []
    finally:
        gc.enable()


class Receiver:
    """What the wire calls on its terminal, counted."""

    def __init__(self) -> None:
        self.resizes = 0

    def resized(self) -> None:
        self.resizes += 1


def test_resizes_while_the_client_takes_no_output_cost_one_redraw_when_it_does() -> None:
    """A client that does not take output can still send window-change requests (the
    connection is read for the other channels and the window adjusts): each would redraw
    into held output. While the channel is paused only the size is kept."""
    ch, _, wire = make_channel(0)
    receiver = Receiver()
    wire.receiver = receiver  # type: ignore[assignment]
    wire.send("x")  # the window is empty: paused
    assert wire.backlogged
    for i in range(1000):
        wire.resize(100 + i % 7, 30)
    assert receiver.resizes == 0 and wire.width == 100 + 999 % 7
    ch.addWindowBytes(100)
    assert receiver.resizes == 1
    wire.resize(80, 24)
    assert receiver.resizes == 2  # taking output: at once
