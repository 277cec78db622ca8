"""The one way into a session for every wire, once the user is known.

Telnet (and the browser) reach it after the in-band login dialogue, SSH after
conch's authentication: both call :func:`begin` with an authenticated
:class:`Account`, and :func:`end` when the connection goes. Admission (the
pre-auth limits and the login timeout) and authentication stay with the
wire, because *when* a connection stops waiting to log in differs by wire.
"""

from __future__ import annotations

import enum
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Protocol

from attrs import field, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.hub.local import ClusterUnavailable, Message
from shellserver.hub.session import Session
from shellserver.ops.threads import Runner
from shellserver.ops.throttle import bucket_for
from shellserver.shell import people
from shellserver.shell.commands.registry import Services
from shellserver.shell.dispatch import Shell
from shellserver.shell.secondfactor import SecondFactor, enrol
from shellserver.shell.trouble import Trouble
from shellserver.store.accounts import UNAVAILABLE, Account
from shellserver.terminal.discipline import (
    Disconnected,
    EndOfInput,
    Interrupted,
    IWire,
    Redraws,
    Terminal,
)
from shellserver.text.sanitize import careful, careful_lines
from shellserver.text.timefmt import format_login_time

log = Logger()

#: What a user gets when the login record cannot be written (:meth:`unavailable`'s outcome).
LOGGED_IN_UNRECORDED = "logged in without a login record"
#: ``ssh host CMD`` by an account that must first enable a second factor (``--require-otp``).
ENROL_FIRST = (
    "A second factor is required for this account: log in with a terminal to enable it.\n"
)
#: Bytes of the motd read at most: a huge file must not fill every login's output.
MOTD_LIMIT = 16 * 1024


class Mode(enum.Enum):
    """What a seat is for: a shell until logout, or one command line (``ssh host CMD``)."""

    #: A prompt, the motd and the login notices, then the shell until logout.
    INTERACTIVE = "interactive"
    #: One command line (``ssh host CMD``): no prompt, no greeting.
    COMMAND = "command"


class Seat(Protocol):
    """A live connection as the server keeps it (:class:`Seats`): for the sessions'
    metrics, the shutdown's close of everyone, and the output held."""

    @property
    def wire(self) -> IWire:
        """Where the seat's bytes go: the metrics read its held output, the stop aborts it."""

    @property
    def terminal(self) -> Terminal:
        """The seat's line discipline: the stop closes it."""

    @property
    def session(self) -> Session | None:
        """The session, once logged in (the metrics count it by wire and role)."""


class Seats(set[Seat]):
    """Every live connection with a terminal (telnet's from connect, SSH's per session
    channel): the metrics read it when scraped, and the service's stop closes each."""

    def session_counts(self) -> dict[tuple[str, str], int]:
        """Logged-in sessions by (tty kind, role), for the metrics scrape."""
        counts: dict[tuple[str, str], int] = {}
        for seat in self:
            session = seat.session
            if session is not None:
                key = (session.tty.partition("/")[0], session.role)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def output_held_bytes(self) -> int:
        """Output held for clients that are not reading, over every connection (a scrape)."""
        return sum(getattr(seat.wire, "held_bytes", 0) for seat in self)


@frozen
class Motd:
    """The message of the day, read at each login (so an edit shows at once) off the reactor
    thread: a slow or huge file must not hold everyone else."""

    #: ``--motd``; None or empty: no message.
    path: str | None
    run_io: Runner

    async def read(self) -> str:
        """The text, sanitised, ending with a newline; empty when unreadable (logged)."""
        path = self.path
        if not path:
            return ""
        try:
            data: bytes = await self.run_io(_read_motd, path)
            text = data.decode("utf-8", "surrogateescape")
        except OSError as e:
            log.warn(
                "cannot read motd {path}: {error}", path=path, error=os.strerror(e.errno or 0)
            )
            return ""
        text = careful_lines(text)
        return text if text.endswith("\n") else text + "\n"


