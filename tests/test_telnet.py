"""The telnet byte layer: line ends, IAC handling, negotiation, limits — no sockets."""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from shellserver.terminal.discipline import ILineReceiver, IWire, Redraws, Terminal
from shellserver.text.message import Message
from shellserver.wires.telnet import protocol as telnet
from shellserver.wires.telnet.encode import encode
from shellserver.wires.telnet.protocol import (
    BINARY,
    DO,
    DONT,
    ECHO,
    IAC,
    NAWS,
    NO,
    SB,
    SE,
    SGA,
    TTYPE,
    WANTYES,
    WILL,
    WONT,
    YES,
    TelnetProtocol,
    iac,
)


@implementer(ILineReceiver)
class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []

    def line_received(self, line: str) -> None:
        self.events.append(line)

    def eof_received(self) -> None:
        self.events.append("<EOF>")

    def interrupted(self) -> None:
        self.events.append("<INT>")

    def line_too_long(self, limit: int) -> None:
        self.events.append(f"<LONG {limit}>")

    def connection_lost(self) -> None:
        self.events.append("<LOST>")

    def text_received(self, text: str) -> None:
        self.events.append(("keys", text))

    def mode_changed(self, character: bool) -> None:
        self.events.append(f"<CHAR {character}>")

    def resized(self) -> None:
        self.events.append("<SIZE>")


def connect(
    max_line: int = 4096, max_output: int = 1000
) -> tuple[TelnetProtocol, StringTransport, Recorder, Clock]:
    rec = Recorder()
    clock = Clock()

    def attach(wire: IWire) -> ILineReceiver:
        return rec

    proto = TelnetProtocol(attach, clock, max_line, max_output)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 1234))
    proto.makeConnection(transport)
    return proto, transport, rec, clock


OFFERS = (
    iac(WILL, ECHO)
    + iac(WILL, SGA)
    + iac(DO, SGA)
    + iac(WILL, BINARY)
    + iac(DO, BINARY)
    + iac(DO, NAWS)
    + iac(DO, TTYPE)
)


def test_connect_offers_character_mode_binary_naws_ttype_without_waiting() -> None:
    _, transport, _, _ = connect()
    assert transport.value() == OFFERS


def char_mode() -> tuple[TelnetProtocol, StringTransport, Recorder, Clock]:
    proto, transport, rec, clock = connect()
    proto.dataReceived(iac(DO, ECHO) + iac(DO, SGA) + iac(WILL, SGA))
    assert rec.events == ["<CHAR True>"]
    rec.events.clear()
    transport.clear()
    return proto, transport, rec, clock


def test_a_client_that_accepts_echo_and_sga_is_in_character_mode() -> None:
    proto, transport, rec, _ = char_mode()
    proto.dataReceived(b"ab\r\x00c\r\nd\n")
    assert rec.events == [("keys", "ab\rc\rd\r")]
    proto.set_echo(True)  # the editor echoes: nothing changes on the wire
    proto.set_echo(False)
    assert transport.value() == b""


def test_character_mode_keeps_utf8_split_across_packets_and_maps_telnet_commands() -> None:
    proto, _, rec, _ = char_mode()
    data = "☃é".encode()
    proto.dataReceived(data[:2])
    proto.dataReceived(data[2:] + bytes([IAC, IAC]) + bytes([IAC, 244]) + bytes([IAC, 236]))
    assert rec.events == [("keys", "☃é"), ("keys", "\udcff"), ("keys", "\x03"), ("keys", "\x04")]


def test_refusing_sga_keeps_line_mode_and_gives_the_client_its_echo_back() -> None:
    proto, transport, rec, _ = connect()
    transport.clear()
    proto.dataReceived(iac(DO, ECHO) + iac(DONT, SGA))
    assert "<CHAR True>" not in rec.events
    assert transport.value().endswith(iac(WONT, ECHO))
    proto.dataReceived(b"ls\r\n")
    assert rec.events[-1] == "ls"


def test_terminal_type_is_asked_for_and_kept_bounded() -> None:
    proto, transport, _, _ = connect()
    transport.clear()
    proto.dataReceived(iac(WILL, TTYPE))
    assert transport.value() == bytes([IAC, SB, TTYPE, 1, IAC, SE])
    proto.dataReceived(bytes([IAC, SB, TTYPE, 0]) + b"XTERM-256COLOR\x1b[x" + bytes([IAC, SE]))
    assert proto.term == "xterm-256colorx"


