"""An SSH session channel as a wire: the same terminal, editor and shell as telnet's.

With a pty the client sends raw keys: character mode, the line editor echoes
and redraws, exactly as for telnet. Without one (``ssh -T``, most ``ssh host CMD``) it
sends lines: line mode, and output keeps plain ``\\n`` so it can be piped.
Flow control: the channel (``server.SessionChannel``) pauses the same :class:`Output`
telnet uses while the client's window is full, while the rest of a write waits for it,
and while the whole connection is blocked (its socket full, a key exchange under way).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from attrs import define
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from shellserver.hub.session import Session
from shellserver.shell import sessionstart
from shellserver.shell.dispatch import Shell
from shellserver.shell.login import STORE_DOWN_TEXT, UNAVAILABLE_TEXT
from shellserver.store.accounts import UNAVAILABLE, Account, StoreUnavailable
from shellserver.terminal.discipline import (
    GONE,
    Disconnected,
    EndOfInput,
    ILineReceiver,
    Interrupted,
    IWire,
    Terminal,
    clamp_size,
)
from shellserver.text.message import Message
from shellserver.wires.output import Fronted, Output
from shellserver.wires.telnet.encode import decode

if TYPE_CHECKING:
    from shellserver.shell.sessionstart import SessionStart

log = Logger()

#: Seconds a closing channel may take to send what it holds before the connection is aborted.
CLOSE_TIMEOUT = 10.0
#: Exit status when the session could not start, or the command was interrupted.
FAILED = 1


@define
class Request:
    """What the client asked for before its shell or command: the wire's view of a session."""

    pty: bool = False
    term: str = "dumb"
    cols: int = 80
    rows: int = 24
    #: None for a shell, else the command line of an exec request.
    command: str | None = None


class ChannelSide(Protocol):
    """What a session channel (``server.SessionChannel``) hands the client's input and its flow
    to: a session's :class:`SSHWire`, or the SFTP link (``sftp.SFTPLink``)."""

    def data_received(self, data: bytes) -> None:
        """Bytes from the client."""

    def eof_received(self) -> None:
        """The client closed its input."""

    def resize(self, cols: int, rows: int) -> None:
        """The client's window size changed."""

    def pause(self) -> None:
        """Output cannot go out now (window or connection full)."""

    def resume(self) -> None:
        """Output can go out again."""

    def abort(self) -> None:
        """Drop the whole connection."""

    def connection_lost(self) -> None:
        """The channel or its connection is gone."""


class Channel(Protocol):
    """What the wire uses of conch's session channel (``server.SessionChannel``)."""

    conn: Any
    wire: ChannelSide | None

    def write(self, data: bytes) -> None:
        """Bytes for the client, within the window (``SessionChannel.write`` holds the rest and
        pauses the wire)."""

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """Part of the transport shape :class:`Output` is handed; ``SessionChannel`` joins the
        pieces into one write, so a block costs one window check."""

    def exit(self, status: int) -> None:
        """Send ``exit-status`` and close once pending output has gone, so ``ssh host CMD`` reports
        the command's status."""


