"""Telnet on the wire: IAC parsing, option negotiation, line splitting, output encoding.

This is the only module that sees the telnet protocol's bytes. It hands
complete lines (``str``) and a few events to an :class:`ILineReceiver` and
offers :class:`IWire` back. It deliberately does not use ``conch.telnet``
(see docs/architecture.md): that holds a bare CR until the next byte, raises
``ValueError("Stumped")`` on unknown commands (twisted #5381), and costs
~10x more per line than the fast path below.

Negotiation follows RFC 1143 without queues and never waits for an answer,
so clients that never negotiate (nc) work exactly like telnet(1).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from shellserver.output import Output
from shellserver.terminal import ILineReceiver, IWire
from shellserver.wire import decode, encode

# Commands (RFC 854) and options.
SE, NOP, DM, BRK, IP, AO, AYT, EC, EL, GA, SB = range(240, 251)
WILL, WONT, DO, DONT, IAC = 251, 252, 253, 254, 255
EOF, SUSP, ABORT = 236, 237, 238
ECHO, SGA, TTYPE, NAWS, LINEMODE = 1, 3, 24, 31, 34

# Option states (RFC 1143); the _OPP states carry the queue bit "opposite".
NO, YES, WANTNO, WANTYES, WANTNO_OPP, WANTYES_OPP = 0, 1, 2, 3, 4, 5
_BASE = {WANTNO_OPP: WANTNO, WANTYES_OPP: WANTYES}
#: Our own request (RFC 1143 section 7): (state, enable) -> (new state, send it now?).
#: Pairs not listed change nothing (already there, or already asked).
_REQUEST = {
    (NO, True): (WANTYES, True),
    (WANTNO, True): (WANTNO_OPP, False),
    (WANTYES_OPP, True): (WANTYES, False),
    (YES, False): (WANTNO, True),
    (WANTYES, False): (WANTYES_OPP, False),
    (WANTNO_OPP, False): (WANTNO, False),
}

_DATA, _IAC, _OPT, _SB, _SB_IAC = range(5)
_SPECIAL = re.compile(rb"[\x00\x03\x04\x08\r\n\x7f\xff]")
_MAX_SB = 1024


def iac(cmd: int, opt: int) -> bytes:
    return bytes((IAC, cmd, opt))


@implementer(IWire, IPushProducer)
class TelnetProtocol(Protocol):
    """One telnet connection. ``attach`` builds the line receiver above us at connect."""

    kind = "tel"
    #: Options we agree to turn on at our end when asked (DO).
    accept_us: frozenset[int] = frozenset({SGA})
    #: Options we let the peer turn on (WILL).
    accept_him: frozenset[int] = frozenset({NAWS})

    receiver: ILineReceiver
    _out: Output

    def __init__(
        self,
        attach: Callable[[IWire], ILineReceiver],
        clock: IReactorTime,
        max_line: int = 4096,
        max_output: int = 256 * 1024,
    ) -> None:
        self._attach = attach
        self._clock = clock
        self._max_line = max_line
        self._max_output = max_output
        self._buf = bytearray()
        self._discarding = False
        self._cr = False
        self._state = _DATA
        self._opt_cmd = 0
        self._sb = bytearray()
        self._sb_len = 0
        self._us: dict[int, int] = {}
        self._him: dict[int, int] = {}
        #: Has the client ever negotiated? Until it does, nothing is queued.
        self._negotiating = False
        self._closing = False
        self.width = 80
        self.height = 24
        self.peer = ""

    # -- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        peer = transport.getPeer()
        self.peer = getattr(peer, "host", None) or "local"
        self._out = Output(transport, self._clock, self._max_output, self.abort)
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        self._request(self._him, NAWS, True, DO, DONT)
        self.receiver = self._attach(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._out.stop()
        self.receiver.connection_lost()

    # IPushProducer: the transport tells us when the client stops reading.
    def pauseProducing(self) -> None:
        self._out.pause()
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        self._out.resume()
        if self.transport is not None and not self._out.paused:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        self._out.stop()

    @property
    def held_bytes(self) -> int:
        """Output held for this client while it does not read (the metrics scrape sums it)."""
        return self._out.held_bytes

    # -- IWire -------------------------------------------------------------

    def send(self, text: str) -> None:
        self._out.write(encode(text))

    def send_message(self, chunks: Sequence[bytes]) -> bool:
        return self._out.offer(chunks)

    def set_echo(self, on: bool) -> None:
        """Echo off = we promise to echo (and echo nothing), so the client stops echoing."""
        self._request(self._us, ECHO, not on, WILL, WONT)

    def close(self) -> None:
        """Close after pending output; a client that does not read is aborted instead."""
        if self._closing or self.transport is None:
            return
        self._closing = True
        if self._out.paused:
            self.abort()
        else:
            self.transport.loseConnection()
            self._clock.callLater(10, self._close_timeout)

    def _close_timeout(self) -> None:
        if self.connected:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- input ---------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        # Fast path: one whole plain line, which is what clients send nearly always.
        if self._state == _DATA and not self._cr and not self._buf and not self._discarding:
            if data.endswith(b"\r\n"):
                end = len(data) - 2
            elif data.endswith(b"\n"):
                end = len(data) - 1
            else:
                end = -1
            if 0 <= end <= self._max_line and _SPECIAL.search(data, 0, end) is None:
                self.receiver.line_received(decode(data[:end]))
                return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._state != _DATA:
                self._command_byte(data[i])
                i += 1
                continue
            if self._cr:
                self._cr = False
                if data[i] in (0, 10):  # CR LF and CR NUL end one line, not two
                    i += 1
                    continue
            m = _SPECIAL.search(data, i)
            j = n if m is None else m.start()
            if j > i:
                self._append(data[i:j])
            if m is None:
                return
            i = j + 1
            b = data[j]
            if b == IAC:
                self._state = _IAC
            elif b == 13:
                self._cr = True
                self._end_line()
            elif b == 10:
                self._end_line()
            elif b in (8, 127):
                self._erase_char()
            elif b == 3:
                self._interrupt()
            elif b == 4:
                self._eof()
            # NUL on its own is telnet padding: dropped.

    def _append(self, chunk: bytes) -> None:
        if self._discarding:
            return
        if len(self._buf) + len(chunk) > self._max_line:
            self._buf.clear()
            self._discarding = True
            self.receiver.line_too_long(self._max_line)
            return
        self._buf += chunk

    def _end_line(self) -> None:
        if self._discarding:
            self._discarding = False
            return
        line = decode(bytes(self._buf))
        self._buf.clear()
        self.receiver.line_received(line)

    def _erase_char(self) -> None:
        buf = self._buf
        while buf:
            last = buf.pop()
            if last & 0xC0 != 0x80:  # stop after removing a whole UTF-8 character
                break

    def _interrupt(self) -> None:
        self._buf.clear()
        self._discarding = False
        self.receiver.interrupted()

    def _eof(self) -> None:
        # ^D ends input only on an empty line, as a tty in canonical mode does.
        if not self._buf and not self._discarding:
            self.receiver.eof_received()

    # -- telnet commands ---------------------------------------------------

    def _command_byte(self, b: int) -> None:
        state = self._state
        if state == _IAC:
            if b == IAC:
                self._state = _DATA
                self._append(b"\xff")
            elif WILL <= b <= DONT:
                self._opt_cmd = b
                self._state = _OPT
            elif b == SB:
                self._sb.clear()
                self._sb_len = 0
                self._state = _SB
            else:
                self._state = _DATA
                self._command(b)
        elif state == _OPT:
            self._state = _DATA
            self._negotiate(self._opt_cmd, b)
        elif state == _SB:
            if b == IAC:
                self._state = _SB_IAC
            else:
                self._sb_len += 1
                if self._sb_len > _MAX_SB:  # never ends: give up on it, keep the connection
                    self._state = _DATA
                elif len(self._sb) < 64:
                    self._sb.append(b)
        elif state == _SB_IAC:
            if b == SE:
                self._state = _DATA
                self._subnegotiation(bytes(self._sb))
            elif b == IAC:
                self._state = _SB
                if len(self._sb) < 64:
                    self._sb.append(IAC)
            else:  # broken subnegotiation: treat as IAC <b>
                self._state = _IAC
                self._command_byte(b)

    def _command(self, b: int) -> None:
        if b in (IP, ABORT, BRK):
            self._interrupt()
        elif b == EOF:
            self._eof()
        elif b == EC:
            self._erase_char()
        elif b == EL:
            self._buf.clear()
        elif b == AYT:
            self._out.write(b"\r\n[Yes]\r\n")
        # NOP, DM, GA, AO, SUSP and unknown commands are ignored: never "Stumped".

    def _subnegotiation(self, sb: bytes) -> None:
        if len(sb) == 5 and sb[0] == NAWS:
            width = sb[1] << 8 | sb[2]
            height = sb[3] << 8 | sb[4]
            if width:
                self.width = min(width, 1000)
            if height:
                self.height = min(height, 1000)

    # -- negotiation (RFC 1143) ---------------------------------------------------

    def _negotiate(self, cmd: int, opt: int) -> None:
        self._negotiating = True
        if cmd == WILL:
            self._peer_enables(self._him, opt, opt in self.accept_him, DO, DONT)
        elif cmd == WONT:
            self._peer_disables(self._him, opt, DONT, DO)
        elif cmd == DO:
            self._peer_enables(self._us, opt, opt in self.accept_us, WILL, WONT)
        else:
            self._peer_disables(self._us, opt, WONT, WILL)

    def _peer_enables(
        self, table: dict[int, int], opt: int, acceptable: bool, yes: int, no: int
    ) -> None:
        state = table.get(opt, NO)
        if state == NO:
            if acceptable:
                table[opt] = YES
                self._out.write(iac(yes, opt))
            else:
                self._out.write(iac(no, opt))
        elif state in (WANTNO, WANTYES):
            # WANTNO answered with a yes is a broken peer (RFC 1143 says NO);
            # WANTYES: our request was granted.
            table[opt] = NO if state == WANTNO else YES
        elif state == WANTNO_OPP:
            table[opt] = YES
        elif state == WANTYES_OPP:
            # Granted, but we have since changed our mind: ask to turn it off.
            table[opt] = WANTNO
            self._out.write(iac(no, opt))

    def _peer_disables(self, table: dict[int, int], opt: int, no: int, yes: int) -> None:
        state = table.get(opt, NO)
        if state == YES:
            table[opt] = NO
            self._out.write(iac(no, opt))
        elif state == WANTNO_OPP:
            # Our "off" was acknowledged, and an "on" waited for that answer.
            table[opt] = WANTYES
            self._out.write(iac(yes, opt))
        else:
            table[opt] = NO

    def _request(self, table: dict[int, int], opt: int, enable: bool, yes: int, no: int) -> None:
        """Ask for a change and carry on: the answer, if any, only updates the table.

        A request made while an earlier one is unanswered is queued (RFC 1143),
        so the late answer to the first is never mistaken for the second's.
        A client that has never negotiated (nc) is not expected to answer at
        all: it gets each request at once, so the bytes SPEC §3 promises are
        sent and nothing is left waiting for an answer that will not come.
        """
        state = table.get(opt, NO)
        if not self._negotiating and state in (WANTYES, WANTNO):
            state = YES if state == WANTYES else NO
        step = _REQUEST.get((state, enable))
        if step is not None:
            table[opt], send = step
            if send:
                self._out.write(iac(yes if enable else no, opt))

    def option_state(self, opt: int, ours: bool = True) -> int:
        """NO, YES, WANTNO or WANTYES (a queued reversal is not shown)."""
        state = (self._us if ours else self._him).get(opt, NO)
        return _BASE.get(state, state)