def test_negotiation_storms_get_bounded_answers() -> None:
    proto, transport, rec, _ = connect()
    transport.clear()
    proto.dataReceived((iac(WILL, TTYPE) + iac(WONT, TTYPE)) * 1000)
    out = transport.value()
    assert out.count(bytes([IAC, SB, TTYPE, 1, IAC, SE])) == 1  # asked once a connection
    assert len(out) <= 6 * 2000 + 6  # a DO or DONT answers each change, nothing more
    transport.clear()
    same = bytes([IAC, SB, NAWS, 0, 80, 0, 24, IAC, SE])
    proto.dataReceived(same * 5000)  # NAWS is never answered; the same size is no resize
    assert transport.value() == b""
    assert rec.events.count("<SIZE>") <= 1


def test_window_size_is_clamped_and_reported() -> None:
    proto, _, rec, _ = connect()
    proto.dataReceived(bytes([IAC, SB, NAWS, 0, 3, 3, 0, IAC, SE]))
    assert (proto.width, proto.height) == (20, 200)
    proto.dataReceived(bytes([IAC, SB, NAWS, 9, 0, 0, 1, IAC, SE]))
    assert (proto.width, proto.height) == (500, 5)
    assert rec.events == ["<SIZE>", "<SIZE>"]
    assert proto.peer == "192.0.2.7"


@pytest.mark.parametrize(
    "chunks, lines",
    [
        ([b"who\r\n"], ["who"]),
        ([b"who\n"], ["who"]),
        ([b"who\r\x00"], ["who"]),
        ([b"who\r"], ["who"]),
        ([b"a\rb\r\n"], ["a", "b"]),
        ([b"a\r", b"\nb\r\n"], ["a", "b"]),
        ([b"a\r", b"\x00b\n"], ["a", "b"]),
        ([b"one\r\ntwo\r\n"], ["one", "two"]),
        ([b"\r\n\r\n"], ["", ""]),
        ([b"\n\n"], ["", ""]),
        ([b"sp", b"lit\r", b"\n"], ["split"]),
        ([b"a\x00b\r\n"], ["ab"]),
        ([b"caf\xc3\xa9 \xe6\xbc\xa2\r\n"], ["café 漢"]),
    ],
)
def test_each_line_end_ends_exactly_one_line(chunks: list[bytes], lines: list[str]) -> None:
    proto, _, rec, _ = connect()
    for chunk in chunks:
        proto.dataReceived(chunk)
    assert rec.events == lines


def test_invalid_utf8_survives_as_surrogates() -> None:
    proto, _, rec, _ = connect()
    proto.dataReceived(b"x\x9by\r\n")
    assert rec.events == ["x\udc9by"]


def test_negotiation_never_shows_up_as_text() -> None:
    proto, transport, rec, _ = connect()
    transport.clear()
    data = (
        b"he"
        + iac(WILL, NAWS)
        + bytes([IAC, SB, NAWS, 0, 120, 0, 40, IAC, SE])
        + iac(DO, 99)
        + b"llo"
        + bytes([IAC, 241])  # NOP
        + b"\r\n"
    )
    proto.dataReceived(data)
    assert rec.events == ["<SIZE>", "hello"]
    assert proto.width == 120 and proto.height == 40
    # We asked for NAWS, so WILL NAWS is the answer and needs no reply; DO 99 is refused.
    assert transport.value() == iac(WONT, 99)


def test_iac_split_across_packets() -> None:
    proto, transport, rec, _ = connect()
    for byte in b"a" + iac(DO, 99) + b"b\r\n":
        proto.dataReceived(bytes([byte]))
    assert rec.events == ["ab"]
    assert transport.value().endswith(iac(WONT, 99))


def test_unknown_and_broken_sequences_do_not_raise() -> None:
    proto, _, rec, _ = connect()
    proto.dataReceived(bytes([IAC, 0x01]) + b"x" + bytes([IAC, SB, 1, 2, IAC, 7]) + b"y\r\n")
    assert rec.events == ["xy"]


