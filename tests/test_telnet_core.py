"""The telnet parser and negotiator alone: bytes in, events out, no transport, no reactor."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import pytest

from shellserver.wires.telnet.codes import (
    ABORT,
    AYT,
    BINARY,
    BRK,
    DO,
    DONT,
    EC,
    ECHO,
    EL,
    EOF,
    IAC,
    IP,
    NAWS,
    NOP,
    SB,
    SE,
    SGA,
    SUSP,
    TTYPE,
    WILL,
    WONT,
    iac,
)
from shellserver.wires.telnet.core import MAX_SB, TelnetParser
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
from shellserver.wires.telnet.negotiate import NO, WANTYES, YES, Negotiator

OFFERS = (
    iac(WILL, ECHO)
    + iac(WILL, SGA)
    + iac(DO, SGA)
    + iac(WILL, BINARY)
    + iac(DO, BINARY)
    + iac(DO, NAWS)
    + iac(DO, TTYPE)
)
#: What telnet(1) answers to the offers, putting itself in character mode.
CHAR_MODE = iac(DO, ECHO) + iac(DO, SGA) + iac(WILL, SGA)


def connected(max_line: int = 4096) -> TelnetParser:
    """A parser whose offers went out, as at connect."""
    parser = TelnetParser(max_line)
    assert parser.start() == OFFERS
    return parser


def feed(parser: TelnetParser, *chunks: bytes) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += parser.receive(chunk)
    return events


def sent(events: Iterable[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Send))


def shown(events: Iterable[Event]) -> list[Event]:
    """Everything but the bytes sent back."""
    return [e for e in events if not isinstance(e, Send)]


def naws(cols: int, rows: int) -> bytes:
    return bytes([IAC, SB, NAWS, cols >> 8, cols & 255, rows >> 8, rows & 255, IAC, SE])


def ttype(name: bytes) -> bytes:
    return bytes([IAC, SB, TTYPE, 0]) + name + bytes([IAC, SE])


def char_mode() -> TelnetParser:
    parser = connected()
    events = feed(parser, CHAR_MODE)
    assert shown(events) == [ModeChanged(True)]
    assert parser.character
    return parser


# -- line ends ------------------------------------------------------------------


@pytest.mark.parametrize(
    "chunks, lines",
    [
        ([b"who\r\n"], ["who"]),
        ([b"who\n"], ["who"]),
        ([b"who\r\x00"], ["who"]),
        ([b"who\r"], ["who"]),
        ([b"a\rb\r\n"], ["a", "b"]),
        ([b"a\r", b"\nb\r\n"], ["a", "b"]),  # CR held across reads: its LF ends nothing
        ([b"a\r", b"\x00b\n"], ["a", "b"]),  # the same for its NUL
        ([b"a\r", b"b\r\n"], ["a", "b"]),  # a bare CR at the end of a read is one line
        ([b"a\r", b"\r\n"], ["a", ""]),
        ([b"one\r\ntwo\r\n"], ["one", "two"]),
        ([b"\r\n\r\n"], ["", ""]),
        ([b"\n\n"], ["", ""]),
        ([b"\r\r"], ["", ""]),
        ([b"\n\r"], ["", ""]),
        ([b"sp", b"lit\r", b"\n"], ["split"]),
        ([b"a\x00b\r\n"], ["ab"]),
        ([b"caf\xc3\xa9 \xe6\xbc\xa2\r\n"], ["café 漢"]),
        ([b"caf\xc3", b"\xa9\r\n"], ["café"]),
    ],
)
def test_each_line_end_ends_exactly_one_line(chunks: list[bytes], lines: list[str]) -> None:
    assert feed(connected(), *chunks) == lines


def test_invalid_utf8_survives_as_surrogates() -> None:
    assert feed(connected(), b"x\x9by\r\n") == ["x\udc9by"]


def test_long_line_refused_and_rest_discarded_without_buffering() -> None:
    parser = connected(max_line=10)
    assert feed(parser, b"0123456789\r\n") == ["0123456789"]  # exactly the limit is fine
    assert feed(parser, b"0123456", b"789AB") == [LineTooLong(10)]
    assert feed(parser, b"x" * 100_000) == []
    assert parser.buffered == 0
    assert feed(parser, b"tail\r\nnext\r\n") == ["next"]
    assert feed(parser, b"y" * 11 + b"\r\n") == [LineTooLong(10)]  # the fast path too


def test_control_keys_in_line_mode() -> None:
    parser = connected()
    assert feed(parser, b"\x04") == [Eof()]  # ^D on an empty line
    assert feed(parser, b"abc\x04\r\n") == ["abc"]  # ^D mid-line is not EOF
    assert feed(parser, b"half\x03") == [Interrupt()]  # ^C abandons the line
    assert feed(parser, b"\r\n") == [""]
    assert feed(parser, b"ab\x7fc\x08d\r\n") == ["ad"]  # DEL and BS erase
    assert feed(parser, "é\x7f!\r\n".encode()) == ["!"]  # a whole UTF-8 character erased


# -- IAC --------------------------------------------------------------------------


def test_doubled_iac_is_a_data_byte() -> None:
    assert feed(connected(), b"a\xff\xffb\r\n") == ["a\udcffb"]


@pytest.mark.parametrize("byte", [0, 1, 7, 42, 200, 235, 239, NOP, 242, 245, 249])
def test_iac_and_an_unknown_byte_is_ignored_never_raises(byte: int) -> None:
    parser = connected()
    assert feed(parser, b"x" + bytes([IAC, byte]) + b"y\r\n") == ["xy"]


def test_broken_sequences_do_not_raise() -> None:
    parser = connected()
    events = feed(parser, bytes([IAC, 0x01]) + b"x" + bytes([IAC, SB, 1, 2, IAC, 7]) + b"y\r\n")
    assert events == ["xy"]


def test_telnet_commands_in_line_mode() -> None:
    parser = connected()
    assert feed(parser, bytes([IAC, IP])) == [Interrupt()]
    assert feed(parser, bytes([IAC, ABORT])) == [Interrupt()]
    assert feed(parser, bytes([IAC, BRK])) == [Interrupt()]
    assert feed(parser, bytes([IAC, EOF])) == [Eof()]
    assert feed(parser, bytes([IAC, SUSP])) == []  # no job control: nothing to suspend
    assert feed(parser, b"ab" + bytes([IAC, EOF]) + b"\r\n") == ["ab"]  # mid-line: not EOF
    assert feed(parser, b"half" + bytes([IAC, IP]) + b"new\r\n") == [Interrupt(), "new"]
    assert feed(parser, b"ab" + bytes([IAC, EC]) + b"c\r\n") == ["ac"]
    assert feed(parser, b"ab" + bytes([IAC, EL]) + b"c\r\n") == ["c"]
    assert feed(parser, bytes([IAC, AYT])) == [Send(b"\r\n[Yes]\r\n")]


def test_telnet_commands_in_character_mode_are_keys() -> None:
    parser = char_mode()
    data = b"".join(bytes([IAC, c]) for c in (IP, ABORT, BRK, EOF, SUSP, EC, EL, AYT, NOP))
    assert feed(parser, data) == [
        Keys("\x03"),
        Keys("\x03"),
        Keys("\x03"),
        Keys("\x04"),
        Keys("\x7f"),
        Keys("\x15"),
        Send(b"\a"),
    ]


def test_runaway_subnegotiation_is_abandoned_after_1_kib() -> None:
    assert MAX_SB == 1024
    parser = connected()
    # NAWS and 1,023 more bytes: still a subnegotiation; the next byte is one too many and
    # is dropped with it, the rest is data again.
    events = feed(parser, bytes([IAC, SB, NAWS]) + b"\x00" * 1023 + b"AB\r\n")
    assert events == ["B"]
    # Ended in time, it is a subnegotiation (a malformed one: ignored).
    events = feed(parser, bytes([IAC, SB, NAWS]) + b"\x00" * 1023 + bytes([IAC, SE]) + b"C\r\n")
    assert events == ["C"]
    # Escaped IACs count toward the limit too: the 1,024th is one too many, the rest data.
    events = feed(parser, bytes([IAC, SB, NAWS]) + bytes([IAC, IAC]) * 2000 + b"ok\r\n")
    assert events == ["\udcff" * (2000 - 1024) + "ok"]


def test_a_subnegotiation_split_anywhere_keeps_its_meaning() -> None:
    parser = connected()
    assert feed(parser, *(bytes([b]) for b in naws(120, 40))) == [WindowSize(120, 40)]


# -- window size and terminal type ---------------------------------------------------


def test_window_size_is_clamped_and_zero_keeps_that_side() -> None:
    parser = connected()
    assert feed(parser, naws(3, 768)) == [WindowSize(20, 200)]
    assert feed(parser, naws(2304, 1)) == [WindowSize(500, 5)]
    assert feed(parser, naws(0, 30)) == [WindowSize(500, 30)]
    assert feed(parser, naws(100, 0)) == [WindowSize(100, 30)]


def test_window_sizes_are_reported_on_change_and_coalesced() -> None:
    parser = connected()
    assert feed(parser, naws(80, 24)) == []  # the size already assumed
    assert feed(parser, naws(100, 30) * 500) == [WindowSize(100, 30)]
    # Several in one read: one event, the last size.
    assert feed(parser, naws(90, 30) + naws(91, 31) + naws(92, 32)) == [WindowSize(92, 32)]
    # Back where it was within one read: nothing to report.
    assert feed(parser, naws(60, 20) + naws(92, 32)) == []
    # Not coalesced across other events: each is reported where it happened.
    events = feed(parser, naws(70, 20) + b"a\r\n" + naws(71, 21))
    assert events == [WindowSize(70, 20), "a", WindowSize(71, 21)]


def test_terminal_type_is_asked_for_once_and_kept_harmless() -> None:
    parser = connected()
    assert feed(parser, iac(WILL, TTYPE)) == [Send(bytes([IAC, SB, TTYPE, 1, IAC, SE]))]
    events = feed(parser, ttype(b"XTERM-256COLOR\x1b[x"))
    assert events == [TerminalType("xterm-256colorx")]
    assert feed(parser, ttype(b"x" * 100)) == [TerminalType("x" * 40)]


def test_terminal_types_are_reported_on_change_and_coalesced() -> None:
    parser = connected()
    assert feed(parser, ttype(b"VT100") * 100) == [TerminalType("vt100")]
    assert feed(parser, ttype(b"vt100")) == []
    assert feed(parser, ttype(b"ansi") + ttype(b"xterm")) == [TerminalType("xterm")]


# -- negotiation -----------------------------------------------------------------------


def test_start_offers_everything_at_once_and_waits_for_nothing() -> None:
    parser = TelnetParser()
    assert parser.start() == OFFERS
    assert feed(parser, b"ls\r\n") == ["ls"]  # a client that never answers (nc) just works


def test_a_client_that_accepts_echo_and_sga_is_in_character_mode() -> None:
    parser = char_mode()
    assert feed(parser, b"ab\r\x00c\r\nd\n") == [Keys("ab\rc\rd\r")]
    assert parser.set_echo(True) == b""  # the editor echoes: nothing changes on the wire
    assert parser.set_echo(False) == b""


def test_text_typed_before_character_mode_is_kept_as_keys() -> None:
    parser = connected()
    events = feed(parser, b"ab", CHAR_MODE + b"c")
    assert events == [ModeChanged(True), Keys("ab"), Keys("c")]


def test_leaving_character_mode_mid_read_parses_the_rest_as_lines() -> None:
    parser = char_mode()
    events = feed(parser, b"x" + iac(DONT, ECHO) + b"ls\r\n")
    assert events == [Keys("x"), Send(iac(WONT, ECHO)), ModeChanged(False), "ls"]


def test_character_mode_keeps_utf8_split_across_reads() -> None:
    parser = char_mode()
    data = "☃é".encode()
    events = feed(parser, data[:2], data[2:] + bytes([IAC, IAC]), b"q")
    assert events == [Keys("☃é"), Keys("\udcff"), Keys("q")]
    assert feed(parser, b"\xe2", b"\x98", b"\x83") == [Keys("☃")]


def test_single_keys_are_shared_events() -> None:
    parser = char_mode()
    first, second = parser.receive(b"a"), parser.receive(b"a")
    assert first == (Keys("a"),) and first is second


def test_refusing_sga_keeps_line_mode_and_gives_the_client_its_echo_back() -> None:
    parser = connected()
    events = feed(parser, iac(DO, ECHO) + iac(DONT, SGA))
    assert ModeChanged(True) not in events
    assert sent(events).endswith(iac(WONT, ECHO))
    assert feed(parser, b"ls\r\n") == ["ls"]


def test_negotiation_never_shows_up_as_text() -> None:
    parser = connected()
    data = b"he" + iac(WILL, NAWS) + naws(120, 40) + iac(DO, 99) + b"llo"
    events = feed(parser, data + bytes([IAC, NOP]) + b"\r\n")
    # We asked for NAWS, so WILL NAWS is the answer and needs no reply; DO 99 is refused.
    assert events == [WindowSize(120, 40), Send(iac(WONT, 99)), "hello"]


def test_any_option_number_is_refused_and_leaves_the_others_alone() -> None:
    """Option states are packed 3 bits per option: the highest numbers work like the rest."""
    parser = connected()
    events = feed(parser, iac(WILL, 255) + iac(DO, 254) + iac(DO, ECHO) + iac(DO, SGA))
    assert sent(events) == iac(DONT, 255) + iac(WONT, 254)
    state = parser.negotiator.state
    assert state(255, ours=False) == NO and state(254) == NO
    assert state(ECHO) == YES and state(SGA) == YES
    assert state(NAWS, ours=False) == WANTYES  # still asked, unanswered


def test_negotiation_storms_get_bounded_answers() -> None:
    parser = connected()
    events = feed(parser, (iac(WILL, TTYPE) + iac(WONT, TTYPE)) * 1000)
    out = sent(events)
    assert out.count(bytes([IAC, SB, TTYPE, 1, IAC, SE])) == 1  # asked once a connection
    assert len(out) <= 6 * 2000 + 6  # a DO or DONT answers each change, nothing more
    assert feed(parser, naws(80, 24) * 5000) == []  # NAWS is never answered


def test_answers_only_on_change() -> None:
    parser = connected()
    assert feed(parser, iac(DO, ECHO)) == []  # the answer to our WILL: nothing to say
    assert feed(parser, iac(DO, ECHO)) == []  # said again: still nothing
    assert feed(parser, iac(WILL, NAWS) * 3) == []
    assert feed(parser, iac(DO, 99)) == [Send(iac(WONT, 99))]  # refused each time it is asked
    assert feed(parser, iac(DO, 99)) == [Send(iac(WONT, 99))]
    assert feed(parser, iac(WONT, 99) + iac(DONT, 99)) == []  # already off
    assert feed(parser, iac(DONT, ECHO)) == [Send(iac(WONT, ECHO))]  # a change: acknowledged
    assert feed(parser, iac(DONT, ECHO)) == []


def test_two_negotiators_back_to_back_go_quiet() -> None:
    """Each side answering only changes: two of ours talking to each other cannot loop."""
    rng = random.Random(7)
    for _ in range(50):
        a, b = TelnetParser(), TelnetParser()
        to_b, to_a = a.start(), b.start()
        for _ in range(rng.randrange(5)):  # and some changes of mind on either side
            to_b += a.set_echo(rng.random() < 0.5)
            to_a += b.set_echo(rng.random() < 0.5)
        for _ in range(20):
            if not to_a and not to_b:
                break
            to_a, to_b = sent(b.receive(to_b)), sent(a.receive(to_a))
        assert not to_a and not to_b


def test_echo_off_and_on_never_waits() -> None:
    parser = connected()
    assert parser.set_echo(False) == b""  # WILL ECHO went out at connect
    # nc never answers; turning echo back on still sends WONT at once.
    assert parser.set_echo(True) == iac(WONT, ECHO)
    assert parser.set_echo(False) == iac(WILL, ECHO)
    parser.set_echo(True)
    assert parser.set_echo(False) == iac(WILL, ECHO)
    assert feed(parser, iac(DO, ECHO)) == []  # telnet(1) agrees: no reply expected
    assert parser.negotiator.state(ECHO) == YES
    assert parser.set_echo(True) == iac(WONT, ECHO)
    assert feed(parser, iac(DONT, ECHO)) == []
    assert parser.negotiator.state(ECHO) == NO


def line_mode_client() -> TelnetParser:
    """A telnet client that refused our echo at connect (a line-mode client)."""
    parser = connected()
    feed(parser, iac(DONT, ECHO) + iac(DONT, SGA))
    assert parser.negotiator.state(ECHO) == NO
    return parser


def test_late_answer_is_not_taken_for_the_answer_to_a_newer_request() -> None:
    """Two hidden prompts in a row: WONT then WILL before the client answers the WONT."""
    parser = line_mode_client()
    assert parser.set_echo(False) == iac(WILL, ECHO)
    assert feed(parser, iac(DO, ECHO)) == []
    assert parser.set_echo(True) == iac(WONT, ECHO)
    assert parser.set_echo(False) == b""  # the WILL waits for the DONT
    assert feed(parser, iac(DONT, ECHO)) == [Send(iac(WILL, ECHO))]
    assert feed(parser, iac(DO, ECHO)) == []  # no WONT in reply
    assert parser.negotiator.state(ECHO) == YES


def test_request_reversed_before_its_answer_is_reversed_after_it() -> None:
    parser = line_mode_client()
    assert parser.set_echo(False) == iac(WILL, ECHO)
    assert parser.set_echo(True) == b""  # the WONT waits for the answer
    assert parser.negotiator.state(ECHO) == WANTYES
    assert feed(parser, iac(DO, ECHO)) == [Send(iac(WONT, ECHO))]  # the late answer to WILL
    assert feed(parser, iac(DONT, ECHO)) == []
    assert parser.negotiator.state(ECHO) == NO


def test_the_negotiator_alone() -> None:
    """The option table needs no parser: commands in, answers out."""
    neg = Negotiator()
    assert neg.request(ECHO, True, ours=True) == iac(WILL, ECHO)
    assert neg.received(DO, ECHO) == b""
    assert neg.received(DO, BINARY) == iac(WILL, BINARY)
    assert neg.received(WILL, 99) == iac(DONT, 99)
    assert neg.received(WILL, TTYPE) == iac(DO, TTYPE) + bytes([IAC, SB, TTYPE, 1, IAC, SE])
    assert neg.received(WONT, TTYPE) == iac(DONT, TTYPE)
    assert neg.received(WILL, TTYPE) == iac(DO, TTYPE)  # TTYPE SEND only once
    assert neg.state(ECHO) == YES and neg.state(TTYPE, ours=False) == YES


# -- any split, same events ---------------------------------------------------------------


def normal(events: Sequence[Event]) -> list[Event]:
    """Events as they would be with the whole input in one read: keystroke text joined,
    only the last of consecutive window sizes or terminal types."""
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, Keys) and isinstance(last, Keys):
            out[-1] = Keys(last.text + event.text)
        elif isinstance(event, WindowSize | TerminalType) and type(last) is type(event):
            out[-1] = event
        else:
            out.append(event)
    return out


def splits(data: bytes, seed: int) -> list[list[bytes]]:
    """The same bytes as one read, one byte per read, and in random chunks."""
    rng = random.Random(seed)
    ways = [[data], [bytes([b]) for b in data]]
    for _ in range(6):
        chunks, i = [], 0
        while i < len(data):
            step = rng.choice([1, 2, 3, 5, 8, 13, 64, 1000])
            chunks.append(data[i : i + step])
            i += step
        ways.append(chunks)
    return ways


CORPUS = [
    b"who\r\nwho\nwho\r\x00who\rwho\r\r\n\n\r",
    b"a\x00b\x03c\x04\r\n\x04ab\x7fc\x08d\r\ncaf\xc3\xa9 \xe6\xbc\xa2\r\nx\x9by\n",
    b"a\xff\xffb\r\n" + bytes([IAC, 1, IAC, 200, IAC, NOP, IAC, IP, IAC, EOF, IAC, SUSP]),
    bytes([IAC, ABORT, IAC, BRK, IAC, AYT, IAC, EC, IAC, EL]) + b"ab" + bytes([IAC, EC]) + b"\n",
    naws(100, 30) + naws(0, 40) + b"x\r\n" + naws(3, 9000) + ttype(b"VT100") + ttype(b"ANSI"),
    iac(WILL, TTYPE) + ttype(b"xterm") + iac(WONT, TTYPE) + iac(WILL, TTYPE) + iac(DO, 99),
    bytes([IAC, SB, NAWS]) + b"\x00" * 1023 + b"AB\r\n" + bytes([IAC, SB, 1, IAC, IAC, IAC, SE]),
    bytes([IAC, SB, NAWS, 1, 2, IAC, 7]) + b"y\r\n" + b"z" * 5000 + b"\r\nok\r\n",
    b"typed" + CHAR_MODE + "é☃".encode() + b"\r\n\r\x00q\x03" + bytes([IAC, IP, IAC, IAC]),
    CHAR_MODE + b"x" + iac(DONT, ECHO) + b"ls\r\n" + iac(DO, ECHO) + b"k\r" + iac(DONT, SGA),
    (CHAR_MODE + b"ab" + iac(DONT, ECHO) + iac(WONT, SGA) + b"cd\r\n") * 5,
]


@pytest.mark.parametrize("data", CORPUS, ids=range(len(CORPUS)))
def test_the_same_events_at_any_split(data: bytes) -> None:
    expected = None
    for chunks in splits(data, seed=len(data)):
        parser = connected(max_line=4096)
        got = normal(feed(parser, *chunks))
        if expected is None:
            expected = got
        assert got == expected, chunks
    assert expected  # every input means something


@pytest.mark.parametrize("seed", range(8))
def test_garbage_never_raises_and_splits_do_not_matter(seed: int) -> None:
    rng = random.Random(seed)
    noise = bytes(
        rng.choice([IAC, IAC, SB, SE, WILL, DO, DONT, WONT, 0, 1, 3, 13, 10, *range(256)])
        for _ in range(1 << 12)
    )
    expected = None
    for chunks in splits(noise, seed):
        got = normal(feed(connected(max_line=64), *chunks))
        if expected is None:
            expected = got
        assert got == expected
