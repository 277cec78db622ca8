"""Contracts with Twisted's and CPython's internals that two speed tricks (and the PROXY
header's listeners, last below) rest on.

``output.py`` writes messages straight into the socket when Twisted holds nothing for the
client, which it learns from attributes of ``tcp.Connection`` that are not Twisted's public
API; ``gcpolicy.py`` freezes what survives a full collection, which it learns from the
``generation`` CPython reports to ``gc.callbacks``. If a new Twisted or Python changes what
those mean, these tests fail and say which switch turns the trick off
(``SHELLSERVER_WRITE_THROUGH=0``, ``SHELLSERVER_GC_POLICY=0``) until the code is fixed.
Everything here is real: a TCP connection over loopback, the ``gc`` module itself.
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import pytest_twisted
from twisted.copyright import version as twisted_version
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater

from shellserver.ops import gcpolicy
from shellserver.ops.gcpolicy import GCPolicy
from shellserver.wires import output
from shellserver.wires.output import Output

TWISTED = f"Twisted {twisted_version}"
WRITE_THROUGH_OFF = (
    f"turn the write-through off with {output.WRITE_THROUGH_ENV}=0 and fix output.py"
)


class Served(Protocol):
    made: ClassVar[list[Served]] = []

    def connectionMade(self) -> None:
        self.out = Output(self.transport, reactor, 1 << 20, lambda: None)  # type: ignore[arg-type]
        Served.made.append(self)


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, socket.socket]]:
    """A served connection (its transport and :class:`Output`) and the client's socket, whose
    small receive buffer fills after a few KiB."""
    monkeypatch.setattr(output, "WRITE_THROUGH", True)  # whatever the environment says
    Served.made = []
    port = reactor.listenTCP(0, Factory.forProtocol(Served), interface="127.0.0.1")
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port.getHost().port))
    pytest_twisted.blockon(deferLater(reactor, 0.1, lambda: None))
    assert Served.made
    try:
        yield Served.made[0], client
    finally:
        client.close()
        Served.made[0].transport.abortConnection()
        pytest_twisted.blockon(deferLater(reactor, 0, lambda: None))
        pytest_twisted.blockon(port.stopListening())


def arrived(client: socket.socket) -> bytes:
    """What the client's kernel holds now, without waiting (no reactor turn passes)."""
    got = b""
    client.setblocking(False)
    try:
        while data := client.recv(65536):
            got += data
    except (BlockingIOError, ConnectionResetError):
        pass
    return got


async def read_until(client: socket.socket, size: int) -> bytes:
    got = b""
    for _ in range(1000):  # at most ~10 s
        got += arrived(client)
        if len(got) >= size:
            break
        await deferLater(reactor, 0.01, lambda: None)
    return got


def turn() -> Any:
    return deferLater(reactor, 0.05, lambda: None)


@pytest_twisted.ensureDeferred
async def test_twisted_holds_unsent_data_in_dataBuffer_and__tempDataBuffer(
    pair: tuple[Any, socket.socket],
) -> None:
    """``output.py`` writes straight into the socket only when both buffers are empty, so a
    direct send never overtakes bytes Twisted still holds. That needs every byte given to
    ``transport.write`` and not yet sent to be in one of the two, and both to be empty (and
    falsy) once all is sent."""
    served, client = pair
    t = served.transport
    assert output._write_through(t), (
        f"{TWISTED}: tcp.Connection lacks one of {output._READS}: the write-through is off"
    )
    assert (t.dataBuffer, t._tempDataBuffer, t._aborting, t._writeDisconnected) == (
        b"",
        [],
        False,
        False,
    ), f"{TWISTED}: an idle connection's buffers and flags are not what output.py reads"

    data = bytes(range(256)) * 8192  # 2 MiB: past the kernel's buffers on both sides
    t.write(data)
    assert b"".join(t._tempDataBuffer) == data, (
        f"{TWISTED}: transport.write no longer queues in _tempDataBuffer; {WRITE_THROUGH_OFF}"
    )
    await turn()  # the reactor sends what the kernel takes
    unsent = t.dataBuffer[t.offset :] + b"".join(t._tempDataBuffer)
    assert t.dataBuffer and 0 < len(unsent) < len(data) and data.endswith(unsent), (
        f"{TWISTED}: what the kernel did not take is not held in dataBuffer; {WRITE_THROUGH_OFF}"
    )

    assert served.out.post(b"queued")  # Twisted holds data: this waits behind it
    assert arrived(client) == data[: len(data) - len(unsent)]  # nothing jumped the queue
    got = await read_until(client, len(unsent) + len(b"queued"))
    assert got == unsent + b"queued"
    await turn()  # doWrite saw all sent: both buffers emptied
    assert not t.dataBuffer and not t._tempDataBuffer, (
        f"{TWISTED}: dataBuffer/_tempDataBuffer stay set when all is sent: the write-through "
        "would never be used"
    )

    assert served.out.post(b"direct")
    assert t._tempDataBuffer == [] and arrived(client) == b"direct"  # before any reactor turn


