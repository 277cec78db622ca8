"""The telnet wire over a transport: offers at connect, events acted on, output held,
capped and encoded, close and abort — no sockets. The parsing and negotiation rules
themselves are tested on the parser alone, in test_telnet_core.py."""

from __future__ import annotations

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from shellserver.terminal.discipline import ILineReceiver, IWire, Redraws, Terminal
from shellserver.text.message import Message
from shellserver.wires.telnet import protocol
from shellserver.wires.telnet.codes import (
    AYT,
    BINARY,
    DO,
    DONT,
    ECHO,
    IAC,
    IP,
    NAWS,
    SB,
    SE,
    SGA,
    TTYPE,
    WILL,
    WONT,
    iac,
)
from shellserver.wires.telnet.encode import encode
from shellserver.wires.telnet.negotiate import NO, WANTYES
from shellserver.wires.telnet.protocol import TelnetProtocol


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


def test_the_parsers_events_reach_the_terminal_and_the_client() -> None:
    """The parser's rules are tested alone (test_telnet_core.py); here, that the wire acts on
    each kind of event: lines and keys up, answers out, size and type onto the wire."""
    proto, transport, rec, _ = connect(max_line=10)
    transport.clear()
    proto.dataReceived(b"ls\r\n")  # the fast path
    proto.dataReceived(b"a\r\nb\x04\x03\x04" + b"x" * 11 + b"\r\n")
    assert rec.events == ["ls", "a", "<INT>", "<EOF>", "<LONG 10>"]
    rec.events.clear()
    ttype_is = bytes([IAC, SB, TTYPE, 0]) + b"VT100" + bytes([IAC, SE])
    proto.dataReceived(
        bytes([IAC, SB, NAWS, 0, 120, 0, 40, IAC, SE])
        + iac(WILL, TTYPE)
        + ttype_is
        + bytes([IAC, AYT])
        + iac(DO, 99)
    )
    assert rec.events == ["<SIZE>"]
    assert (proto.width, proto.height, proto.term, proto.peer) == (120, 40, "vt100", "192.0.2.7")
    ttype_send = bytes([IAC, SB, TTYPE, 1, IAC, SE])
    assert transport.value() == ttype_send + b"\r\n[Yes]\r\n" + iac(WONT, 99)
    transport.clear()
    rec.events.clear()
    proto.dataReceived(iac(DO, ECHO) + iac(DO, SGA) + b"k")
    proto.dataReceived(b"j")  # one key: the parser's shared event
    proto.dataReceived(bytes([IAC, IP]))
    assert rec.events == ["<CHAR True>", ("keys", "k"), ("keys", "j"), ("keys", "\x03")]
    proto.set_echo(False)  # in character mode the editor hides the line: nothing to send
    assert transport.value() == b""
    proto.dataReceived(iac(DONT, SGA))
    assert rec.events[-1] == "<CHAR False>"
    assert transport.value() == iac(WONT, SGA)
    assert proto.option_state(SGA) == NO and proto.option_state(NAWS, ours=False) == WANTYES


def test_echo_is_asked_of_the_client_at_once() -> None:
    """What set_echo sends is the parser's to decide; the wire writes it without waiting."""
    proto, transport, _, _ = connect()
    transport.clear()
    proto.set_echo(False)
    assert transport.value() == b""  # WILL ECHO went out at connect
    proto.set_echo(True)  # nc never answers: WONT goes out anyway
    assert transport.value() == iac(WONT, ECHO)
    proto.dataReceived(iac(DONT, ECHO))
    assert proto.option_state(ECHO) == NO


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

    monkeypatch.setattr(protocol, "encode", counting)
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
