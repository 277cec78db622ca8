"""Telnet on the wire: IAC parsing, option negotiation, line splitting, output encoding.

This is the only module that sees the telnet protocol's bytes. It hands
complete lines (``str``) and a few events to an :class:`ILineReceiver` and
offers :class:`IWire` back. It deliberately does not use ``conch.telnet``
(see docs/architecture.md): that holds a bare CR until the next byte, raises
``ValueError("Stumped")`` on unknown commands (twisted #5381), and costs
~10x more per line than the fast path below.

Negotiation follows RFC 1143 and never waits for an answer, so clients that
never negotiate (nc) work exactly like telnet(1). A client that accepts our
WILL ECHO and WILL SGA is in character mode: its bytes are decoded and handed
up as keystrokes (``text_received``) for the line editor; otherwise lines are
split here (line mode) with a fast path for a whole plain line in one packet.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from shellserver.terminal.discipline import GONE, ILineReceiver, IWire, clamp_size
from shellserver.text.message import Message
from shellserver.wires.output import Fronted, Output
from shellserver.wires.telnet.encode import decode, encode

# Commands (RFC 854) and options.
SE, NOP, DM, BRK, IP, AO, AYT, EC, EL, GA, SB = range(240, 251)
WILL, WONT, DO, DONT, IAC = 251, 252, 253, 254, 255
EOF, SUSP, ABORT = 236, 237, 238
BINARY, ECHO, SGA, TTYPE, NAWS, LINEMODE = 0, 1, 3, 24, 31, 34
TTYPE_IS, TTYPE_SEND = 0, 1

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
#: Bytes that need a look in character mode: everything else is keystroke text.
_CHAR_SPECIAL = re.compile(rb"[\x00\r\n\xff]")
_MAX_SB = 1024
_TERM_OK = re.compile(r"[^a-z0-9._+-]")
#: Window size limits (SPEC §8): columns, rows.
#: What is offered at connect, in this order (SPEC §3); nothing waits for the answers.
_OFFERS: tuple[tuple[bool, int], ...] = ((True, ECHO), (True, SGA), (False, SGA))
_OFFERS += ((True, BINARY), (False, BINARY), (False, NAWS), (False, TTYPE))
#: Own text up to this long that does not end a line (a prompt) is kept encoded with the
#: text: it is sent again as is, after each command and message.
_KEEP_SENT = 256
_LEADS = frozenset({"", "\n", "\r\x1b[K"})


#: Telnet commands that are keys in character mode: IP/ABORT/BRK ^C, EOF ^D, EC erase, EL ^U.
_KEY_COMMANDS = {IP: "\x03", ABORT: "\x03", BRK: "\x03", EOF: "\x04", EC: "\x7f", EL: "\x15"}


def _attached(wire: IWire) -> ILineReceiver:
    raise RuntimeError("already attached")


class _Options:
    """One side's option states (RFC 1143): 3 bits per option, in one int.

    A dict per side cost 224 bytes per connection for the handful of options a
    client ever names; this is ~70. Options never named read as NO.
    """

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits = 0

    def get(self, opt: int) -> int:
        return (self._bits >> (3 * opt)) & 7

    def __setitem__(self, opt: int, state: int) -> None:
        shift = 3 * opt
        self._bits = (self._bits & ~(7 << shift)) | (state << shift)


def iac(cmd: int, opt: int) -> bytes:
    return bytes((IAC, cmd, opt))


@implementer(IWire, IPushProducer)
class TelnetProtocol(Fronted, Protocol):
    """One telnet connection. ``attach`` builds the line receiver above us at connect."""

    kind = "tel"
    #: Options we agree to turn on at our end when asked (DO).
    accept_us: frozenset[int] = frozenset({SGA, ECHO, BINARY})
    #: Options we let the peer turn on (WILL).
    accept_him: frozenset[int] = frozenset({NAWS, TTYPE, SGA, BINARY})

    # Slots: a connection's state is ~30 attributes, past the 30 keys up to which
    # CPython shares one key table among instance dicts, so each connection carried a
    # 1.5 KiB dict of its own (docs/performance.md). Twisted's own three (transport,
    # connected, factory: class attributes of Protocol) are slots too, set in __init__.
    __slots__ = (
        "_attach",
        "_buf",
        "_char",
        "_clock",
        "_close_call",
        "_closing",
        "_cr",
        "_discarding",
        "_echo_wanted",
        "_heard",
        "_him",
        "_max_line",
        "_max_output",
        "_negotiating",
        "_opt_cmd",
        "_out",
        "_reads_paused",
        "_sb",
        "_sb_len",
        "_sent_data",
        "_sent_text",
        "_state",
        "_ttype_asked",
        "_us",
        "_utf8",
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
        self._max_line = max_line
        self._max_output = max_output
        self._buf = bytearray()
        self._discarding = False
        self._cr = False
        self._state = _DATA
        self._opt_cmd = 0
        self._sb = bytearray()
        self._sb_len = 0
        self._us = _Options()
        self._him = _Options()
        #: Has the client ever negotiated? Until it does, nothing is queued.
        self._negotiating = False
        #: TTYPE SEND goes out once a connection: a WILL/WONT TTYPE storm gets no SB storm back.
        self._ttype_asked = False
        self._closing = False
        #: The abort of a close that takes too long; cancelled when the connection goes.
        self._close_call: IDelayedCall | None = None
        #: Has the client sent anything yet (under TLS: is the handshake done)?
        self._heard = False
        self._reads_paused = False
        #: Character mode: the client accepted WILL ECHO and WILL SGA.
        self._char = False
        #: What the terminal wants of the client's own echo (off for a hidden line).
        self._echo_wanted = True
        self._utf8: codecs.IncrementalDecoder | None = None
        self._sent_text = ""
        self._sent_data = b""
        self.width = 80
        self.height = 24
        self.peer = ""
        self.term = ""

    # -- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        assert transport is not None
        peer = transport.getPeer()
        self.peer = getattr(peer, "host", None) or "local"
        self._out = Output(transport, self._clock, self._max_output, self.abort)
        transport.registerProducer(self, True)  # type: ignore[attr-defined]
        for ours, opt in _OFFERS:
            if ours:
                self._request(self._us, opt, True, WILL, WONT)
            else:
                self._request(self._him, opt, True, DO, DONT)
        self.receiver = self._attach(self)
        self._attach = _attached  # needed once: let go of the bound method (64 bytes a session)

    def connectionLost(self, reason: Failure | None = None) -> None:
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
        self._out.resume()
        if self.transport is not None and self._reads_paused and not self._out.paused:
            self._reads_paused = False
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def stopProducing(self) -> None:
        self._out.stop()

    # -- IWire -------------------------------------------------------------

    def send(self, text: str) -> None:
        self._out.write(self._own(text))

    def send_message(self, lead: str, message: Message, after: str = "") -> bool:
        """``lead`` (this terminal's own few bytes), then the message, encoded once for all,
        then ``after`` (own text: the prompt drawn again), all in one transport write."""
        if lead in _LEADS:  # the usual leads: one block, encoded once for all recipients
            data = message.encoded_after(self.kind, lead, encode)
            if after:  # the prompt, nearly always the one sent last: its bytes are kept
                data += self._sent_data if after is self._sent_text else self._own(after)
            return self._out.post(data)
        chunks = [encode(lead), message.encoded(self.kind, encode)]
        if after:
            chunks.append(self._own(after))
        return self._out.offer(chunks)

    def _own(self, text: str) -> bytes:
        """Own text encoded; a short text sent again (the prompt) reuses its encoding."""
        if text is self._sent_text:  # the same prompt again (after messages, after a command)
            return self._sent_data
        data = encode(text)
        if len(text) <= _KEEP_SENT and not text.endswith("\n"):
            # A prompt (it never ends a line); a command's output would push it out.
            self._sent_text, self._sent_data = text, data
        return data

    def set_echo(self, on: bool) -> None:
        """Echo off = we promise to echo (and echo nothing), so the client stops echoing.

        In character mode we echo anyway (the editor draws, or hides, the line).
        """
        self._echo_wanted = on
        if not self._char:
            self._request(self._us, ECHO, not on, WILL, WONT)

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
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- input ---------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self._heard = True
        if self._char:
            self._parse_keys(data)
            return
        # Fast path: one whole plain line, which is what clients send nearly always.
        if self._state == _DATA and not self._cr and not self._buf and not self._discarding:
            if data.endswith(b"\r\n"):
                end = len(data) - 2
            elif data.endswith(b"\n"):
                end = len(data) - 1
            else:
                end = -1
            if 0 <= end <= self._max_line and _SPECIAL.search(data, 0, end) is None:
                # wire.decode, inline: this runs once per typed line
                self.receiver.line_received(data[:end].decode("utf-8", "surrogateescape"))
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

    def _parse_keys(self, data: bytes) -> None:
        """Character mode: bytes to keystroke text; CR LF, CR NUL, CR and LF are one Enter."""
        if self._state == _DATA and not self._cr and _CHAR_SPECIAL.search(data) is None:
            self._keys(data)
            return
        keys = bytearray()
        i, n = 0, len(data)
        while i < n and self._char:
            if self._state != _DATA:
                if keys:
                    self._keys(bytes(keys))
                    keys.clear()
                self._command_byte(data[i])
                i += 1
                continue
            if self._cr:
                self._cr = False
                if data[i] in (0, 10):
                    i += 1
                    continue
            m = _CHAR_SPECIAL.search(data, i)
            j = n if m is None else m.start()
            keys += data[i:j]
            if m is None:
                i = n
                break
            i = j + 1
            b = data[j]
            if b == IAC:
                self._state = _IAC
            elif b == 13:
                keys.append(13)
                self._cr = True
            elif b == 10:
                keys.append(13)
            # NUL on its own is padding: dropped.
        if keys:
            self._keys(bytes(keys))
        if i < n:  # the client left character mode mid-packet
            self.dataReceived(data[i:])

    def _keys(self, data: bytes) -> None:
        decoder = self._utf8
        if decoder is None:
            decoder = self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        text = decoder.decode(data)
        if text:
            self.receiver.text_received(text)

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
                if self._char:
                    self._keys(b"\xff")
                else:
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
            elif b == IAC:  # an escaped IAC counts toward the limit like any other byte
                self._state = _SB
                self._sb_len += 1
                if self._sb_len > _MAX_SB:
                    self._state = _DATA
                elif len(self._sb) < 64:
                    self._sb.append(IAC)
            else:  # broken subnegotiation: treat as IAC <b>
                self._state = _IAC
                self._command_byte(b)

    def _command(self, b: int) -> None:
        if self._char:
            key = _KEY_COMMANDS.get(b)
            if key is not None:
                self.receiver.text_received(key)
            elif b == AYT:
                self._out.write(b"\a")
            return
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
            size = (self.width, self.height)
            # 0 means "unknown" in NAWS: that side keeps what it was
            self.width, self.height = clamp_size(width or size[0], height or size[1])
            if (self.width, self.height) != size:
                self.receiver.resized()
        elif len(sb) > 1 and sb[0] == TTYPE and sb[1] == TTYPE_IS:
            self.term = _TERM_OK.sub("", sb[2:42].decode("ascii", "replace").lower())

    # -- negotiation (RFC 1143) ---------------------------------------------------

    def _negotiate(self, cmd: int, opt: int) -> None:
        self._negotiating = True
        if cmd == WILL:
            ttype = self._him.get(TTYPE)
            self._peer_enables(self._him, opt, opt in self.accept_him, DO, DONT)
            if (
                opt == TTYPE
                and ttype != YES
                and self._him.get(TTYPE) == YES
                and not self._ttype_asked
            ):
                self._ttype_asked = True
                self._out.write(bytes((IAC, SB, TTYPE, TTYPE_SEND, IAC, SE)))
        elif cmd == WONT:
            self._peer_disables(self._him, opt, DONT, DO)
        elif cmd == DO:
            self._peer_enables(self._us, opt, opt in self.accept_us, WILL, WONT)
        else:
            self._peer_disables(self._us, opt, WONT, WILL)
        if opt in (ECHO, SGA):
            self._settle_mode()

    def _settle_mode(self) -> None:
        """Character mode once the client took both WILL ECHO and WILL SGA (SPEC §8)."""
        echo, sga = self._us.get(ECHO), self._us.get(SGA)
        char = echo == YES and sga == YES
        if char != self._char:
            self._char = char
            if char:
                pending = decode(bytes(self._buf))
                self._buf.clear()
                self._discarding = False
                self.receiver.mode_changed(True)
                if pending:
                    self.receiver.text_received(pending)
            else:
                self.receiver.mode_changed(False)
        if not char and sga == NO and echo == YES and self._echo_wanted:
            # It lets us echo but will not suppress go-ahead: stay in line mode, its echo.
            self._request(self._us, ECHO, False, WILL, WONT)

    def _peer_enables(
        self, table: _Options, opt: int, acceptable: bool, yes: int, no: int
    ) -> None:
        state = table.get(opt)
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

    def _peer_disables(self, table: _Options, opt: int, no: int, yes: int) -> None:
        state = table.get(opt)
        if state == YES:
            table[opt] = NO
            self._out.write(iac(no, opt))
        elif state == WANTNO_OPP:
            # Our "off" was acknowledged, and an "on" waited for that answer.
            table[opt] = WANTYES
            self._out.write(iac(yes, opt))
        else:
            table[opt] = NO

    def _request(self, table: _Options, opt: int, enable: bool, yes: int, no: int) -> None:
        """Ask for a change and carry on: the answer, if any, only updates the table.

        A request made while an earlier one is unanswered is queued (RFC 1143),
        so the late answer to the first is never mistaken for the second's.
        A client that has never negotiated (nc) is not expected to answer at
        all: it gets each request at once, so the bytes SPEC §3 promises are
        sent and nothing is left waiting for an answer that will not come.
        """
        state = table.get(opt)
        if not self._negotiating and state in (WANTYES, WANTNO):
            state = YES if state == WANTYES else NO
        step = _REQUEST.get((state, enable))
        if step is not None:
            table[opt], send = step
            if send:
                self._out.write(iac(yes if enable else no, opt))

    def option_state(self, opt: int, ours: bool = True) -> int:
        """NO, YES, WANTNO or WANTYES (a queued reversal is not shown)."""
        state = (self._us if ours else self._him).get(opt)
        return _BASE.get(state, state)


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
        protocol = TelnetProtocol(self.attach, self.clock, self.max_line, self.max_output)
        protocol.factory = self
        return protocol