@implementer(IWire)
class SSHWire(Fronted):
    """One session channel, seen from the terminal."""

    kind = "ssh"

    def __init__(
        self,
        channel: Channel,
        request: Request,
        peer: str,
        clock: IReactorTime,
        max_line: int = 4096,
        max_output: int = 256 * 1024,
    ) -> None:
        self.channel = channel
        self.peer = peer
        self.term = request.term
        self.pty = request.pty
        self.width, self.height = clamp_size(request.cols, request.rows)
        #: Sent as ``exit-status`` when the channel closes.
        self.status = 0
        self.receiver: ILineReceiver | None = None
        self._clock = clock
        self._max_line = max_line
        # Output uses only write and writeSequence of its transport.
        self._out = Output(channel, clock, max_output, self.abort)  # type: ignore[arg-type]
        self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._buf = bytearray()
        self._discarding = False
        self._closing = False
        self._lost = False
        self._timer: IDelayedCall | None = None
        self._resized_meanwhile = False
        #: Message bytes are cached per encoding: CR LF with a pty, LF without.
        self._encoding = "ssh" if self.pty else "ssh-lf"

    # -- output ------------------------------------------------------------------

    @property
    def held_bytes(self) -> int:
        """Held in ``Output`` and, of the last write, what the client's window did not take."""
        pending: int = getattr(self.channel, "pending_bytes", 0)
        return self._out.held_bytes + pending

    def _encode(self, text: str) -> bytes:
        if self.pty:
            text = text.replace("\n", "\r\n")
        return text.encode("utf-8", "surrogateescape")

    def send(self, text: str) -> None:
        """Own output into the capped :class:`Output`; with a pty, ``\\n`` becomes CR LF for the
        terminal, without one it stays ``\\n`` so output can be piped."""
        self._out.write(self._encode(text))

    def send_message(self, lead: str, message: Message, after: str = "") -> bool:
        """A shared message between own text, as one block: the message body is encoded once per
        encoding (CR LF with a pty, LF without) and cached on the Message, so a ``wall`` to
        thousands costs one encode, not one per session."""
        body = message.encoded(self._encoding, self._encode)
        if after:
            return self._out.offer((self._encode(lead), body, self._encode(after)))
        return self._out.offer((self._encode(lead), body))

    def set_echo(self, on: bool) -> None:
        """The client's terminal echoes by itself without a pty; with one the editor draws."""

    def close(self) -> None:
        """Exit status, then close the channel after pending output (a stalled client: abort)."""
        if self._closing or self._lost:
            return
        self._closing = True
        if self._out.paused:
            self.abort()
            return
        self.channel.exit(self.status)
        self._timer = self._clock.callLater(CLOSE_TIMEOUT, self._close_timeout)

    def _close_timeout(self) -> None:
        self._timer = None
        if not self._lost:
            self.abort()

    def abort(self) -> None:
        """The client does not read: drop its whole SSH connection."""
        conn: Any = self.channel.conn
        transport = getattr(getattr(conn, "transport", None), "transport", None)
        if transport is not None:
            transport.abortConnection()

    # -- flow control (conch calls these on the channel) ---------------------------

    def pause(self) -> None:
        """The channel's window is empty, a write is pending, or the connection is blocked:
        :class:`Output` holds (and caps) what comes next and starts its stall timer."""
        self._out.pause()

    def resume(self) -> None:
        """The client takes output again; a resize that came meanwhile is redrawn now, once, rather
        than once per ``window-change`` while nothing could be drawn."""
        self._out.resume()
        if self._resized_meanwhile and not self._out.paused:
            self._resized_meanwhile = False
            if self.receiver is not None and not self._lost:
                self.receiver.resized()

    # -- input ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """The client's input. With a pty it is keystrokes, decoded incrementally (a character
        split across packets survives) and LF made CR so a paste runs its lines; without one it
        is lines, each capped at ``max_line`` (the rest of an over-long line is discarded, never
        run)."""
        receiver = self.receiver
        if receiver is None or self._lost:
            return
        if self.pty:
            text = self._utf8.decode(data)
            if "\n" in text:  # Enter is CR from a terminal; a pasted LF is one too
                text = text.replace("\r\n", "\r").replace("\n", "\r")
            if text:
                receiver.text_received(text)
            return
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                self._append(data[start:])
                return
            self._append(data[start:end])
            line, discarding = bytes(self._buf), self._discarding
            self._buf.clear()
            self._discarding = False
            if not discarding:
                receiver.line_received(decode(line.removesuffix(b"\r")))
            start = end + 1

    def _append(self, chunk: bytes) -> None:
        if self._discarding or not chunk:
            return
        if len(self._buf) + len(chunk) > self._max_line:
            self._buf.clear()
            self._discarding = True
            if self.receiver is not None:
                self.receiver.line_too_long(self._max_line)
            return
        self._buf += chunk

    def eof_received(self) -> None:
        """The client's input has ended (stdin closed); with a pty ^D comes as a key instead."""
        if self.receiver is not None and not self._lost:
            ended = getattr(self.receiver, "input_ended", None)
            if ended is not None:
                ended()
            else:
                self.receiver.eof_received()

    def resize(self, cols: int, rows: int) -> None:
        """The new size at once; its redraw at once too, unless the client is not taking
        output: then one redraw when it reads again, however many ``window-change``
        requests came meanwhile (telnet reads nothing then, NAWS included; an SSH
        connection must still be read, for the other channels and the window adjusts)."""
        self.width, self.height = clamp_size(cols, rows)
        if self.receiver is None or self._lost:
            return
        if self._out.paused:
            self._resized_meanwhile = True
            return
        self.receiver.resized()

    def connection_lost(self) -> None:
        """The channel (or the whole connection) is gone; once only."""
        if self._lost:
            return
        self._lost = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._out.stop()
        # No cycle left for the collector (docs/performance.md): the terminal, the channel.
        receiver, self.receiver = self.receiver, GONE
        if self.channel.wire is self:
            self.channel.wire = None
        if receiver is not None:
            receiver.connection_lost()


