"""The load generator's protocol pieces (bench/kinds.py, bench/loadgen.py), without any load.

The telnet answers are played against the server's own telnet parser, so the generator's
character-mode sessions are known to reach the state a netkit telnet client reaches; the
WebSocket frames are read back by the framing the server itself sends.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from kinds import (
    DO,
    DONT,
    ECHO,
    IAC,
    NAWS,
    SGA,
    TTYPE,
    WILL,
    WONT,
    Scanner,
    TelnetAnswers,
    WsReader,
    ws_text,
)
from loadgen import mix_rotation

from shellserver.wires.telnet.core import TelnetParser
from shellserver.wires.telnet.events import (
    ModeChanged,
    Send,
    TerminalType,
    WindowSize,
)
from shellserver.wires.web.socket import frame


def negotiate(answers: TelnetAnswers, chunk: int = 0) -> tuple[TelnetParser, list[object]]:
    """The server's offers and the client's answers back and forth until both are quiet;
    ``chunk`` > 0 cuts what the server sends into pieces of that many bytes."""
    parser = TelnetParser()
    events: list[object] = []
    to_client = parser.start()
    for _ in range(10):
        step = chunk or len(to_client) or 1
        pieces = [to_client[i : i + step] for i in range(0, len(to_client), step)]
        reply = b"".join(answers.feed(p) for p in pieces)
        if not reply:
            break
        new = list(parser.receive(reply))
        events += new
        to_client = b"".join(e.data for e in new if isinstance(e, Send))
    return parser, events


@pytest.mark.parametrize("chunk", [0, 1, 2])
def test_telnet_answers_put_the_server_in_character_mode(chunk: int) -> None:
    parser, events = negotiate(TelnetAnswers(cols=120, rows=40, term=b"XTERM"), chunk)
    assert parser.character
    assert ModeChanged(character=True) in events
    assert WindowSize(cols=120, rows=40) in events
    assert any(isinstance(e, TerminalType) and e.name.lower() == "xterm" for e in events)


def test_telnet_answers_refuse_binary_and_answer_each_change_once() -> None:
    answers = TelnetAnswers()
    reply = answers.feed(bytes((IAC, WILL, ECHO, IAC, WILL, 0, IAC, DO, 0)))
    assert reply == bytes((IAC, DO, ECHO, IAC, DONT, 0, IAC, WONT, 0))
    # the same requests again change nothing: no answer, so two peers cannot loop
    assert answers.feed(bytes((IAC, WILL, ECHO, IAC, WILL, 0))) == b""
    # an offer of what was accepted, then withdrawn, is answered
    assert answers.feed(bytes((IAC, WONT, ECHO))) == bytes((IAC, DONT, ECHO))


def test_telnet_answers_send_the_window_size_with_will_naws_and_escape_255() -> None:
    reply = TelnetAnswers(cols=255, rows=24).feed(bytes((IAC, DO, NAWS)))
    assert reply == bytes((IAC, WILL, NAWS, IAC, 250, NAWS, 0, 255, 255, 0, 24, IAC, 240))


def test_telnet_answers_give_the_terminal_type_only_once_agreed() -> None:
    answers = TelnetAnswers(term=b"XTERM")
    send = bytes((IAC, 250, TTYPE, 1, IAC, 240))
    assert answers.feed(send) == b""  # not agreed to TTYPE yet
    assert answers.feed(bytes((IAC, DO, TTYPE))) == bytes((IAC, WILL, TTYPE))
    assert answers.feed(send) == bytes((IAC, 250, TTYPE, 0)) + b"XTERM" + bytes((IAC, 240))
    assert answers.feed(bytes((IAC, DO, SGA))) == bytes((IAC, WILL, SGA))


def test_ws_reader_reads_the_servers_frames_in_any_pieces() -> None:
    text = "x" * 200 + " ~w1~ " + "é" * 40000  # a 2-byte and an 8-byte length
    stream = frame("login: ") + frame(text) + b"\x89\x00" + frame("end")
    for step in (1, 7, len(stream)):
        reader, got, pongs = WsReader(), b"", b""
        for i in range(0, len(stream), step):
            out, replies = reader.feed(stream[i : i + step])
            got += out
            pongs += replies
        assert got.decode() == "login: " + text + "end"
        assert pongs[0] == 0x8A and pongs[1] == 0x80  # a masked, empty pong
        assert not reader.closed
    reader = WsReader()
    reader.feed(b"\x88\x02\x03\xe8")
    assert reader.closed


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_ws_text_frames_are_masked_and_read_back(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    data = ws_text(payload)
    assert data[0] == 0x81 and data[1] & 0x80  # FIN, text; masked
    # unmasked and with the mask bit cleared, the server's reader gets the payload back
    n = data[1] & 0x7F
    head = 2 + {126: 2, 127: 8}.get(n, 0)
    mask = data[head : head + 4]
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(data[head + 4 :]))
    plain = bytes((data[0], data[1] & 0x7F)) + data[2:head] + body
    assert WsReader().feed(plain) == (payload, b"")


def test_scanner_skips_the_echo_of_its_own_marker_once() -> None:
    echoing = Scanner(echoes=True)
    echoing.typed("write u5 hello ~m7~")
    assert echoing.scan(b"u1@h:~$ write u5 hello ~m7") == []
    assert echoing.scan(b"~\r\nMessage from u9: ~m3~ and again ~m7~") == [(b"m", 3), (b"m", 7)]
    plain = Scanner(echoes=False)
    plain.typed("wall ~w1~")
    assert plain.scan(b"Broadcast: ~w1~") == [(b"w", 1)]


def test_mix_rotation_interleaves_the_shares() -> None:
    rotation = mix_rotation("char:60,ssh:30,web:10")
    assert len(rotation) == 10
    assert (rotation.count("char"), rotation.count("ssh"), rotation.count("web")) == (6, 3, 1)
    assert rotation[:3].count("char") <= 2  # not six of a kind first
    with pytest.raises(ValueError):
        mix_rotation("char:60,gopher:40")