def test_any_option_number_is_refused_and_leaves_the_others_alone() -> None:
    """Option states are packed 3 bits per option: the highest numbers work like the rest."""
    proto, transport, _, _ = connect()
    transport.clear()
    proto.dataReceived(iac(WILL, 255) + iac(DO, 254) + iac(DO, ECHO) + iac(DO, SGA))
    assert transport.value() == iac(DONT, 255) + iac(WONT, 254)
    assert proto.option_state(255, ours=False) == NO and proto.option_state(254) == NO
    assert proto.option_state(ECHO) == YES and proto.option_state(SGA) == YES
    assert proto.option_state(NAWS, ours=False) == WANTYES  # still asked, unanswered


def test_doubled_iac_is_a_data_byte() -> None:
    proto, _, rec, _ = connect()
    proto.dataReceived(b"a\xff\xffb\r\n")
    assert rec.events == ["a\udcffb"]


def test_runaway_subnegotiation_is_abandoned() -> None:
    proto, _, rec, _ = connect()
    proto.dataReceived(bytes([IAC, SB, NAWS]) + b"x" * 2000 + b"ok\r\n")
    assert rec.events[-1].endswith("ok")
    proto.dataReceived(bytes([IAC, SB, NAWS]) + bytes([IAC, IAC]) * 2000 + b"ok2\r\n")
    assert rec.events[-1].endswith("ok2")  # escaped IACs count toward the limit too


def test_control_keys() -> None:
    proto, _, rec, _ = connect()
    proto.dataReceived(b"\x04")  # ^D on an empty line
    proto.dataReceived(b"abc\x04\r\n")  # ^D mid-line is not EOF
    proto.dataReceived(b"half\x03")  # ^C abandons the line
    proto.dataReceived(b"ab\x7fc\x08d\r\n")  # DEL and BS erase
    proto.dataReceived(bytes([IAC, telnet.IP]))
    proto.dataReceived(bytes([IAC, telnet.EOF]))
    proto.dataReceived("é\x7f!\r\n".encode())  # erase removes a whole UTF-8 character
    assert rec.events == ["<EOF>", "abc", "<INT>", "ad", "<INT>", "<EOF>", "!"]


def test_are_you_there_is_answered() -> None:
    proto, transport, _, _ = connect()
    transport.clear()
    proto.dataReceived(bytes([IAC, telnet.AYT]))
    assert b"[Yes]" in transport.value()


def test_long_line_refused_and_rest_discarded_without_buffering() -> None:
    proto, _, rec, _ = connect(max_line=10)
    proto.dataReceived(b"0123456789\r\n")  # exactly the limit is fine
    proto.dataReceived(b"0123456")
    proto.dataReceived(b"789AB")
    assert rec.events == ["0123456789", "<LONG 10>"]
    proto.dataReceived(b"x" * 100_000)
    assert len(proto._buf) == 0
    proto.dataReceived(b"tail\r\nnext\r\n")
    assert rec.events == ["0123456789", "<LONG 10>", "next"]
    proto.dataReceived(b"y" * 11 + b"\r\n")  # fast path honours the limit too
    assert rec.events[-1] == "<LONG 10>"


def test_echo_off_and_on_never_waits() -> None:
    proto, transport, _, _ = connect()
    transport.clear()
    proto.set_echo(False)
    assert transport.value() == b""  # WILL ECHO went out at connect
    # nc never answers; turning echo back on still sends WONT at once.
    proto.set_echo(True)
    assert transport.value() == iac(WONT, ECHO)
    proto.set_echo(False)
    assert transport.value() == iac(WONT, ECHO) + iac(WILL, ECHO)
    proto.set_echo(True)
    transport.clear()
    proto.set_echo(False)
    proto.dataReceived(iac(DO, ECHO))  # telnet(1) agrees: no reply expected
    assert transport.value() == iac(WILL, ECHO)
    assert proto.option_state(ECHO) == YES
    proto.set_echo(True)
    proto.dataReceived(iac(DONT, ECHO))
    assert transport.value() == iac(WILL, ECHO) + iac(WONT, ECHO)
    assert proto.option_state(ECHO) == NO


def line_mode_client() -> tuple[TelnetProtocol, StringTransport, Recorder, Clock]:
    """A telnet client that refused our echo at connect (a line-mode client)."""
    proto, transport, rec, clock = connect()
    proto.dataReceived(iac(DONT, ECHO) + iac(DONT, SGA))
    assert proto.option_state(ECHO) == NO
    transport.clear()
    return proto, transport, rec, clock


