"""An SSH session channel through the shared session start, without conch or sockets."""

from __future__ import annotations

import gc
import re
import weakref
from pathlib import Path
from typing import Any

import pytest
from harness import Client, add_user, make_server, make_server_with

from shellserver.app.assembly import Assembly
from shellserver.hub.session import Session
from shellserver.store.accounts import Account
from shellserver.terminal.discipline import PACE
from shellserver.text.message import Message
from shellserver.wires.ssh.session import Request, SSHWire, session_starter


class FakeTCP:
    def __init__(self) -> None:
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class FakeTransport:
    def __init__(self) -> None:
        self.peer = "192.0.2.5"
        self.transport = FakeTCP()


class FakeConn:
    def __init__(self) -> None:
        self.transport = FakeTransport()


class FakeChannel:
    """What the wire uses of a conch SessionChannel."""

    def __init__(self) -> None:
        self.conn = FakeConn()
        self.data = b""
        self.exit_status: int | None = None
        self.wire: SSHWire | None = None

    def write(self, data: bytes) -> None:
        self.data += data

    def writeSequence(self, seq: Any) -> None:
        self.data += b"".join(seq)

    def exit(self, status: int) -> None:
        self.exit_status = status
        assert self.wire is not None
        self.wire.connection_lost()  # conch answers with the channel's close

    def take(self) -> str:
        data, self.data = self.data, b""
        return data.decode()


@pytest.fixture
def server(tmp_path: Path) -> Assembly:
    return make_server_with(tmp_path, ("alice", "bob"), admins=())


def account(server: Assembly, name: str) -> Account:
    found = server.store.get(name).result
    assert isinstance(found, Account)
    return found


def start(server: Assembly, name: str, request: Request) -> FakeChannel:
    channel = FakeChannel()
    seat = session_starter(server.start, server.clock, 4096, 256 * 1024)
    seat(channel, account(server, name), request)  # type: ignore[arg-type]
    server.clock.advance(0)  # type: ignore[attr-defined]
    return channel


def test_exec_runs_one_line_and_exits_with_its_status(server: Assembly) -> None:
    ok = start(server, "alice", Request(command="who"))
    assert ok.exit_status == 0
    out = ok.take()
    assert re.search(r"^alice\s+ssh/0\s", out, re.M) and "\r\n" not in out and "$ " not in out
    missing = start(server, "alice", Request(command="frobnicate"))
    assert missing.exit_status == 127 and "frobnicate: command not found" in missing.take()
    usage = start(server, "alice", Request(command="write"))
    assert usage.exit_status == 1 and "Usage: write" in usage.take()
    listed = start(server, "alice", Request(command="ls"))
    assert listed.exit_status == 0, listed.take()
    not_there = start(server, "alice", Request(command="ls nothing-here"))
    assert not_there.exit_status == 1  # a file job's complaint is a failure too
    assert "ls: cannot access 'nothing-here'" in not_there.take()
    assert not server.seats  # each ended with its command
    assert server.hub.sessions_of("alice").result == []


def test_a_pty_shell_is_interactive_with_the_editor_and_ssh_ttys(server: Assembly) -> None:
    ch = start(server, "alice", Request(pty=True, term="xterm", cols=100, rows=30))
    out = ch.take()
    assert "This is your first login." in out and out.endswith("alice@testhost:~$ ")
    assert "\r\n" in out
    (session,) = server.hub.sessions_of("alice").result
    assert isinstance(session, Session)
    assert (session.tty, session.term, session.width, session.peer) == (
        "ssh/0",
        "xterm",
        100,
        "192.0.2.5",
    )
    assert ch.wire is not None
    ch.wire.data_received(b"wh")  # half a line, echoed by the editor
    assert ch.take().endswith("wh")
    bob = Client(server)
    bob.login("bob")
    bob.run("write alice hi")
    server.clock.advance(0)  # type: ignore[attr-defined]
    shown = ch.take()
    assert "hi" in shown and shown.endswith("alice@testhost:~$ wh")  # the line drawn again
    ch.wire.resize(150, 40)
    assert session.width == 150
    ch.wire.data_received(b"o\r")
    # The line was drawn again for the message just now: the resize's redraw (and the
    # Enter after it) wait for the end of the interval (terminal.PACE).
    server.clock.advance(PACE)  # type: ignore[attr-defined]
    assert re.search(r"^alice\s+ssh/0\s", ch.take(), re.M)
    ch.wire.data_received(b"logout\r")
    assert ch.exit_status == 0
    assert server.hub.sessions_of("alice").result == []