@pytest_twisted.ensureDeferred
async def test_after_abortConnection_nothing_more_is_written(
    pair: tuple[Any, socket.socket],
) -> None:
    """``abortConnection`` drops what is buffered and closes a reactor turn later; until then
    the socket is open, ``connected`` set and ``disconnecting`` not: only ``_aborting`` says a
    message must not be sent to a client that was kicked or stalled."""
    served, client = pair
    t = served.transport
    t.abortConnection()
    assert t._aborting is True, f"{TWISTED}: abortConnection no longer sets _aborting"
    served.out.post(b"after the abort")
    assert arrived(client) == b"", "a message was written into an aborted connection"
    await turn()
    assert not t.connected
    assert arrived(client) == b""


@pytest_twisted.ensureDeferred
async def test_after_loseConnection_the_transport_flushes_and_closes(
    pair: tuple[Any, socket.socket],
) -> None:
    """``loseConnection`` sends what Twisted holds, then closes: a message after it is left to
    the transport (``disconnecting``), which decides."""
    served, client = pair
    t = served.transport
    t.loseConnection()
    assert t.disconnecting, f"{TWISTED}: loseConnection no longer sets disconnecting"
    served.out.post(b"last words")
    assert arrived(client) == b"", "a message was written past the transport while closing"
    assert t._tempDataBuffer == [b"last words"]
    assert await read_until(client, len(b"last words")) == b"last words"


