"""The line discipline: readers, the shell handler, typeahead, messages while typing."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface import implementer

from shellserver.terminal.discipline import (
    Disconnected,
    EndOfInput,
    Interrupted,
    IWire,
    Redraws,
    Terminal,
)
from shellserver.text.message import Message
from shellserver.wires.telnet.encode import encode


@implementer(IWire)
class FakeWire:
    kind = "tel"
    peer = "192.0.2.1"
    width = 80
    height = 24
    term = ""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.echo: list[bool] = []
        self.accept = True
        self.closed = False
        self.backlogged = False
        self.clock = Clock()

    def send(self, text: str) -> None:
        self.out.append(encode(text))

    def send_message(self, lead: str, message: Message, after: str = "") -> bool:
        if self.accept:
            self.out.append(encode(lead) + message.encoded(self.kind, encode) + encode(after))
        return self.accept

    def drain(self) -> Deferred[None]:
        return succeed(None)

    def set_echo(self, on: bool) -> None:
        self.echo.append(on)

    def session_started(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def text(self) -> str:
        self.clock.advance(0)
        data = b"".join(self.out).decode().replace("\r\n", "\n")
        self.out.clear()
        return data


def make_terminal() -> Terminal:
    wire = FakeWire()
    return Terminal(wire, Redraws(wire.clock))


def result(d: Deferred[str]) -> object:
    box: list[object] = []
    d.addBoth(box.append)
    assert box, "Deferred has not fired"
    return box[0]


def test_read_line_shows_prompt_and_returns_the_line() -> None:
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    d = term.read_line("login: ")
    assert wire.text() == "login: "
    term.line_received("alice")
    assert result(d) == "alice"


def test_hidden_read_turns_echo_off_then_on_and_ends_the_line() -> None:
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    d = term.read_line("Password: ", hidden=True)
    assert wire.echo == [False]
    term.line_received("secret")
    assert result(d) == "secret"
    assert wire.text() == "Password: \n"
    # A second hidden question keeps echo off: no WONT/WILL pair to race
    # the client's answers, so "Password again:" is never echoed.
    d = term.read_line("Password again: ", hidden=True)
    term.line_received("secret")
    assert result(d) == "secret"
    assert wire.echo == [False]
    term.write("Welcome\n")
    assert wire.echo == [False, True]
    assert wire.text().endswith("Password again: \nWelcome\n")


def test_hidden_read_then_a_prompt_turns_echo_back_on() -> None:
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    d = term.read_line("Password: ", hidden=True)
    term.line_received("secret")
    result(d)
    term.read_line("login: ")
    assert wire.echo == [False, True]


def test_no_prompt_after_close() -> None:
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    term.set_handler(lambda line: term.close() if line == "exit" else None, lambda: "$ ")
    term.line_received("exit")
    assert wire.closed
    assert wire.text() == "$ "


@pytest.mark.parametrize(
    "event, exc",
    [
        ("eof_received", EndOfInput),
        ("interrupted", Interrupted),
        ("connection_lost", Disconnected),
    ],
)
def test_reader_fails_on_eof_interrupt_disconnect(event: str, exc: type[Exception]) -> None:
    term = make_terminal()
    d = term.read_line("x ", hidden=True)
    getattr(term, event)()
    failure = result(d)
    assert failure.check(exc)  # type: ignore[attr-defined]


def test_handler_gets_lines_and_prompt_is_shown_after_each() -> None:
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    seen: list[str] = []

    def handler(line: str) -> None:
        seen.append(line)
        term.write(f"ran {line}\n")

    term.set_handler(handler, lambda: "$ ")
    term.line_received("a")
    term.line_received("b")
    assert seen == ["a", "b"]
    assert wire.text() == "$ ran a\n$ ran b\n$ "


def test_lines_typed_during_a_slow_command_wait_their_turn() -> None:
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    pending: list[Deferred[None]] = []
    seen: list[str] = []

    def handler(line: str) -> Deferred[None] | None:
        seen.append(line)
        if line == "slow":
            pending.append(Deferred())
            return pending[-1]
        return None

    term.set_handler(handler, lambda: "$ ")
    term.line_received("slow")
    term.line_received("next")
    assert seen == ["slow"]
    pending[0].callback(None)
    assert seen == ["slow", "next"]
    assert wire.text() == "$ $ "  # one prompt per finished command, none doubled


def test_a_command_can_read_typeahead() -> None:
    term = make_terminal()
    got: list[object] = []

    def handler(line: str) -> Deferred[None] | None:
        if line == "ask":
            d = term.read_line("? ")
            d.addCallback(got.append)
            return d
        return None

    gate: Deferred[None] = Deferred()
    term.set_handler(lambda line: gate if line == "block" else handler(line), lambda: "$ ")
    term.line_received("block")
    term.line_received("ask")
    term.line_received("answer")
    gate.callback(None)
    assert got == ["answer"]


def test_message_while_at_prompt_goes_on_its_own_line_then_prompt_again() -> None:
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    term.set_handler(lambda line: None, lambda: "$ ")
    wire.text()
    assert term.notify(Message.of("hello\n"))
    assert wire.text() == "\nhello\n$ "


def test_a_run_of_messages_replaces_the_reprinted_prompt() -> None:
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    term.set_handler(lambda line: None, lambda: "$ ")
    wire.text()
    term.notify(Message.of("one\n"))
    assert wire.text() == "\none\n$ "
    term.notify(Message.of("two\n"))
    assert wire.text() == "\r\x1b[Ktwo\n$ "
    term.notify(Message.of("a\n"))
    term.notify(Message.of("b\n"))  # a burst in one reactor turn: one block, one prompt
    assert wire.text() == "\r\x1b[Ka\nb\n$ "
    term.line_received("typed")  # the user typed after it: nothing is erased
    wire.text()
    term.notify(Message.of("three\n"))
    assert wire.text() == "\nthree\n$ "


def test_message_at_start_of_line_needs_no_extra_newline() -> None:
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    d = term.read_line("")
    term.notify(Message.of("hi\n"))
    assert wire.text() == "\nhi\n"  # a reader with an empty prompt still may have typed text
    d.cancel()
    d.addErrback(lambda f: None)


def test_dropped_message_reports_false() -> None:
    wire = FakeWire()
    wire.accept = False
    term = Terminal(wire, Redraws(wire.clock))
    assert not term.notify(Message.of("x"))


def test_eof_at_idle_prompt_logs_out() -> None:
    term = make_terminal()
    calls: list[str] = []
    term.on_eof = lambda: calls.append("eof")
    term.set_handler(lambda line: None, lambda: "$ ")
    term.eof_received()
    assert calls == ["eof"]


def test_failing_handler_reports_internal_error_and_keeps_going(logged_errors) -> None:  # type: ignore[no-untyped-def]
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    d: Deferred[None] = Deferred()
    term.set_handler(lambda line: d, lambda: "$ ")
    term.line_received("boom")
    d.errback(RuntimeError("boom"))
    assert "internal error" in wire.text()
    assert logged_errors.flush(RuntimeError)


def test_a_notice_followed_by_close_is_the_last_thing_sent() -> None:
    """Kick, lock, idle, shutdown: deliver then close in one turn; no prompt after it."""
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    term.set_handler(lambda line: None, lambda: "$ ")
    wire.text()
    term.notify(Message.of("You have been logged out by root: bye"))
    term.close()
    assert wire.text() == "\nYou have been logged out by root: bye\n"
    assert wire.closed


def test_next_line_waits_while_the_client_is_not_reading() -> None:
    wire = FakeWire()
    gates: list[Deferred[None]] = []

    def drain() -> Deferred[None]:
        gates.append(Deferred())
        return gates[-1]

    wire.drain = drain  # type: ignore[method-assign]
    term = Terminal(wire, Redraws(wire.clock))
    ran: list[str] = []

    def handler(line: str) -> None:
        ran.append(line)
        wire.backlogged = True  # its output filled the client's window

    term.set_handler(handler, lambda: "$ ")
    term.line_received("one")
    term.line_received("two")
    term.line_received("three")
    assert ran == ["one"]
    assert len(gates) == 1  # one wait, however many lines are held
    wire.backlogged = False
    gates[0].callback(None)
    assert ran == ["one", "two"]


def test_nothing_is_drawn_after_a_close_notice() -> None:
    """Keys, a resize or an overlong line arriving after notice + close() draw nothing."""
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    term.mode_changed(True)
    term.set_handler(lambda line: None, lambda: "$ ")
    term.text_received("ab")
    wire.text()
    term.notify(Message.of("You have been logged out by root: bye"))
    term.close()
    assert wire.text().endswith("You have been logged out by root: bye\n")
    term.text_received("x\x1b[D")
    wire.width = 40
    term.resized()
    term.line_too_long(4096)
    term.interrupted()
    assert wire.text() == ""


@pytest.mark.parametrize("character", [False, True])
def test_no_message_after_the_goodbye(character: bool) -> None:
    """A wall reaching a kicked session in the same turn (or before the close completes)."""
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    if character:
        term.mode_changed(True)
    term.set_handler(lambda line: None, lambda: "$ ")
    wire.text()
    assert term.notify(Message.of("You have been logged out by root: bye"))
    term.close()
    assert not term.notify(Message.of("Broadcast from bob: hello"))
    text = wire.text()
    assert text.endswith("You have been logged out by root: bye\n")
    assert "Broadcast" not in text


def test_window_sizes_are_kept_within_spec_bounds() -> None:
    from shellserver.terminal.discipline import clamp_size

    assert clamp_size(1, 1) == (20, 5)
    assert clamp_size(80, 24) == (80, 24)
    assert clamp_size(65535, 65535) == (500, 200)
