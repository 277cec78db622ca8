"""A terminal's life as a state machine (Automat, as Twisted's own ``ClientService``).

The terminal (:mod:`shellserver.terminal.discipline`) runs the shell's commands one at a
time and ends when its connection does. This machine holds what that life has reached:
whether a command is running, whether the next one waits for the client to read, and
whether the session is ending. Its inputs are what the terminal sees happen: a command
``started`` (its handler returned a Deferred) or ``finished``; the next line ``stalled``
(the client is not reading our output) or the client ``drained`` it; ``close()``; the
connection ``lost``.

Every state answers every input, so a late report (a drain asked for before the
session closed, a command that ends after its connection) is never an error. The table
is the whole machine (tests/test_terminal_lifecycle.py checks it against the built one):

==========  ========  ==========  ========================================================
state       input     next        what happens
==========  ========  ==========  ========================================================
ready       started   running     command_started: typed lines wait as typeahead
ready       finished  ready       nothing
ready       stalled   backlogged  waiting_for_client: the next line waits for the drain
ready       drained   ready       nothing (a drain asked before a line ran anyway)
ready       close     closing     begin_closing: typeahead dropped, the held message out,
                                  the wire closed after its pending output
ready       lost      closed      end: the reader fails, callbacks and shell let go
running     started   running     nothing
running     finished  ready       command_done: the next line or the prompt
running     stalled   running     nothing
running     drained   running     nothing
running     close     closing     begin_closing
running     lost      closed      end
backlogged  started   running     command_started (the client read before the drain fired)
backlogged  finished  backlogged  nothing
backlogged  stalled   backlogged  nothing: one drain asked per backlog
backlogged  drained   ready       client_reading: the waiting lines may run
backlogged  close     closing     begin_closing
backlogged  lost      closed      end
closing     started   closing     nothing
closing     finished  closing     nothing
closing     stalled   closing     nothing
closing     drained   closing     nothing
closing     close     closing     nothing
closing     lost      closed      end
closed      started   closed      nothing
closed      finished  closed      nothing
closed      stalled   closed      nothing
closed      drained   closed      nothing
closed      close     closed      nothing
closed      lost      closed      nothing
==========  ========  ==========  ========================================================

What is deliberately *not* a state here, because it is crossed on every line or
keystroke and an Automat input costs about a microsecond (a whole ``mesg`` command
costs four): the prompt being shown (``Terminal._prompt``, its text), a command that
finishes at once (the shell's common case runs inside ``ready``), and a question
asked by ``read_line`` (``Terminal._reader``): it is asked both before the shell
(login) and inside a running command, and answering it returns to the state it was
asked in. Line or character mode is which objects exist (the editor), not a state.

The terminal's hot paths read ``Terminal.state`` (set by the outputs below, one
attribute), and ``Terminal._live`` (not ``closing`` nor ``closed``, written by the
same outputs), instead of calling the machine. All inputs return None, so Automat queues
one made from inside a transition (``end`` failing a reader whose command calls
``close()``) and runs it after the current one.
"""

from __future__ import annotations

from typing import Protocol

from automat import TypeMachineBuilder

READY = "ready"
RUNNING = "running"
BACKLOGGED = "backlogged"
CLOSING = "closing"
CLOSED = "closed"
#: The states in which the next line may run (backlogged: once the client reads again).
TAKES_LINES = frozenset({READY, BACKLOGGED})
#: The states after ``close()`` or the connection's end: nothing more is shown.
ENDED = frozenset({CLOSING, CLOSED})


class LifeInputs(Protocol):
    """What can happen in a terminal's life (see the module's table)."""

    def started(self) -> None:
        """A command's handler returned a Deferred: it runs on after this turn."""

    def finished(self) -> None:
        """That Deferred fired: the command is over."""

    def stalled(self) -> None:
        """A line could run, but the client is not reading the output already sent."""

    def drained(self) -> None:
        """The client read what was sent (the wire's ``drain()`` fired)."""

    def close(self) -> None:
        """Someone ends the session (logout, kick, lock, idle, shutdown)."""

    def lost(self) -> None:
        """The connection is gone."""


class LifeCore(Protocol):
    """What the machine asks of the terminal; :class:`~shellserver.terminal.discipline.
    Terminal` implements it, privately. ``state`` is written here only."""

    state: str

    def _begin_closing(self) -> None:
        """Drop typeahead, send a held message, close the wire after pending output."""

    def _end(self) -> None:
        """Mark the terminal disconnected, fail a pending read, let go of the shell."""


_builder = TypeMachineBuilder(LifeInputs, LifeCore)  # type: ignore[type-abstract]
ready = _builder.state(READY)
running = _builder.state(RUNNING)
backlogged = _builder.state(BACKLOGGED)
closing = _builder.state(CLOSING)
closed = _builder.state(CLOSED)