def test_without_a_pty_lines_are_read_in_line_mode(server: Assembly) -> None:
    ch = start(server, "alice", Request())
    assert ch.wire is not None
    ch.take()
    ch.wire.data_received(b"w")
    ch.wire.data_received(b"ho\r\nlogout\n")
    out = ch.take()
    assert re.search(r"^alice\s+ssh/0\s", out, re.M) and "\r\n" not in out
    assert ch.exit_status == 0


def test_a_message_and_the_prompt_after_it_go_out_together(server: Assembly) -> None:
    ch = start(server, "alice", Request())
    assert ch.wire is not None
    ch.take()
    assert ch.wire.send_message("\n", Message.of("hello"), "alice@testhost:~$ ")
    assert ch.take() == "\nhello\nalice@testhost:~$ "


def test_a_full_window_holds_output_and_a_stalled_client_is_aborted(server: Assembly) -> None:
    ch = start(server, "alice", Request(pty=True))
    wire = ch.wire
    assert wire is not None
    ch.take()
    wire.pause()  # conch: the client's window is full
    assert wire.backlogged
    assert wire.send_message("", Message.of("x" * 100))
    assert ch.take() == ""
    wire.resume()
    assert "x" * 100 in ch.take()
    wire.pause()
    wire.close()  # kick, idle, shutdown of a client that does not read
    assert ch.conn.transport.transport.aborted


def test_the_connection_ending_ends_the_session(server: Assembly) -> None:
    ch = start(server, "alice", Request(pty=True))
    assert len(server.seats) == 1
    assert server.seats.session_counts() == {("ssh", "user"): 1}  # the metrics' sessions gauge
    wire = ch.wire
    assert wire is not None
    wire.connection_lost()  # the avatar's logout, or the channel's close
    wire.connection_lost()  # once only
    assert ch.wire is None  # the channel lets go of its wire
    assert not server.seats
    assert server.hub.sessions_of("alice").result == []


def test_kick_ends_an_ssh_session_with_the_notice(server: Assembly) -> None:
    ch = start(server, "alice", Request(pty=True))
    ch.take()
    (session,) = server.hub.sessions_of("alice").result
    server.hub.end_session(session, Message.of("\nYou have been logged out."))
    server.clock.advance(0)  # type: ignore[attr-defined]
    assert "logged out" in ch.take()
    assert ch.exit_status == 0 and not server.seats


def test_max_sessions_applies_to_ssh_logins(tmp_path: Path) -> None:
    server = make_server(tmp_path, max_sessions=1, on_max="refuse")
    add_user(server, "alice")
    first = start(server, "alice", Request(pty=True))
    second = start(server, "alice", Request(command="who"))
    assert "Too many sessions for alice (limit 1)" in second.take()
    assert second.exit_status == 1
    assert first.exit_status is None and len(server.seats) == 1


def test_the_end_of_input_without_a_pty_finishes_what_was_sent_then_logs_out(
    server: Assembly,
) -> None:
    """``printf 'write bob\\nhi\\n' | ssh -T host``: the lines run, then the session ends."""
    bob = Client(server)
    bob.login("bob")
    ch = start(server, "alice", Request())
    assert ch.wire is not None
    ch.wire.data_received(b"write bob\nhi\n")
    ch.wire.eof_received()  # stdin closed while write still reads
    server.clock.advance(0)  # type: ignore[attr-defined]
    seen = bob.output()
    assert "hi\n" in seen and "EOF" in seen
    assert ch.exit_status == 0  # logged out, not waiting at a prompt for input that never comes


def test_a_closed_ssh_session_is_freed_by_reference_counting(server: Assembly) -> None:
    """No reference cycle outlives the session (docs/performance.md, tests/test_gc.py)."""
    gc.collect()
    gc.disable()
    try:
        ch = start(server, "alice", Request(pty=True))
        wire = ch.wire
        assert wire is not None
        (seat,) = server.seats
        (session,) = server.hub.sessions_of("alice").result
        refs = [weakref.ref(x) for x in (wire, seat, session)]
        del seat, session
        wire.connection_lost()
        del wire
        server.clock.advance(1)  # type: ignore[attr-defined]
        del ch
        assert [r() for r in refs] == [None, None, None]
    finally:
        gc.enable()