class Sends:
    """The server's socket with its ``send`` calls counted."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.calls = 0

    def send(self, data: bytes) -> int:
        self.calls += 1
        return self.sock.send(data)


@pytest_twisted.ensureDeferred
async def test_after_a_half_close_nothing_is_sent(pair: tuple[Any, socket.socket]) -> None:
    """``loseWriteConnection`` shuts the socket for writing once the buffers are empty and sets
    ``_writeDisconnected``; a send then could only fail (``EPIPE``)."""
    served, client = pair
    t = served.transport
    t.loseWriteConnection()
    await turn()
    assert t._writeDisconnected is True, (
        f"{TWISTED}: a half-closed connection no longer sets _writeDisconnected"
    )
    assert arrived(client) == b""  # the client saw the end of the stream
    counted = served.out._sock = Sends(served.out._sock)
    served.out.post(b"into a closed half")
    assert counted.calls == 0, "the write-through sent into a socket shut for writing"


def test_an_automatic_full_collection_reports_the_generation_the_policy_waits_for() -> None:
    """On a Python the policy runs on, an automatic collection of the oldest generation reaches
    ``gc.callbacks`` as generation :data:`gcpolicy.FULL`, and the policy then freezes what
    survived. Were it reported otherwise (CPython 3.14's incremental collector), the policy
    would never freeze again and full pauses would grow back with the heap."""
    python = f"{sys.implementation.name} {sys.version.split()[0]}"
    on, why = gcpolicy.wanted({})
    if not on:
        policy = GCPolicy(Clock(), switch=(on, why))
        frozen, hooks = gc.get_freeze_count(), list(gc.callbacks)
        policy.start()
        assert (gc.get_freeze_count(), gc.callbacks) == (frozen, hooks), why
        return
    assert gc.isenabled()
    seen: list[int] = []

    def spy(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            seen.append(info["generation"])

    policy = GCPolicy(Clock(), rescan=0, switch=(on, why))
    policy.start()
    gc.callbacks.insert(0, spy)
    frozen = gc.get_freeze_count()  # walks the frozen objects: not in the loop
    keep: list[list[int]] = []
    try:
        for _ in range(1_000_000):  # a full collection comes every ~100,000 on 3.11
            keep.append([])
            if gcpolicy.FULL in seen:
                break
        refrozen = gc.get_freeze_count()
    finally:
        gc.callbacks.remove(spy)
        policy.stop()
    assert gcpolicy.FULL in seen, (
        f"{python}: no automatic collection reported generation {gcpolicy.FULL} "
        f"(saw {sorted(set(seen))}): set {gcpolicy.ENV}=0 and take "
        f"{sys.version_info[:2]} out of gcpolicy.MEASURED"
    )
    assert refrozen > frozen, f"{python}: the policy froze nothing after a full collection"
    assert gc.get_freeze_count() == 0  # stop let everything go


@pytest_twisted.ensureDeferred
async def test_switched_off_everything_goes_through_the_transport(
    pair: tuple[Any, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, client = pair
    monkeypatch.setattr(output, "WRITE_THROUGH", False)
    out = Output(served.transport, reactor, 1 << 20, lambda: None)
    out.own_through = True
    out.post(b"a message, ")
    out.write(b"own output")
    assert served.transport._tempDataBuffer == [b"a message, ", b"own output"]
    assert await read_until(client, 21) == b"a message, own output"


def test_the_switches_are_read_from_the_environment() -> None:
    code = (
        "from shellserver.ops import gcpolicy; from shellserver.wires import output; "
        "print(output.WRITE_THROUGH, gcpolicy.GCPolicy(None).switch[0])"
    )
    env = {**os.environ, "SHELLSERVER_WRITE_THROUGH": "0", "SHELLSERVER_GC_POLICY": "off"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert off.stdout.split() == ["False", "False"], off.stderr
    env.pop("SHELLSERVER_WRITE_THROUGH")
    env["SHELLSERVER_GC_POLICY"] = "1"
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert on.stdout.split() == ["True", "True"], on.stderr


def test_twisted_proxy_header_parsing_as_proxyheader_uses_it() -> None:
    """``ops/proxyheader.py`` holds the wrapped protocol until the header is read, so it drives
    Twisted's PROXY parsers itself (modules Twisted does not export): each ``feed`` gives
    ``(None, None)`` until a header is complete, then ``(info, what followed)``, and raises
    ``InvalidProxyHeader`` for a bad one; the wrapper keeps ``_parser`` and ``_proxyInfo``,
    and its ``getPeer`` answers from ``_proxyInfo``."""
    from twisted.internet.address import IPv4Address
    from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
    from twisted.protocols.haproxy._v1parser import V1Parser
    from twisted.protocols.haproxy._v2parser import V2Parser
    from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory

    fix = f"{TWISTED}: fix shellserver/ops/proxyheader.py"
    line = b"PROXY TCP4 192.0.2.1 10.0.0.1 5000 2323\r\n"
    v1 = V1Parser()
    assert v1.feed(line[:10]) == (None, None), fix
    info, rest = v1.feed(line[10:] + b"x")
    assert info is not None and info.source == IPv4Address("TCP", "192.0.2.1", 5000), fix
    assert rest == b"x", fix
    with pytest.raises(InvalidProxyHeader):
        V1Parser().feed(b"PROXY " + b"x" * 200)
    body = socket.inet_aton("192.0.2.2") + socket.inet_aton("10.0.0.1") + b"\x13\x88\x09\x13"
    header = V2Parser.PREFIX + b"\x21\x11\x00\x0c" + body
    v2 = V2Parser()
    assert v2.feed(header[:20]) == (None, None), fix
    info, rest = v2.feed(header[20:] + b"y")
    assert info is not None and info.source == IPv4Address("TCP", "192.0.2.2", 5000), fix
    assert rest == b"y", fix
    wrapper = HAProxyProtocolWrapper(HAProxyWrappingFactory(Factory()), Protocol())
    assert wrapper._parser is None and wrapper._proxyInfo is None, fix
    wrapper._proxyInfo = info
    assert wrapper.getPeer() == info.source, fix
