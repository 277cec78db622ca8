"""The terminal's life machine: its docstring table is the machine Automat builds, and
each state is what a terminal driven through real lines, commands and backlogs shows."""

from __future__ import annotations

import weakref
from typing import Any

import machinetable
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer

from shellserver.terminal import lifecycle
from shellserver.terminal.discipline import IWire, Redraws, Terminal
from shellserver.text.message import Message

STATES = {"ready", "running", "backlogged", "closing", "closed"}
INPUTS = {"started", "finished", "stalled", "drained", "close", "lost"}


def documented() -> set[tuple[str, str, str, str]]:
    """The rows of lifecycle's docstring table: (state, input, next, output)."""
    return machinetable.documented(lifecycle)


def test_the_docstring_table_is_the_machine() -> None:
    machinetable.assert_table_is_machine(lifecycle, lifecycle.LifeMachine, STATES, INPUTS)


def test_each_transition_names_its_state() -> None:
    """``state`` (what the terminal's hot paths read) is what the machine entered."""

    class Core:
        state = "ready"
        closed = ended = 0

        def _begin_closing(self) -> None:
            self.closed += 1

        def _end(self) -> None:
            self.ended += 1

    into = {
        "ready": [],
        "running": ["started"],
        "backlogged": ["stalled"],
        "closing": ["close"],
        "closed": ["lost"],
    }
    for state, symbol, new, what in documented():
        core = Core()
        machine = lifecycle.LifeMachine(core)
        for step in [*into[state], symbol]:
            getattr(machine, step)()
        assert core.state == new, (state, symbol)
        steps = [*into[state], symbol]
        assert core.closed == (what == "begin_closing") + (into[state] == ["close"])
        assert core.ended == ("lost" in steps and state != "closed") + (state == "closed")


@implementer(IWire)
class Wire:
    """A wire whose backlog the test sets, and whose drain it fires."""

    kind = "tel"
    peer = "127.0.0.1"
    width = 80
    height = 24
    term = ""

    def __init__(self) -> None:
        self.backlogged = False
        self.out: list[str] = []
        self.drains: list[Deferred[None]] = []
        self.closed = False

    def send(self, text: str) -> None:
        self.out.append(text)

    def send_message(self, lead: str, message: Message, after: str = "") -> bool:
        if self.backlogged:
            return False
        self.out.append(lead + message.text + after)
        return True

    def drain(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.drains.append(d)
        return d

    def set_echo(self, on: bool) -> None:
        pass

    def session_started(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        pass


def test_a_terminal_walks_the_machine() -> None:
    """Lines, an asynchronous command, a backlog, close and loss move ``state`` as the
    table says; a command that finishes at once never leaves ``ready``."""
    wire = Wire()
    terminal = Terminal(wire, Redraws(Clock()))
    pending: list[Deferred[None]] = []
    ran: list[str] = []

    def handler(line: str) -> Deferred[Any] | None:
        ran.append(line)
        if line == "slow":
            d: Deferred[None] = Deferred()
            pending.append(d)
            return d
        return None

    terminal.set_handler(handler, lambda: "$ ")
    assert terminal.state == "ready"
    terminal.line_received("fast")
    assert (ran, terminal.state) == (["fast"], "ready")
    assert terminal._machine is None  # a command that finishes at once makes none
    terminal.line_received("slow")
    assert terminal.state == "running"
    terminal.line_received("after")  # waits as typeahead
    assert ran == ["fast", "slow"]
    wire.backlogged = True
    pending.pop().callback(None)
    assert (ran, terminal.state, len(wire.drains)) == (["fast", "slow"], "backlogged", 1)
    wire.backlogged = False
    wire.drains.pop().callback(None)
    assert (ran, terminal.state) == (["fast", "slow", "after"], "ready")
    assert terminal._machine is None  # back in ready: an idle session holds no machine
    assert terminal._live
    terminal.close()
    assert (terminal.state, wire.closed, terminal.connected) == ("closing", True, True)
    assert not terminal._live
    assert terminal.notify(Message.of("late")) is False
    terminal.connection_lost()
    assert (terminal.state, terminal.connected) == ("closed", False)
    terminal.close()  # late: nothing
    assert terminal.state == "closed"


def test_a_waiting_command_takes_the_machines_transitions_without_feeding_it() -> None:
    """A command that waits (a cross-node ``write`` waits for Redis) goes ``ready`` ->
    ``running`` -> ``ready`` by the transitions read from Automat's table, without making or
    feeding a machine (two Automat inputs cost more than such a command). Anything else that
    happens meanwhile gets a machine brought to ``running`` first, so the table still rules."""
    assert (lifecycle.STARTED_FROM_READY, lifecycle.FINISHED_FROM_RUNNING) == ("running", "ready")
    wire = Wire()
    terminal = Terminal(wire, Redraws(Clock()))
    pending: list[Deferred[None]] = []

    def handler(line: str) -> Deferred[Any] | None:
        d: Deferred[None] = Deferred()
        pending.append(d)
        return d

    terminal.set_handler(handler, lambda: "$ ")
    terminal.line_received("write bob@elsewhere hi")
    assert (terminal.state, terminal._machine) == ("running", None)
    pending.pop().callback(None)
    assert (terminal.state, terminal._machine) == ("ready", None)
    terminal.line_received("write bob@elsewhere again")
    terminal.close()  # while it waits: the machine is made in running, then closes
    assert terminal.state == "closing" and terminal._machine is not None
    pending.pop().callback(None)  # finishing now changes nothing: closing ignores it
    assert terminal.state == "closing"
    terminal.connection_lost()
    assert terminal.state == "closed"


def test_a_lost_terminal_holds_no_cycle_through_its_machine() -> None:
    """Once the connection is gone, reference counting alone frees the terminal (and
    what it holds): the machine no longer points back at it."""
    import gc

    wire = Wire()
    terminal = Terminal(wire, Redraws(Clock()))
    ref = weakref.ref(wire)  # held by the terminal only, once the test lets go of it
    del wire
    terminal.connection_lost()
    gc.disable()
    try:
        del terminal
        assert ref() is None
    finally:
        gc.enable()


def test_end_of_input_while_closing_does_not_log_out() -> None:
    """Once closing, the client's ^D or channel EOF runs no logout: its "logout" would
    come after the goodbye, which must stay the last thing shown."""
    terminal = Terminal(Wire(), Redraws(Clock()))
    terminal.set_handler(lambda line: None, lambda: "$ ")
    logouts: list[int] = []
    terminal.on_eof = lambda: logouts.append(1)
    terminal.close()
    terminal.eof_received()
    assert logouts == []
    other = Terminal(Wire(), Redraws(Clock()))
    other.set_handler(lambda line: None, lambda: "$ ")
    other.on_eof = lambda: logouts.append(2)
    other.eof_received()
    assert logouts == [2]