ready.upon(LifeInputs.finished).loop().returns(None)
ready.upon(LifeInputs.drained).loop().returns(None)
running.upon(LifeInputs.started).loop().returns(None)
running.upon(LifeInputs.stalled).loop().returns(None)
running.upon(LifeInputs.drained).loop().returns(None)
backlogged.upon(LifeInputs.finished).loop().returns(None)
backlogged.upon(LifeInputs.stalled).loop().returns(None)
for _input in (
    LifeInputs.started,
    LifeInputs.finished,
    LifeInputs.stalled,
    LifeInputs.drained,
    LifeInputs.close,
):
    closing.upon(_input).loop().returns(None)
for _input in (
    LifeInputs.started,
    LifeInputs.finished,
    LifeInputs.stalled,
    LifeInputs.drained,
    LifeInputs.close,
    LifeInputs.lost,
):
    closed.upon(_input).loop().returns(None)


@ready.upon(LifeInputs.started).to(running)
@backlogged.upon(LifeInputs.started).to(running)
def command_started(inputs: LifeInputs, core: LifeCore) -> None:
    """A command runs on past this turn: lines typed meanwhile wait."""
    core.state = RUNNING


@running.upon(LifeInputs.finished).to(ready)
def command_done(inputs: LifeInputs, core: LifeCore) -> None:
    """The command is over: the next line or the prompt may come."""
    core.state = READY


@ready.upon(LifeInputs.stalled).to(backlogged)
def waiting_for_client(inputs: LifeInputs, core: LifeCore) -> None:
    """The client is not reading: no command runs until it does."""
    core.state = BACKLOGGED


@backlogged.upon(LifeInputs.drained).to(ready)
def client_reading(inputs: LifeInputs, core: LifeCore) -> None:
    """The client read again: waiting lines may run."""
    core.state = READY


@ready.upon(LifeInputs.close).to(closing)
@running.upon(LifeInputs.close).to(closing)
@backlogged.upon(LifeInputs.close).to(closing)
def begin_closing(inputs: LifeInputs, core: LifeCore) -> None:
    """The session ends: nothing more is shown, the wire closes after its output."""
    core.state = CLOSING
    core._begin_closing()


@ready.upon(LifeInputs.lost).to(closed)
@running.upon(LifeInputs.lost).to(closed)
@backlogged.upon(LifeInputs.lost).to(closed)
@closing.upon(LifeInputs.lost).to(closed)
def end(inputs: LifeInputs, core: LifeCore) -> None:
    """The connection is gone: the terminal lets go of everything."""
    core.state = CLOSED
    core._end()


#: ``LifeMachine(terminal)`` is a new terminal's machine, in ``ready``.
LifeMachine = _builder.build()


def _waits() -> tuple[str, str]:
    """The two transitions every command that waits makes (``ready`` --started--> and back
    --finished-->), read from Automat's own table: a terminal without a machine takes them
    as this lookup says, because feeding Automat two inputs per waiting command cost more than
    the command (a cross-node ``write`` waits for Redis; docs/performance.md). They are pure
    state changes, the outputs' only effect is ``core.state``, which the table below checks."""
    table = {
        (old.name, symbol): (new.name, [o.name for o in outputs])
        for old, symbol, new, outputs in LifeMachine.__automat_automaton__.allTransitions()
    }
    run, run_outputs = table[(READY, "started")]
    back, back_outputs = table[(RUNNING, "finished")]
    assert run_outputs == ["command_started"] and back_outputs == ["command_done"]
    ours = {name: name for name in (READY, RUNNING, BACKLOGGED, CLOSING, CLOSED)}
    return ours[run], ours[back]  # our own constants: the terminal compares them with ``is``


#: Where ``started`` takes a machine-less ``ready`` terminal, and where ``finished`` brings a
#: machine-less ``running`` one back: ``running`` and ``ready``, as the machine would.
STARTED_FROM_READY, FINISHED_FROM_RUNNING = _waits()


class _Ended:
    """The core of :data:`ENDED_MACHINE`: a terminal whose life is over, holding nothing."""

    state = CLOSED

    def _begin_closing(self) -> None:
        pass

    def _end(self) -> None:
        pass


#: A machine in ``closed`` that refers to no terminal, shared by all of them. A machine
#: and its terminal point at each other, a cycle only the garbage collector could free
#: (a full collection at thousands of sessions stalls every one of them); so once the
#: connection is lost a terminal swaps its own machine for this one, which answers
#: every input with nothing, as ``closed`` does.
ENDED_MACHINE: LifeInputs = LifeMachine(_Ended())
ENDED_MACHINE.lost()