def test_late_answer_is_not_taken_for_the_answer_to_a_newer_request() -> None:
    """Two hidden prompts in a row: WONT then WILL before the client answers the WONT."""
    proto, transport, _, _ = line_mode_client()
    proto.set_echo(False)
    proto.dataReceived(iac(DO, ECHO))
    transport.clear()
    proto.set_echo(True)
    proto.set_echo(False)
    assert transport.value() == iac(WONT, ECHO)  # the WILL waits for the DONT
    proto.dataReceived(iac(DONT, ECHO))
    assert transport.value() == iac(WONT, ECHO) + iac(WILL, ECHO)
    proto.dataReceived(iac(DO, ECHO))
    assert transport.value() == iac(WONT, ECHO) + iac(WILL, ECHO)  # no WONT in reply
    assert proto.option_state(ECHO) == YES


def test_request_reversed_before_its_answer_is_reversed_after_it() -> None:
    proto, transport, _, _ = line_mode_client()
    proto.set_echo(False)
    proto.set_echo(True)
    assert transport.value() == iac(WILL, ECHO)  # the WONT waits for the answer
    assert proto.option_state(ECHO) == WANTYES
    proto.dataReceived(iac(DO, ECHO))  # the answer to WILL arrives late
    assert transport.value() == iac(WILL, ECHO) + iac(WONT, ECHO)
    proto.dataReceived(iac(DONT, ECHO))
    assert proto.option_state(ECHO) == NO
    assert transport.value() == iac(WILL, ECHO) + iac(WONT, ECHO)


def test_client_asking_again_gets_no_loop() -> None:
    proto, transport, _, _ = connect()
    transport.clear()
    proto.dataReceived(iac(DO, 99))
    proto.dataReceived(iac(DO, 99))  # asking again gets the same answer, no loop
    assert transport.value() == iac(WONT, 99) * 2


def test_output_is_crlf_utf8_with_iac_doubled() -> None:
    proto, transport, _, _ = connect()
    transport.clear()
    proto.send("héllo\nworld\udcff\n")
    assert transport.value() == "héllo\r\nworld".encode() + b"\xff\xff\r\n"


def test_messages_are_dropped_over_the_cap_and_a_stalled_client_aborted() -> None:
    proto, transport, _, clock = connect(max_output=100)
    proto.pauseProducing()  # the transport says the client stopped reading
    assert proto.send_message("", Message.of("x" * 59))
    assert not proto.send_message("", Message.of("y" * 59))
    proto.send("own output is kept\n")
    assert transport.value() == OFFERS
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting  # aborted


def test_resume_flushes_in_order_and_cancels_the_abort() -> None:
    proto, transport, _, clock = connect(max_output=100)
    transport.clear()
    proto.pauseProducing()
    proto.send_message("", Message.of("a" * 48))
    assert not proto.send_message("", Message.of("b" * 59))
    proto.send("c")
    proto.resumeProducing()
    assert transport.value() == b"a" * 48 + b"\r\nc"
    clock.advance(60)
    assert not transport.disconnecting


def test_close_of_a_client_that_does_not_read_aborts() -> None:
    proto, transport, _, _ = connect()
    proto.pauseProducing()
    proto.close()
    assert transport.disconnecting


def test_connection_lost_reaches_the_receiver() -> None:
    proto, _, rec, _ = connect()
    proto.connectionLost()
    assert rec.events == ["<LOST>"]


def test_own_output_waits_for_the_client_and_a_stalled_one_is_aborted() -> None:
    proto, transport, _, clock = connect(max_output=100)
    assert proto.drain().called
    proto.pauseProducing()
    waiting = proto.drain()
    assert not waiting.called
    proto.resumeProducing()
    assert waiting.called
    proto.pauseProducing()
    proto.drain()
    clock.advance(10)
    assert transport.disconnecting  # a command waited 10 s for a client that never read


def test_own_output_over_the_cap_starts_the_stall_timer() -> None:
    proto, transport, _, clock = connect(max_output=100)
    proto.pauseProducing()
    proto.send("x" * 200)
    clock.advance(10)
    assert transport.disconnecting


def test_reading_pauses_only_once_the_client_has_spoken() -> None:
    """Under TLS the greeting pauses the wire before the handshake: reading must go on."""
    proto, transport, _, _ = connect()
    proto.pauseProducing()
    assert transport.producerState == "producing"  # still reading (the handshake)
    proto.resumeProducing()
    proto.dataReceived(b"x")
    proto.pauseProducing()
    assert transport.producerState == "paused"  # a client that sends but does not read
    proto.resumeProducing()
    assert transport.producerState == "producing"


