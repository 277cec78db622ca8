"""The telnet parser: the client's bytes in, events out, no transport (the h11 style).

:class:`TelnetParser` reads IAC sequences, line ends and subnegotiations, keeps
the line being typed in line mode, and hands back a sequence of
:mod:`.events` for whoever owns the connection to act on, in order. Answers
to the client come back as :class:`~.events.Send` events; the parser never
writes, never schedules, and knows no terminal. That is what lets every rule
below be tested by feeding bytes, at every split of the input.

It deliberately does not build on ``conch.telnet``: that holds a bare CR until
the next byte, raises ``ValueError("Stumped")`` on a command it does not know
(twisted #5381), and costs ~10x more per line than the fast path here. Rules
it keeps instead:

- CR LF, CR NUL, a bare CR and a bare LF each end exactly one line; a CR at
  the end of a read is remembered, so the LF or NUL that follows in the next
  read does not end a second, empty line.
- ``IAC IAC`` is a 0xFF data byte; ``IAC`` and any byte it does not know is
  ignored, never an error; IP/ABORT/BRK interrupt, EOF is ^D, EC and EL edit.
- A subnegotiation that never ends is given up after 1 KiB, keeping the
  connection; only the first 64 bytes of one are kept.
- A line longer than ``max_line`` is discarded up to its end, unbuffered.
- Character mode (the client let us echo and suppress go-ahead): bytes are
  decoded and handed up as keystroke text for the line editor.

A whole plain line in one read, which is what clients send nearly always in
line mode, takes a fast path: one regex scan and one decode.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence

from shellserver.terminal.discipline import clamp_size
from shellserver.wires.telnet.codes import (
    ABORT,
    AYT,
    BRK,
    DONT,
    EC,
    ECHO,
    EL,
    EOF,
    IAC,
    IP,
    NAWS,
    SB,
    SE,
    SGA,
    TTYPE,
    TTYPE_IS,
    WILL,
)
from shellserver.wires.telnet.encode import decode
from shellserver.wires.telnet.events import (
    ONE_KEY,
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
from shellserver.wires.telnet.negotiate import NO, YES, Negotiator

_DATA, _IAC, _OPT, _SB, _SB_IAC = range(5)
#: Bytes that need a look in line mode: line ends, NUL, ^C, ^D, BS, DEL, IAC.
_SPECIAL = re.compile(rb"[\x00\x03\x04\x08\r\n\x7f\xff]")
#: Bytes that need a look in character mode: everything else is keystroke text.
_CHAR_SPECIAL = re.compile(rb"[\x00\r\n\xff]")
#: A subnegotiation longer than this never ends: it is abandoned.
MAX_SB = 1024
#: What is kept of a subnegotiation: NAWS needs 5 bytes, TTYPE 42.
_SB_KEEP = 64
_TERM_OK = re.compile(r"[^a-z0-9._+-]")
#: Telnet commands that are keys in character mode: IP/ABORT/BRK ^C, EOF ^D, EC erase, EL ^U.
_KEY_COMMANDS = {IP: "\x03", ABORT: "\x03", BRK: "\x03", EOF: "\x04", EC: "\x7f", EL: "\x15"}
#: What "are you there" gets: a visible answer in line mode, a bell while the editor draws.
_AYT_LINE, _AYT_CHAR = b"\r\n[Yes]\r\n", b"\a"
#: Where events go between two reads. Nothing is ever appended to it: events are made only
#: inside ``receive``, which points ``_events`` at a fresh list first.
_IDLE: list[Event] = []
_NO_SIZE = (0, 0)


class TelnetParser:
    """One connection's input state: the option table, the line being typed, the mode.

    Slotted: every connection keeps one for life, and a dict per instance
    would cost more than everything in it.
    """

    __slots__ = (
        "_buf",
        "_char",
        "_cols",
        "_cr",
        "_discarding",
        "_echo_wanted",
        "_events",
        "_max_line",
        "_opt_cmd",
        "_rows",
        "_sb",
        "_sb_len",
        "_state",
        "_term",
        "_told",
        "_utf8",
        "_utf8_open",
        "negotiator",
    )

    def __init__(self, max_line: int = 4096, negotiator: Negotiator | None = None) -> None:
        self._max_line = max_line
        #: The option table (RFC 1143); its own class so it can be read and tested alone.
        self.negotiator = Negotiator() if negotiator is None else negotiator
        self._buf = bytearray()
        self._discarding = False
        self._cr = False
        self._state = _DATA
        self._opt_cmd = 0
        #: The subnegotiation being read; made at its start and dropped at its end, so a
        #: connection between two of them (nearly always) keeps no buffer for it.
        self._sb: bytearray | None = None
        self._sb_len = 0
        #: Character mode: the client accepted WILL ECHO and WILL SGA.
        self._char = False
        #: What the terminal wants of the client's own echo (off for a hidden line).
        self._echo_wanted = True
        self._utf8: codecs.IncrementalDecoder | None = None
        #: Does the decoder hold the first bytes of a character?
        self._utf8_open = False
        self._events: list[Event] = _IDLE
        #: The window size and terminal type as reported so far (80x24 until told).
        self._cols, self._rows = 80, 24
        #: The size before the WindowSize event at the end of ``_events`` (see _resize);
        #: scratch for one read, dropped after it (one tuple less kept per connection).
        self._told = _NO_SIZE
        self._term = ""

    # -- the interface ---------------------------------------------------------

    def start(self) -> bytes:
        """The bytes to send when the connection opens: our offers, none awaited."""
        return self.negotiator.offers()

    @property
    def character(self) -> bool:
        """Is the client in character mode? The wire's user decides how to draw on it."""
        return self._char

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished line held: tests prove with it that a runaway line is
        discarded, not kept."""
        return len(self._buf)

    def set_echo(self, on: bool) -> bytes:
        """The bytes that make the client echo (``on``) or stop (a hidden line).

        Echo off is our WILL ECHO: we promise to echo, and echo nothing. In
        character mode we echo anyway (the editor draws, or hides, the line),
        so nothing is sent then.
        """
        self._echo_wanted = on
        if self._char:
            return b""
        return self.negotiator.request(ECHO, not on, True)

    def receive(self, data: bytes) -> Sequence[Event]:
        """Everything ``data`` means, in order; state carries over to the next read.

        The result is the same whichever way the client's bytes were split
        into reads, apart from keystroke text, window sizes and terminal types
        each coming as one event per read. Read the result before the next
        call and change none of it: a single key's is shared (see ONE_KEY).
        """
        if self._char:
            if self._state == _DATA and not self._cr:
                if not self._utf8_open:  # one key, as typed: shared, nothing made
                    one = ONE_KEY.get(data)
                    if one is not None:
                        return one
                if _CHAR_SPECIAL.search(data) is None:
                    text = self._decode_keys(data)
                    return (Keys(text),) if text else ()
        elif self._state == _DATA and not self._cr and not self._buf and not self._discarding:
            # Fast path: one whole plain line, which is what clients send nearly always.
            if data.endswith(b"\r\n"):
                end = len(data) - 2
            elif data.endswith(b"\n"):
                end = len(data) - 1
            else:
                end = -1
            if 0 <= end <= self._max_line and _SPECIAL.search(data, 0, end) is None:
                # encode.decode, inline: this runs once per typed line
                return (data[:end].decode("utf-8", "surrogateescape"),)
        events: list[Event] = []
        self._events = events
        i, n = 0, len(data)
        while i < n:  # each pass reads up to the end or up to a change of mode
            i = self._keys_from(data, i) if self._char else self._lines_from(data, i)
        self._events = _IDLE
        self._told = _NO_SIZE
        return events

    # -- line mode ---------------------------------------------------------------

    def _lines_from(self, data: bytes, i: int) -> int:
        """Read line-mode input from ``i``; return where it stopped (the end, or just
        after the command that put the client in character mode)."""
        n = len(data)
        while i < n:
            if self._state != _DATA:
                self._command_byte(data[i])
                i += 1
                if self._char:
                    return i
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
                return n
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
        return n

    def _append(self, chunk: bytes) -> None:
        if self._discarding:
            return
        if len(self._buf) + len(chunk) > self._max_line:
            self._buf.clear()
            self._discarding = True
            self._events.append(LineTooLong(self._max_line))
            return
        self._buf += chunk

    def _end_line(self) -> None:
        if self._discarding:
            self._discarding = False
            return
        line = decode(bytes(self._buf))
        self._buf.clear()
        self._events.append(line)

    def _erase_char(self) -> None:
        buf = self._buf
        while buf:
            last = buf.pop()
            if last & 0xC0 != 0x80:  # stop after removing a whole UTF-8 character
                break

    def _interrupt(self) -> None:
        self._buf.clear()
        self._discarding = False
        self._events.append(Interrupt())

    def _eof(self) -> None:
        # ^D ends input only on an empty line, as a tty in canonical mode does.
        if not self._buf and not self._discarding:
            self._events.append(Eof())

    # -- character mode ----------------------------------------------------------

    def _keys_from(self, data: bytes, i: int) -> int:
        """Read keystrokes from ``i``; CR LF, CR NUL, CR and LF are one Enter. Return
        where it stopped (the end, or just after the command that left character mode)."""
        keys = bytearray()
        n = len(data)
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
        return i

    def _decode_keys(self, data: bytes) -> str:
        """Keystroke bytes to text; a UTF-8 character split across reads waits to be whole.

        ASCII with no character left open is decoded directly: the incremental
        decoder costs ~3x as much, on every key.
        """
        if not self._utf8_open and data.isascii():
            return data.decode("ascii")
        decoder = self._utf8
        if decoder is None:  # made on first use: most clients never need one
            decoder = self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        text = decoder.decode(data)
        self._utf8_open = bool(decoder.getstate()[0])
        return text

    def _keys(self, data: bytes) -> None:
        text = self._decode_keys(data)
        if text:
            self._events.append(Keys(text))

    # -- telnet commands -----------------------------------------------------------

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
                self._sb = bytearray()
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
                self._sb_byte(b)
        elif state == _SB_IAC:
            if b == SE:
                self._state = _DATA
                sb, self._sb = self._sb, None
                self._subnegotiation(bytes(sb or b""))
            elif b == IAC:  # an escaped IAC counts toward the limit like any other byte
                self._state = _SB
                self._sb_byte(IAC)
            else:  # broken subnegotiation: treat as IAC <b>
                self._state = _IAC
                self._sb = None
                self._command_byte(b)

    def _sb_byte(self, b: int) -> None:
        self._sb_len += 1
        sb = self._sb
        if self._sb_len > MAX_SB:  # never ends: give up on it, keep the connection
            self._state = _DATA
            self._sb = None
        elif sb is not None and len(sb) < _SB_KEEP:
            sb.append(b)

    def _command(self, b: int) -> None:
        events = self._events
        if self._char:
            key = _KEY_COMMANDS.get(b)
            if key is not None:
                events.append(Keys(key))
            elif b == AYT:
                events.append(Send(_AYT_CHAR))
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
            events.append(Send(_AYT_LINE))
        # NOP, DM, GA, AO, SUSP and unknown commands are ignored: never "Stumped".

    def _subnegotiation(self, sb: bytes) -> None:
        if len(sb) == 5 and sb[0] == NAWS:
            self._resize(sb[1] << 8 | sb[2], sb[3] << 8 | sb[4])
        elif len(sb) > 1 and sb[0] == TTYPE and sb[1] == TTYPE_IS:
            self._terminal_type(_TERM_OK.sub("", sb[2:42].decode("ascii", "replace").lower()))

    def _resize(self, cols: int, rows: int) -> None:
        """Report a new size; a report right after another replaces it (coalescing)."""
        old = (self._cols, self._rows)
        # 0 means "unknown" in NAWS: that side keeps what it was
        new = clamp_size(cols or old[0], rows or old[1])
        if new == old:
            return
        self._cols, self._rows = new
        events = self._events
        if events and type(events[-1]) is WindowSize:
            events.pop()
            old = self._told  # what the reader knew before the one replaced
        else:
            self._told = old
        if new != old:
            events.append(WindowSize(*new))

    def _terminal_type(self, name: str) -> None:
        """Report a new terminal type; a report right after another replaces it."""
        if name == self._term:
            return
        self._term = name
        events = self._events
        if events and type(events[-1]) is TerminalType:
            events[-1] = TerminalType(name)
        else:
            events.append(TerminalType(name))

    # -- negotiation ---------------------------------------------------------------

    def _negotiate(self, cmd: int, opt: int) -> None:
        answer = self.negotiator.received(cmd, opt)
        if answer:
            self._events.append(Send(answer))
        if opt in (ECHO, SGA):
            self._settle_mode()

    def _settle_mode(self) -> None:
        """Character mode once the client took both WILL ECHO and WILL SGA: telnet(1)
        then sends each key as typed and lets us draw, which the line editor needs."""
        events = self._events
        echo, sga = self.negotiator.state(ECHO), self.negotiator.state(SGA)
        char = echo == YES and sga == YES
        if char != self._char:
            self._char = char
            events.append(ModeChanged(char))
            if char:
                pending = decode(bytes(self._buf))
                self._buf.clear()
                self._discarding = False
                if pending:
                    events.append(Keys(pending))
        if not char and sga == NO and echo == YES and self._echo_wanted:
            # It lets us echo but will not suppress go-ahead: stay in line mode, its echo.
            answer = self.negotiator.request(ECHO, False, True)
            if answer:
                events.append(Send(answer))
