"""Telnet over a Twisted transport: the thin protocol around the sans-io parser.

:class:`TelnetProtocol` feeds the client's bytes to a
:class:`~shellserver.wires.telnet.core.TelnetParser` and acts on the events it
returns (lines and keys to the terminal, answers to the client, window size
and terminal type onto the wire). It also is the :class:`IWire` the terminal
writes to: output encoded once (:mod:`.encode`), held and capped by
:class:`~shellserver.wires.output.Output` when the client stops reading.

The parsing and the negotiation rules live in :mod:`.core` and
:mod:`.negotiate`, with no transport, so they are tested with bytes alone;
this module holds only what needs Twisted: the transport, the producer, the
clock for the close timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from shellserver.terminal.discipline import GONE, ILineReceiver, IWire
from shellserver.text.message import Message
from shellserver.wires.output import Fronted, Output
from shellserver.wires.telnet.core import TelnetParser
from shellserver.wires.telnet.encode import encode
from shellserver.wires.telnet.events import (
    Eof,
    Event,
    Interrupt,
    Keys,
    LineTooLong,
    ModeChanged,
    Send,
    TerminalType,
    WindowSize,
)

#: Own text up to this long that does not end a line (a prompt) is kept encoded with the
#: text: it is sent again as is, after each command and message.
_KEEP_SENT = 256
#: The usual leads before a message: none, a new line, the prompt's line erased (line mode),
#: the editor's one-row line erased (character mode).
_LEADS = frozenset({"", "\n", "\r\x1b[K", "\r\x1b[J"})


def _attached(wire: IWire) -> ILineReceiver:
    raise RuntimeError("already attached")


@implementer(IWire, IPushProducer)
class TelnetProtocol(Fronted, Protocol):
    """One telnet connection: bytes to its parser, events to its terminal, text to bytes.

    ``attach`` builds the line receiver above us at connect (the login
    dialogue, then the session); the protocol only moves things between the
    transport, the parser and that receiver.
    """

    kind = "tel"

    # Slots: a connection's state is many attributes, and past 30 keys CPython stops
    # sharing one key table among instance dicts, so each connection carried a 1.5 KiB
    # dict of its own (docs/performance.md). Twisted's own three (transport, connected,
    # factory: class attributes of Protocol) are slots too, set in __init__.
    __slots__ = (
        "_attach",
        "_clock",
        "_close_call",
        "_closing",
        "_heard",
        "_max_output",
        "_out",
        "_parser",
        "_reads_paused",
        "_sent_data",
        "_sent_text",
        "connected",
        "factory",
        "height",
        "peer",
        "receiver",
        "term",
        "transport",
        "width",
    )

    receiver: ILineReceiver
    _out: Output

    def __init__(
        self,
        attach: Callable[[IWire], ILineReceiver],
        clock: IReactorTime,
        max_line: int = 4096,
        max_output: int = 256 * 1024,
    ) -> None:
        self.transport = None
        self.connected = 0
        self.factory = None
        self._attach = attach
        self._clock = clock
        self._max_output = max_output
        self._parser = TelnetParser(max_line)
        self._closing = False
        #: The abort of a close that takes too long; cancelled when the connection goes.
        self._close_call: IDelayedCall | None = None
        #: Has the client sent anything yet (under TLS: is the handshake done)?
        self._heard = False
        self._reads_paused = False
        self._sent_text = ""
        self._sent_data = b""
        self.width = 80
        self.height = 24
        self.peer = ""
        self.term = ""

    # -- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        """Set up output and backpressure, send our offers (awaiting no answer, so ``nc``
        works), then build the terminal above: the login prompt goes out at once."""
        transport = self.transport
        assert transport is not None
        peer = transport.getPeer()
        self.peer = getattr(peer, "host", None) or "local"
        self._out = Output(transport, self._clock, self._max_output, self.abort)
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._out.write(self._parser.start())
        self.receiver = self._attach(self)
        self._attach = _attached  # needed once: let go of the bound method (64 bytes a session)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Tell the terminal, and let go of it and of the close timer, so refcounting alone
        frees the session (no cycle left for the garbage collector)."""
        self._out.stop()
        if self._close_call is not None and self._close_call.active():
            self._close_call.cancel()  # else it holds this connection for 10 s more
        self._close_call = None
        receiver, self.receiver = self.receiver, GONE  # no cycle left for the collector
        receiver.connection_lost()

    # IPushProducer: the transport tells us when the client stops reading.
    def pauseProducing(self) -> None:
        """Hold output, and stop reading from a client that does not read.

        Reading is paused only once the client has sent something: under TLS
        the greeting, written before the handshake is done, pauses us too, and
        not reading then would never read the handshake (the client's first
        byte comes after it).
        """
        self._out.pause()
        if self.transport is not None and self._heard and not self._reads_paused:
            self._reads_paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        """The client reads again: send what was held, and read from it again once nothing
        is left held (so one that reads slowly cannot make us buffer its input)."""
        self._out.resume()
        if self.transport is not None and self._reads_paused and not self._out.paused:
            self._reads_paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        """The connection is going: drop what is held and any pending stall abort."""
        self._out.stop()

    # -- IWire -------------------------------------------------------------

    def send(self, text: str) -> None:
        """Own output (a command's, the prompt's): in order and never dropped, unlike
        others' messages, because the user asked for it."""
        self._out.write(self._own(text))

    def send_message(self, lead: str, message: Message, after: str = "") -> bool:
        """``lead`` (this terminal's own few bytes), then the message, encoded once for all,
        then ``after`` (own text: the prompt drawn again), all in one transport write."""
        if lead in _LEADS:  # the usual leads: one block, encoded once for all recipients
            data = message.encoded_after(self.kind, lead, encode)
            if after:  # the prompt (or the editor's line), nearly always the one sent last
                data += self._own(after)
            return self._out.post(data)
        chunks = [encode(lead), message.encoded(self.kind, encode)]
        if after:
            chunks.append(self._own(after))
        return self._out.offer(chunks)

    def _own(self, text: str) -> bytes:
        """Own text encoded; a short text sent again (the prompt) reuses its encoding."""
        if text is self._sent_text or text == self._sent_text:
            # the same prompt again (after messages, after a command), or the editor's line
            # drawn again after a message: made anew each time, equal to the last one
            return self._sent_data
        data = encode(text)
        if len(text) <= _KEEP_SENT and not text.endswith("\n"):
            # A prompt (it never ends a line); a command's output would push it out.
            self._sent_text, self._sent_data = text, data
        return data

    def set_echo(self, on: bool) -> None:
        """Echo off = we promise to echo (and echo nothing), so the client stops echoing:
        a password is typed without being shown. The parser knows the mode and the option
        table, so it says what (if anything) to send."""
        data = self._parser.set_echo(on)
        if data:
            self._out.write(data)

    def close(self) -> None:
        """Close after pending output; a client that does not read is aborted instead."""
        if self._closing or self.transport is None:
            return
        self._closing = True
        if self._out.paused:
            self.abort()
        else:
            # TLS closes only once no producer is registered (TCP does not wait).
            self.transport.unregisterProducer()  # type: ignore[attr-defined]
            self.transport.loseConnection()
            self._close_call = self._clock.callLater(10, self._close_timeout)

    def _close_timeout(self) -> None:
        self._close_call = None
        if self.connected:
            self.abort()

    def abort(self) -> None:
        """Drop the connection now, whatever is unsent: for a client that does not read,
        which would otherwise hold its session and memory for ever."""
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- input ---------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Feed the parser and act on what it found, in order.

        A typed line (or, in character mode, keystrokes) is nearly always the
        only event: it is tested for first and handed up without another call.
        """
        self._heard = True
        for event in self._parser.receive(data):
            if type(event) is str:  # a Line
                self.receiver.line_received(event)
            elif type(event) is Keys:
                self.receiver.text_received(event.text)
            else:
                self._act(event)

    def _act(self, event: Event) -> None:
        """Every event but a line or keys: the rarer ones, matched by kind."""
        receiver = self.receiver
        match event:
            case Send(data):
                self._out.write(data)
            case Interrupt():
                receiver.interrupted()
            case Eof():
                receiver.eof_received()
            case LineTooLong(limit):
                receiver.line_too_long(limit)
            case ModeChanged(character):
                receiver.mode_changed(character)
            case WindowSize(cols, rows):
                self.width, self.height = cols, rows
                receiver.resized()
            case TerminalType(name):
                self.term = name
            # Lines and keys never come here: dataReceived hands them up itself.

    def option_state(self, opt: int, ours: bool = True) -> int:
        """NO, YES, WANTNO or WANTYES (a queued reversal is not shown): what tests and
        diagnostics read without reaching into the parser."""
        return self._parser.negotiator.state(opt, ours)


class TelnetFactory(Factory):
    """The ``--telnet`` listener's factory: each connection's wire is handed to ``attach``,
    which runs the in-band login dialogue (``Server.new_connection``)."""

    noisy = False

    def __init__(
        self,
        attach: Callable[[IWire], ILineReceiver],
        clock: IReactorTime,
        max_line: int,
        max_output: int,
    ) -> None:
        self.attach = attach
        self.clock = clock
        self.max_line = max_line
        self.max_output = max_output

    def buildProtocol(self, addr: Any) -> TelnetProtocol:
        """A protocol per connection, with the limits the listener was given."""
        protocol = TelnetProtocol(self.attach, self.clock, self.max_line, self.max_output)
        protocol.factory = self
        return protocol