def _read_motd(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(MOTD_LIMIT)


@frozen
class SessionStart:
    """What every wire needs to seat a user, given by the assembly: the services its shell
    will use, the session limits, the greeting, and where the seat is counted."""

    #: What the session's shell hands its commands (and what a session start reads of them:
    #: hub, store, clock, homes, metrics, the shutdown).
    services: Services
    #: ``--max-sessions`` (0: no limit) and ``--on-max``.
    max_sessions: int
    on_max: str
    #: ``--cmd-rate`` and ``--cmd-burst``: each session's command bucket.
    cmd_rate: float
    cmd_burst: int
    motd: Motd
    trouble: Trouble
    #: Prompts drawn again after messages, once per reactor turn (each new Terminal's).
    redraws: Redraws
    seats: Seats
    #: ``--require-otp``: who must enable a second factor before the first prompt.
    second_factor: SecondFactor
    #: Session ids, unique in this process.
    ids: Iterator[int] = field(factory=lambda: itertools.count(1))

    def login_refusal(self, account: Account) -> str | None:
        """Why ``account`` may not log in now (a shutdown about to happen), or None; admins
        may still come in, to cancel it."""
        if account.is_admin:
            return None
        return self.services.shutdown.login_refusal()


async def begin(
    start: SessionStart,
    account: Account,
    terminal: Terminal,
    wire: IWire,
    mode: Mode = Mode.INTERACTIVE,
    still_wanted: Callable[[], bool] = lambda: True,
) -> Session | None:
    """Attach a session for ``account`` on ``terminal``; None when the login is refused.

    Applies the shutdown refusal and ``--max-sessions``/``--on-max``, records
    the login, and (interactive) greets with the motd, last login, shutdown
    notice and saved message count, then hands the terminal to the shell.
    ``still_wanted`` is asked once the login is recorded (the wire may have
    timed the connection out meanwhile); True means the wire counts it as
    logged in from now on. Store failures propagate (the caller says
    ``Service temporarily unavailable``).
    """
    name = account.name
    await start.services.hub.ready()  # a cluster node that has just started joins first
    refusal = start.login_refusal(account)
    if refusal:
        terminal.write(refusal + "\n")
        return None
    enrolling = await start.second_factor.must_enrol(account)
    if enrolling and mode is Mode.COMMAND:
        terminal.write(ENROL_FIRST)
        return None
    session_id = next(start.ids)
    if not await _make_room(start, terminal, wire, name, session_id):
        return None
    try:
        return await _start(
            start, account, terminal, wire, mode, still_wanted, session_id, enrolling
        )
    except BaseException:
        start.services.hub.release(name, session_id)
        raise


async def _start(
    start: SessionStart,
    account: Account,
    terminal: Terminal,
    wire: IWire,
    mode: Mode,
    still_wanted: Callable[[], bool],
    session_id: int,
    enrolling: bool = False,
) -> Session | None:
    name = account.name
    services = start.services
    ignores, new_messages, previous = await people.session_starting(start.services.store, name)
    motd = await start.motd.read() if mode is Mode.INTERACTIVE else ""
    if not terminal.connected:  # gone while the store answered: allocate nothing
        start.services.hub.release(name, session_id)
        return None
    tty = await services.hub.allocate_tty(wire.kind)
    now = services.clock.seconds()
    session = Session(
        id=session_id,
        node=services.hub.node,
        user=name,
        role=account.role,
        tty=tty,
        peer=wire.peer,
        term=wire.term,
        login_time=now,
        terminal=terminal,
        last_active=now,
        bucket=bucket_for(start.cmd_rate, start.cmd_burst),
    )
    if not services.hub.sessions_of_now(name):
        # The user's first session: their home is measured again before their first
        # command (files an operator put there count; docs/files.md).
        services.homes.measure_again(name)
    await people.attach(services.hub, session, ignores)
    try:
        session.login_record = await services.store.record_login(
            name, session.tty, session.peer, now
        )
    except UNAVAILABLE as e:
        # The disk is full (or failing): let the user in all the same, without a record, so
        # they can delete files; `last` will not show this login.
        start.trouble.unavailable(e, "recording a login", LOGGED_IN_UNRECORDED)
    except BaseException:
        await services.hub.detach(session)
        raise
    if not terminal.connected or not still_wanted():
        # Gone, or timed out, while the login was recorded: close the record too.
        _record_logout(start, session)
        await services.hub.detach(session)
        return None
    log.info(
        "{user} logged in on {tty} from {peer}",
        event="login",
        user=name,
        role=account.role,
        tty=session.tty,
        peer=session.peer,
        wire=wire.kind,
    )
    if mode is Mode.INTERACTIVE:
        terminal.write(motd)
        if previous is None:
            terminal.write("This is your first login.\n")
        else:
            when = format_login_time(previous.login)
            terminal.write(f"Last login: {when} from {careful(previous.peer)}\n")
        terminal.write(services.shutdown.login_notice())
        terminal.write(new_messages)
        shell = Shell(services, session, terminal)
        terminal.on_eof = shell.logout
        if enrolling:
            d = Deferred.fromCoroutine(_enrol_then_shell(start, account, terminal, shell))
            d.addErrback(_enrolment_failed, start.trouble, terminal)
        else:
            terminal.set_handler(shell.line, shell.prompt, shell.complete)
    return session


async def _enrol_then_shell(
    start: SessionStart, account: Account, terminal: Terminal, shell: Shell
) -> None:
    """``--require-otp``: the enable steps in place of the shell; the prompt only after them.
    Refused (or given up), the session ends; a hang-up meanwhile simply ends it."""
    try:
        done = await enrol(start.second_factor, account, terminal.write, terminal.read_line)
    except (Disconnected, EndOfInput, Interrupted):
        done = False
    if not terminal.connected:
        return
    if done:
        terminal.set_handler(shell.line, shell.prompt, shell.complete)
    else:
        terminal.close()


def _enrolment_failed(failure: Failure, trouble: Trouble, terminal: Terminal) -> None:
    error = failure.value
    if failure.check(*UNAVAILABLE) is not None and error is not None:
        trouble.unavailable(error, "enabling a second factor", "session closed")
    else:
        log.failure("enabling a second factor failed", failure)
    terminal.close()


async def _make_room(
    start: SessionStart, terminal: Terminal, wire: IWire, name: str, session_id: int
) -> bool:
    """Apply ``--max-sessions``/``--on-max``: refuse, or end the oldest sessions (on
    whichever node they are)."""
    limit = start.max_sessions
    if not limit:
        return True
    services = start.services
    replace = start.on_max != "refuse"
    older = await services.hub.admit(name, session_id, limit, replace)
    if older is None:
        terminal.write(f"Too many sessions for {name} (limit {limit}); log out elsewhere first.\n")
        return False
    notice = Message.of(f"\nSession replaced by a new login from {careful(wire.peer)}.")
    for old in older:
        await services.hub.end_session(old, notice)
    return True


def end(start: SessionStart, session: Session, wire: IWire) -> None:
    """The connection of ``session`` is gone: detach it, leave its rooms, record the logout."""
    services = start.services
    d = services.hub.detach(session)
    d.addErrback(lambda f: log.failure("detaching {tty} failed", f, tty=session.tty))
    ended = Deferred.fromCoroutine(people.session_ended(services.hub, services.metrics, session))
    ended.addErrback(_ending_failed, session)
    _record_logout(start, session)
    log.info(
        "{user} logged out from {tty}",
        event="logout",
        user=session.user,
        tty=session.tty,
        peer=session.peer,
        wire=wire.kind,
    )


def _ending_failed(failure: Failure, session: Session) -> None:
    # Clustered and Redis unreachable: the node tidies its rooms when it reconnects.
    if failure.check(ClusterUnavailable) is None:
        log.failure("ending {tty} failed", failure, tty=session.tty)


def _record_logout(start: SessionStart, session: Session) -> None:
    services = start.services
    if session.login_record is not None:
        d = services.store.record_logout(session.login_record, services.clock.seconds())
        d.addErrback(_logout_not_recorded, start.trouble)


def _logout_not_recorded(failure: Failure, trouble: Trouble) -> None:
    error = failure.value
    if failure.check(*UNAVAILABLE) is None or error is None:
        log.failure("recording logout failed", failure)
    else:  # disk full: one line a minute, not a traceback per logout
        trouble.unavailable(error, "recording a logout", "logout time not recorded")