def test_close_unregisters_the_producer() -> None:
    """TLS closes only once no producer is registered."""
    proto, transport, _, _ = connect()
    assert transport.producer is proto
    proto.close()
    assert transport.producer is None and transport.disconnecting


def test_messages_after_any_lead_and_repeated_text_are_encoded_right() -> None:
    proto, transport, _, _ = connect()
    transport.clear()
    msg = Message.of("m\udcff")
    assert proto.send_message("\n", msg)
    assert proto.send_message("\r\x1b[K\x1b[1A", msg)  # a lead of its own (character mode)
    prompt = "p\udcff$ "
    proto.send(prompt)
    proto.send(prompt)  # the same text again: the kept encoding
    proto.send("q$ ")
    assert transport.value() == (
        b"\r\nm\xff\xff\r\n" + b"\r\x1b[K\x1b[1Am\xff\xff\r\n" + b"p\xff\xff$ " * 2 + b"q$ "
    )


def test_the_prompt_keeps_its_encoding_across_a_commands_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The prompt goes out after every command; output that ends a line (a command's)
    does not push its kept encoding out, so it is encoded once, not once per command."""
    proto, transport, _, _ = connect()
    encoded: list[str] = []

    def counting(text: str) -> bytes:
        encoded.append(text)
        return encode(text)

    monkeypatch.setattr(telnet, "encode", counting)
    prompt = "alice@host:~$ "
    for _ in range(3):
        proto.send(prompt)
        proto.send("is y\n")
    assert encoded == [prompt, "is y\n", "is y\n", "is y\n"]
    assert transport.value().endswith(b"alice@host:~$ is y\r\n")


def _terminal_with_prompt() -> tuple[Terminal, StringTransport, list[bytes], Clock]:
    clock = Clock()
    terms: list[Terminal] = []

    def attach(wire: IWire) -> ILineReceiver:
        terms.append(Terminal(wire, Redraws(clock)))
        return terms[0]

    proto = TelnetProtocol(attach, clock, 4096, 1000)
    transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 1234))
    proto.makeConnection(transport)
    writes: list[bytes] = []
    plain_write = transport.write

    def counting(data: bytes) -> None:
        writes.append(data)
        plain_write(data)

    transport.write = counting  # type: ignore[method-assign]
    term = terms[0]
    term.set_handler(lambda line: None, lambda: "p$ ")
    transport.clear()
    writes.clear()
    return term, transport, writes, clock


def test_a_message_and_the_prompt_drawn_again_are_one_transport_write() -> None:
    term, _, writes, clock = _terminal_with_prompt()
    assert term.notify(Message.of("hi\n"))
    clock.advance(0)  # the end of the reactor turn
    assert writes == [b"\r\nhi\r\np$ "]
    assert term.notify(Message.of("again\n"))  # a later turn: the reprinted prompt replaced
    clock.advance(0)
    assert writes[1:] == [b"\r\x1b[Kagain\r\np$ "]


def test_a_burst_and_a_notice_before_close_keep_their_bytes() -> None:
    term, transport, _, clock = _terminal_with_prompt()
    term.notify(Message.of("one\n"))
    term.notify(Message.of("two\n"))  # same turn: one block under one prompt
    clock.advance(0)
    assert transport.value() == b"\r\none\r\ntwo\r\np$ "
    transport.clear()
    term.notify(Message.of("bye\n"))
    term.close()  # the notice is the last thing shown: no prompt after it
    clock.advance(0)
    assert transport.value() == b"\r\x1b[Kbye\r\n"
    assert transport.disconnecting


def test_own_output_after_a_held_message_comes_after_message_and_prompt() -> None:
    term, transport, _, _ = _terminal_with_prompt()
    term.notify(Message.of("hi\n"))
    term.write("own\n")
    assert transport.value() == b"\r\nhi\r\np$ own\r\n"


def test_a_completed_close_leaves_no_timer_behind() -> None:
    """The close timeout holds the connection only until the close completes."""
    proto, _, _, clock = connect()
    proto.close()
    assert clock.getDelayedCalls()
    proto.connectionLost()
    assert not clock.getDelayedCalls()