class SSHSeat:
    """A session over one SSH channel, counted among the server's seats while it lasts."""

    def __init__(self, start: SessionStart, wire: SSHWire, key: str = "") -> None:
        self.start = start
        self.wire = wire
        #: The fingerprint of the key the connection logged in with ("" for a password).
        self.key = key
        self.terminal = Terminal(wire, start.redraws)
        self.session: Session | None = None
        #: A shell (not ``ssh host CMD``): its session may outlive a lost connection.
        self.interactive = False
        wire.receiver = self.terminal
        if wire.pty:
            self.terminal.mode_changed(True)

    async def run(self, account: Account, command: str | None) -> None:
        """Start the session on this channel and, for an exec request, run the one command and
        close with its status; a shell just starts and lives until the terminal closes. A store
        that is unavailable is said in words and gives status 1, never a traceback."""
        start, terminal, wire = self.start, self.terminal, self.wire
        start.seats.add(self)
        terminal.on_disconnect = self._lost
        mode = sessionstart.Mode.INTERACTIVE if command is None else sessionstart.Mode.COMMAND
        self.interactive = command is None
        try:
            session = await sessionstart.begin(start, account, terminal, wire, mode, key=self.key)
        except UNAVAILABLE as e:
            start.trouble.unavailable(e, "login")
            down = isinstance(e, StoreUnavailable)
            terminal.write(STORE_DOWN_TEXT if down else UNAVAILABLE_TEXT)
            session = None
        except (Disconnected, EndOfInput):  # gone, or ^D, at a question before the shell
            session = None
        if session is None:
            wire.status = FAILED
            terminal.close()
            return
        self.session = session
        if command is None:
            return
        try:
            wire.status = await Shell(start.services, session, terminal).run_once(command)
        except (Interrupted, EndOfInput, Disconnected):
            wire.status = FAILED
        terminal.close()

    def _lost(self) -> None:
        self.start.seats.discard(self)
        session, self.session = self.session, None
        if session is not None:
            # ``ssh host CMD`` never detaches.
            sessionstart.lost(self.start, session, self.terminal, self.wire, self.interactive)

    def crashed(self, failure: Failure) -> None:
        """A bug in the session start or the command: logged with its traceback, the client gets
        status 1 and a closed channel instead of a hanging one."""
        log.failure("SSH session failed", failure)
        self.wire.status = FAILED
        self.terminal.close()


def session_starter(
    start: SessionStart, clock: IReactorTime, max_line: int, max_output: int
) -> Callable[[Channel, Account, Request], None]:
    """The SSH realm's ``SessionStart``: each session channel gets a wire (with the line and
    output limits every wire has) and a seat, made with the parts the assembly built."""

    def seat_channel(channel: Channel, account: Account, request: Request) -> None:
        peer = getattr(channel.conn.transport, "peer", "?")
        key = getattr(channel.conn.transport, "key_fingerprint", "")
        wire = SSHWire(channel, request, peer, clock, max_line, max_output)
        channel.wire = wire
        seat = SSHSeat(start, wire, key)
        d = Deferred.fromCoroutine(seat.run(account, request.command))
        d.addErrback(seat.crashed)

    return seat_channel
