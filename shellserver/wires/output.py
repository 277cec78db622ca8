"""A session's output path: ordered, with backpressure for its own output, capped for messages.

The transport pauses us (``IPushProducer``) when its own buffer is full, which
means the client has stopped reading. From then on output is held here:

- The session's own command output is kept in order, but a command that
  writes a lot waits for :meth:`drain` between chunks, and the terminal does
  not run the next typed line while output is backlogged, so what is held
  stays within one chunk of the cap whatever the user pastes.
- Messages from other people are dropped once ``limit`` bytes are held.
- A client that stays paused for ``stall_timeout`` seconds while over the cap,
  or while something waits for it to read, is aborted.

The kernel's send buffer is fixed (``ops/sockets.py``): left alone, Linux
grows it up to 4 MiB (``tcp_wmem``), so a client that stops reading could
swallow megabytes before the transport ever pauses us. Fixed, the pause (and
with it the cap, drain and the stall timer) comes at a known point, and kernel
memory per connection is bounded too.

Messages (and, once a session runs, its own output) are written straight into
the socket when Twisted holds nothing for the client (:meth:`Output._put`). That
reads attributes of Twisted's ``tcp.Connection`` that are not its public API
(``dataBuffer``, ``_tempDataBuffer``, ``_aborting``, ``_writeDisconnected``);
``tests/test_contracts.py`` checks on a real connection that they still mean
what this module assumes, and ``SHELLSERVER_WRITE_THROUGH=0`` turns the
write-through off (everything then goes through ``transport.write``).
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from attrs import define
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport

from shellserver.ops.proxyheader import beneath_header
from shellserver.ops.sockets import cap_send_buffer, interactive

#: The switch, read once at start: ``0`` (or off, no, false) sends everything through the
#: transport, as a Twisted whose internals changed would need.
WRITE_THROUGH_ENV = "SHELLSERVER_WRITE_THROUGH"
WRITE_THROUGH = os.environ.get(WRITE_THROUGH_ENV, "").strip().lower() not in {
    "0",
    "off",
    "no",
    "false",
}


def _nothing() -> None:
    pass


@define(eq=False)
class Output:
    """One connection's output: what goes out, what waits, and when to give up on the client.

    Every wire has one, so the rules for a client that stops reading (keep
    our own output in order, drop others' messages past ``limit``, abort
    after ``stall_timeout``) are the same on telnet, SSH and the browser.
    Compared by identity: two outputs are never "equal".
    """

    transport: ITransport
    clock: IReactorTime
    limit: int
    on_stall: Callable[[], None]
    stall_timeout: float = 10.0
    paused: bool = False
    #: Made when first needed: an empty deque is ~0.75 KiB, and most clients always read.
    _held: deque[bytes] | None = None
    _held_bytes: int = 0
    _stall: IDelayedCall | None = None
    _waiters: list[Deferred[None]] | None = None
    #: The socket of a plain TCP transport, written straight into (:meth:`_put`).
    _sock: socket.socket | None = None
    #: That TCP transport (under a PROXY-header listener's wrapper, the one beneath it).
    _tcp: Any = None
    #: Own output written through too (:meth:`_put`), once a session runs on the wire. Before
    #: that (the telnet negotiation, the login dialogue) the many small writes of a turn are
    #: better joined by the transport into one send: a login storm cost more CPU otherwise.
    own_through: bool = False

    def __attrs_post_init__(self) -> None:
        cap_send_buffer(self.transport)
        interactive(self.transport)
        tcp_transport = beneath_header(self.transport)
        if _write_through(tcp_transport):
            self._tcp = tcp_transport
            self._sock = self._tcp.socket

    def _put(self, data: bytes) -> None:
        """Someone else's message: ``transport.write``, but straight into the kernel when
        Twisted holds nothing for this client: one ``send()`` instead of ``send()`` plus two
        ``epoll_ctl()`` (start and stop watching for writability) a reactor turn later, which
        for a wall to thousands of sessions is most of the kernel's share. Messages go out in
        the end-of-turn pass (``terminal.Redraws``), so these sends are batched at the end
        of the turn anyway. The session's own output stays with the transport: sent inline
        during a login storm it woke the clients mid-turn and doubled the longest stall
        (docs/performance.md, fifth round). What the kernel does not take goes to the
        transport as before, so order, backpressure (the transport pauses us past its own
        buffer) and error handling stay Twisted's. The kernel's buffer (``SEND_BUFFER``)
        now fills before the transport's, so a client that stops reading has both full
        before we hold anything: what a session pins is bounded as before (kernel +
        transport + ``limit``). A connection being closed is left to the transport, which
        drops or flushes as it was asked: aborted (``_aborting``: nothing more may reach
        the client), closing (``disconnecting``: its buffer goes first) or half-closed
        (``_writeDisconnected``: the socket takes nothing more)."""
        sock = self._sock
        if sock is not None:
            t: Any = self._tcp
            if (
                not t.dataBuffer
                and not t._tempDataBuffer
                and t.connected
                and not t.disconnecting
                and not t._aborting
                and not t._writeDisconnected
            ):
                try:
                    sent = sock.send(data)
                except OSError:  # full (EAGAIN), or broken: the transport finds out its way
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
        self.transport.write(data)

    def write(self, data: bytes) -> None:
        """Own output: in order, never dropped."""
        if self.paused:
            self._hold().append(data)
            self._held_bytes += len(data)
            if self._held_bytes > self.limit:
                self._arm()
        elif self.own_through:
            self._put(data)
        else:
            self.transport.write(data)

    def offer(self, chunks: Sequence[bytes]) -> bool:
        """Someone else's message: written whole, or dropped whole when over the cap."""
        if not self.paused:
            self._put(b"".join(chunks))
            return True
        size = sum(map(len, chunks))
        if self._held_bytes + size > self.limit:
            self._arm()
            return False
        self._hold().extend(chunks)
        self._held_bytes += size
        return True

    def post(self, data: bytes) -> bool:
        """:meth:`offer` of one block: one transport write per recipient."""
        if not self.paused:
            self._put(data)
            return True
        return self.offer((data,))

    def drain(self) -> Deferred[None]:
        """Fires once the client reads again and nothing is held (at once when it reads)."""
        if not self.paused:
            return succeed(None)
        d: Deferred[None] = Deferred()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(d)
        self._arm()
        return d

    def pause(self) -> None:
        """The transport's buffer is full (the client stopped reading): hold from now on,
        so nothing more piles up in Twisted's unbounded buffer."""
        self.paused = True

    def resume(self) -> None:
        """The client reads again: send what was held, in order, until it pauses us again;
        once all is out, the stall timer is off and commands waiting in :meth:`drain` go on."""
        self.paused = False
        held = self._held
        while held and not self.paused:
            data = held.popleft()
            self._held_bytes -= len(data)
            self._put(data)
        if not self.paused:
            if self._stall is not None:
                self._stall.cancel()
                self._stall = None
            self._wake()

    def stop(self) -> None:
        """The connection is gone: forget what is held and any pending abort; let waiters go."""
        self._held = None
        self._held_bytes = 0
        self.paused = False
        self.on_stall = _nothing  # usually the wire's abort: the wire holds us, no cycle
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        self._wake()

    def _hold(self) -> deque[bytes]:
        held = self._held
        if held is None:
            held = self._held = deque()
        return held

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, None
        if waiters:
            for d in waiters:
                d.callback(None)

    def _arm(self) -> None:
        if self._stall is None:
            self._stall = self.clock.callLater(self.stall_timeout, self._stalled)

    def _stalled(self) -> None:
        self._stall = None
        if self.paused:
            self.on_stall()

    @property
    def held_bytes(self) -> int:
        """Bytes held while the client does not read (``shellserver_output_held_bytes``)."""
        return self._held_bytes


