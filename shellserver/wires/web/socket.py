"""The browser terminal's wire: one WebSocket (``/ws``) in front of the same login and shell.

Twisted's own ``twisted.web.websocket`` does the handshake and parses the
client's frames; this module is the byte layer above it, as ``wires/telnet/`` is
for telnet, so a browser gets the same login, editor and shell as a telnet
client. The page (``page.py``) speaks a tiny protocol:

- client to server, text frames only: ``"0" + keystrokes`` (what xterm.js's
  ``onData`` gives: text, escape sequences, CR for Enter) or ``"1" + "COLS ROWS"``
  for a resize; a page that opened ``/ws?resume`` sends ``"2" + token`` first (its
  resume token, empty when it has none), and the login waits for it;
- server to client: text frames of terminal output (UTF-8, CR LF line ends), and
  for a ``?resume`` page binary frames of ``"2" + token``, its new resume token
  (``shell/resume.py``).

The page is always in character mode: the server's line editor draws and
echoes, exactly as for a telnet client that accepted WILL ECHO and WILL SGA.

Output frames are built here, not by wsproto: a server frame is not masked,
so a ``Message`` (a ``write``, a ``wall``) is framed once for every browser
that shows it (``Message.encoded("web", frame)``), and written through the
same :class:`~shellserver.wires.output.Output` as telnet (backpressure, the cap for
other people's messages, the stall abort). A frame over 64 KiB from the client
closes the socket; :class:`FrameLimit` counts it from the frame headers, before
anything is buffered (Twisted would otherwise gather a fragmented message of
any size).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from shellserver.shell.resume import MAX_TOKEN
from shellserver.terminal.discipline import Disconnected, ILineReceiver, IWire, clamp_size
from shellserver.text.message import Message
from shellserver.wires.output import Fronted, Output

#: Largest message the client may send: a keystroke or a paste is far less, and Twisted
#: would otherwise gather a message of any size. A bigger one closes the socket.
MAX_FRAME = 64 * 1024
#: Close codes (RFC 6455, section 7.4.1; 1012 from IANA's registry).
CLOSE_NORMAL, CLOSE_UNSUPPORTED, CLOSE_TOO_BIG = 1000, 1003, 1009
#: The server restarts: the page reconnects by itself and resumes with its token.
CLOSE_RESTART = 1012
#: An empty ping frame, and how often every open socket gets one.
PING, PING_INTERVAL = b"\x89\x00", 30.0


def frame(text: str) -> bytes:
    """One unmasked text frame of terminal output: CR LF line ends, valid UTF-8.

    Input kept with ``surrogateescape`` (invalid bytes typed on telnet) cannot
    go into a text frame; such a character becomes ``?`` (others only ever see
    it sanitised as octal anyway).
    """
    payload = text.replace("\n", "\r\n").encode("utf-8", "replace")
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 0x10000:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def control(text: str) -> bytes:
    """One unmasked binary frame: the server's word to the page (its resume token), apart
    from terminal output, so nothing printed in the terminal can pass for one."""
    payload = text.encode("utf-8")
    n = len(payload)
    if n < 126:
        return bytes((0x82, n)) + payload
    return struct.pack("!BBH", 0x82, 126, n) + payload


#: The common leads before a message (terminal/discipline.py), framed once: a new line, the
#: prompt's line erased (line mode), the editor's one-row line erased (character mode).
_LEADS = {lead: frame(lead) for lead in ("\n", "\r\x1b[K", "\r\x1b[J")}


class FrameLimit:
    """Reads the client's frame headers as bytes arrive; says when a message grows too big.

    A message's size is the sum of its fragments' payload lengths, known from
    each frame's header before its payload arrives, so nothing oversize is ever
    buffered. Headers are at most 14 bytes; payloads are skipped, not kept.
    """

    __slots__ = ("_head", "_message", "_skip", "limit")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self.limit = limit
        self._head = bytearray()
        self._skip = 0
        self._message = 0

    def feed(self, data: bytes) -> bool:
        """False once a message (or a single frame) is over the limit."""
        i, n = 0, len(data)
        head = self._head
        while i < n:
            if self._skip:
                step = min(self._skip, n - i)
                self._skip -= step
                i += step
                continue
            head.append(data[i])
            i += 1
            if len(head) < 2:
                continue
            short = head[1] & 0x7F
            size = 2 + (2 if short == 126 else 8 if short == 127 else 0)
            size += 4 if head[1] & 0x80 else 0
            if len(head) < size:
                continue
            if short == 126:
                length = int.from_bytes(head[2:4], "big")
            elif short == 127:
                length = int.from_bytes(head[2:10], "big")
            else:
                length = short
            opcode, fin = head[0] & 0x0F, head[0] & 0x80
            head.clear()
            if opcode < 8:  # data frames; control frames are at most 125 bytes (wsproto)
                self._message += length
                if self._message > self.limit:
                    return False
                if fin:
                    self._message = 0
            self._skip = length
        return True


class Pinger:
    """One timer for every open browser socket: a ping each ``interval`` seconds.

    A quiet session (nobody typing, nothing said) would otherwise send nothing
    for up to ``--idle-timeout``, and reverse proxies and NATs drop silent
    connections long before that (nginx after 60 s by default). The browser
    answers pings by itself; a socket that no longer reads meets the usual
    output cap and stall abort.
    """

    def __init__(self, clock: IReactorTime, interval: float = PING_INTERVAL) -> None:
        self._clock = clock
        self._interval = interval
        self._wires: set[WebWire] = set()
        self._call: IDelayedCall | None = None

    def add(self, wire: WebWire) -> None:
        """Ping this socket from now on; the timer runs only while some socket is open."""
        self._wires.add(wire)
        if self._call is None:
            self._call = self._clock.callLater(self._interval, self._tick)

    def discard(self, wire: WebWire) -> None:
        """Its socket closed: a ping would go nowhere, and the set must not keep it alive."""
        self._wires.discard(wire)

    def _tick(self) -> None:
        self._call = None
        for wire in self._wires:
            wire.ping()
        if self._wires:
            self._call = self._clock.callLater(self._interval, self._tick)


@implementer(IWire, IPushProducer)
class WebWire(Fronted):
    """One browser's WebSocket: a ``WebSocketProtocol`` below, an ``IWire`` above."""

    kind = "web"

    receiver: ILineReceiver | None
    _out: Output

    def __init__(
        self,
        attach: Callable[[IWire], ILineReceiver],
        clock: IReactorTime,
        peer: str,
        max_output: int = 256 * 1024,
        pinger: Pinger | None = None,
        resume: bool = False,
    ) -> None:
        self._attach = attach
        self._pinger = pinger
        self._clock = clock
        self._max_output = max_output
        self.peer = peer
        self.width = 80
        self.height = 24
        self.term = "xterm-256color"
        self.receiver = None
        self.connected = False
        self._ws: Any = None
        self._raw: Any = None
        self._closing = False
        self._close_call: IDelayedCall | None = None
        #: The page opened ``/ws?resume``: it sends ``"2" + token`` first and takes tokens.
        self.takes_tokens = resume
        #: Waiting for that first ``"2"`` message (the login waits for it too).
        self._awaiting_token = resume
        self._first: Deferred[str | None] | None = None
        self._first_token: str | None = None
        #: The code of the close frame a ``close()`` sends: a goodbye, or a restart's.
        self._close_code = CLOSE_NORMAL

    # -- WebSocketProtocol (twisted.web.websocket) --------------------------

    def negotiationStarted(self, transport: Any) -> None:
        """Keep the WebSocket transport: closing with a code goes through it."""
        self._ws = transport

    def negotiationFinished(self) -> None:
        """The upgrade is done: take over the socket's backpressure and start the login.

        The page always runs the line editor, so the terminal is told it is in
        character mode at once (telnet learns it from the negotiation).
        """
        raw = self._raw = self._ws.transport
        self.connected = True
        self._out = Output(raw, self._clock, self._max_output, self.abort)
        # The HTTP channel was the socket's producer until the upgrade; now we are.
        raw.unregisterProducer()
        raw.registerProducer(self, True)
        if self._pinger is not None:
            self._pinger.add(self)
        self.receiver = self._attach(self)
        self.receiver.mode_changed(True)

    def textMessageReceived(self, message: str) -> None:
        """The page's kinds of frame: keystrokes ("0"), a resize ("1"), and a ``?resume``
        page's token ("2"), which comes first; keys before it mean it has none."""
        receiver = self.receiver
        if receiver is None or self._closing:
            return
        kind, body = message[:1], message[1:]
        if self._awaiting_token and kind != "1":
            self._token_arrived(body[: MAX_TOKEN + 1] if kind == "2" else "")
            if kind == "2" or self.receiver is None or self._closing:
                return
        if kind == "0":
            if "\n" in body:  # a pasted LF is Enter, as on a tty; CR LF is one Enter
                body = body.replace("\r\n", "\r").replace("\n", "\r")
            if body:
                receiver.text_received(body)
        elif kind == "1":
            self._resize(body)
        # Anything else is a client that does not speak our page's protocol: ignored.

    # -- ResumeChannel (shell/resume.py) -------------------------------------

    def first_token(self) -> Deferred[str | None]:
        """The token the page presents before its login ("" for none); None at once for a
        client that did not open ``/ws?resume``."""
        if not self.takes_tokens:
            return succeed(None)
        if not self._awaiting_token:
            return succeed(self._first_token)
        self._first = Deferred()
        return self._first

    def send_token(self, token: str) -> None:
        """The page's new resume token, as a binary frame in order with the output."""
        if self.takes_tokens and not self._closing:
            self._out.write(control("2" + token))

    def coming_back(self) -> None:
        """A restart closes this socket: 1012, which the page takes as a reason to reconnect,
        where 1000 (a logout, a kick) is a goodbye."""
        self._close_code = CLOSE_RESTART

    def _token_arrived(self, token: str) -> None:
        self._awaiting_token = False
        self._first_token = token
        first, self._first = self._first, None
        if first is not None:
            first.callback(token)

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        """The page sends only text frames: a binary frame is not our page (a probe, a
        confused client), so the connection ends rather than guessing what it means."""
        self._refuse(CLOSE_UNSUPPORTED)

    def pongReceived(self, payload: bytes) -> None:
        """Nothing to do: the ping only keeps proxies from dropping a quiet connection, and a
        browser that stops reading is caught by the output cap, not by missing pongs."""

    def connectionLost(self, reason: Failure) -> None:
        """Tell the terminal, and let go of it: no cycle is left for the garbage collector."""
        self.connected = False
        if self._pinger is not None:
            self._pinger.discard(self)
        if self._close_call is not None and self._close_call.active():
            self._close_call.cancel()
        self._close_call = None
        first, self._first = self._first, None
        if first is not None:
            first.errback(Disconnected())
        receiver, self.receiver = self.receiver, None  # no cycle left for the collector
        if receiver is None:
            return
        self._out.stop()
        receiver.connection_lost()

    def ping(self) -> None:
        """One empty ping frame, through the output like everything else (so a browser
        that does not read holds it, capped); none once closing."""
        if not self._closing:
            self._out.write(PING)

    def too_big(self) -> None:
        """The client sent a message over ``MAX_FRAME``: close, reading nothing more."""
        self._refuse(CLOSE_TOO_BIG)

    def _refuse(self, code: int) -> None:
        if self._closing or self._ws is None:
            return
        self._closing = True
        self._goodbye(code)

    def _goodbye(self, code: int) -> None:
        """A close frame, then the socket closes; aborted if the browser does not read it."""
        try:
            self._ws.loseConnection(code)
        except Exception:  # the browser's own close came first (wsproto says so): just go
            self.abort()
            return
        self._close_call = self._clock.callLater(10, self.abort)

    def _resize(self, body: str) -> None:
        cols, _, rows = body.partition(" ")
        if not (cols.isdigit() and rows.isdigit() and len(cols) < 6 and len(rows) < 6):
            return
        size = (self.width, self.height)
        self.width, self.height = clamp_size(int(cols), int(rows))
        if (self.width, self.height) != size and self.receiver is not None:
            self.receiver.resized()

    # -- IPushProducer: the socket says when the browser stops reading ----------

    def pauseProducing(self) -> None:
        """The browser stopped reading: hold output, and read nothing more from it."""
        self._out.pause()
        if self._raw is not None:
            self._raw.pauseProducing()

    def resumeProducing(self) -> None:
        """It reads again: send what was held, then read again if nothing is left held."""
        self._out.resume()
        if self._raw is not None and not self._out.paused:
            self._raw.resumeProducing()

    def stopProducing(self) -> None:
        """The socket is going: drop what is held and any pending stall abort."""
        self._out.stop()

    @property
    def closing(self) -> bool:
        """Closing: whatever else the browser sends is not read."""
        return self._closing

    @property
    def held_bytes(self) -> int:
        """Output held for this browser while it does not read (the metrics scrape)."""
        return self._out.held_bytes if self.receiver is not None else 0

    # -- IWire -----------------------------------------------------------------

    def send(self, text: str) -> None:
        """Own output, one text frame (an empty frame would only cost the browser work)."""
        if text:
            self._out.write(frame(text))

    def send_message(self, lead: str, message: Message, after: str = "") -> bool:
        """Someone's message between this terminal's lead and ``after`` (the prompt again),
        dropped whole over the cap. The message is framed once for every browser showing
        it, and the usual leads are framed once for all."""
        body = message.encoded(self.kind, frame)
        tail = (frame(after),) if after else ()
        if not lead:
            return self._out.offer((body, *tail))
        head = _LEADS.get(lead)
        return self._out.offer((frame(lead) if head is None else head, body, *tail))

    def set_echo(self, on: bool) -> None:
        """Nothing to tell the browser: the server's editor always does the echo."""

    def close(self) -> None:
        """Close after pending output; a browser that does not read is aborted instead."""
        if self._closing or not self.connected:
            return
        if self._out.paused:
            self.abort()
            return
        self._closing = True
        self._goodbye(self._close_code)

    def abort(self) -> None:
        """Drop the connection now: a browser that does not read its close frame, or the
        output cap's stall timer, must not keep a socket and its session."""
        # _close_call stays: connectionLost cancels it if this abort is not the timer's own.
        if self.connected and self._raw is not None:
            self._raw.abortConnection()