def _write_through(transport: object) -> bool:
    """A plain TCP connection whose buffers we know (not TLS, not a test transport), with the
    switch on. A Twisted without one of the attributes :meth:`Output._put` reads gets no
    write-through rather than an error on every write."""
    return (
        WRITE_THROUGH
        and isinstance(transport, tcp.Connection)
        and not getattr(transport, "TLS", False)
        and isinstance(getattr(transport, "socket", None), socket.socket)
        and all(hasattr(transport, name) for name in _READS)
    )


#: What :meth:`Output._put` reads of a ``tcp.Connection`` beyond its public interface.
_READS = ("dataBuffer", "_tempDataBuffer", "_aborting", "_writeDisconnected")


class Fronted:
    """What a wire says of its :class:`Output` (``IWire.backlogged``, ``IWire.drain``, and the
    held bytes the metrics scrape sums): the same for every wire, so said once here."""

    _out: Output

    @property
    def backlogged(self) -> bool:
        """Is the client not reading? The terminal then holds the next typed line, so a
        session never holds more than one command's chunk of output."""
        return self._out.paused

    @property
    def held_bytes(self) -> int:
        """Output held for this client while it does not read."""
        return self._out.held_bytes

    def drain(self) -> Deferred[None]:
        """What a command that writes a lot waits on between chunks (backpressure)."""
        return self._out.drain()

    def session_started(self) -> None:
        """A session runs: its own output may now be written through too (see
        :meth:`Output._put`); during the login dialogue the transport joins the many
        small writes of a turn into one send, which a login storm needs more."""
        self._out.own_through = True
