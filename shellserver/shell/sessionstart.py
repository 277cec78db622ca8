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
from typing import Literal, Protocol

from attrs import Factory, field, frozen
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.hub.local import ClusterUnavailable, Message
from shellserver.hub.record import SessionInfo
from shellserver.hub.session import Session
from shellserver.ops.threads import Runner
from shellserver.ops.throttle import bucket_for
from shellserver.shell import parking, people
from shellserver.shell.commands.registry import Services
from shellserver.shell.detach import (
    RESUME_ONE,
    RESUME_WHICH,
    HeldOutput,
    Lingering,
    idle_words,
)
from shellserver.shell.dispatch import Shell
from shellserver.shell.resume import ResumeChannel, ResumeTokens
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
#: Seconds the resume question waits for an answer before the connection is closed.
RESUME_TIMEOUT = 60.0
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
    #: ``--linger``: how long a session whose connection was lost waits, detached, to be
    #: resumed (0: it ends with its connection).
    linger: float = 0.0
    #: ``--max-output``: what a detached session holds at most.
    max_output: int = 256 * 1024
    #: The browser pages' resume tokens, one per session at most (``resume.py``).
    tokens: ResumeTokens = field(
        default=Factory(lambda self: ResumeTokens(self.linger), takes_self=True)
    )
    #: When each detached session's linger is over: one heap for the node.
    lingering: Lingering = field(
        default=Factory(lambda self: Lingering(self.services.clock), takes_self=True)
    )
    #: How a held port ends its session: one bound method shared by every held port.
    held_end: Callable[[HeldOutput], None] = field(
        default=Factory(lambda self: self.end_held, takes_self=True)
    )

    def end_held(self, held: HeldOutput) -> None:
        """The detached session whose port is ``held`` ends unresumed (found by its user, so
        no port holds its session: no cycle for the collector)."""
        for session in self.services.hub.detached_here(held.user):
            if session.terminal is held:
                end_detached(self, session, held, held.kind)
                return
        held.let_go()  # not in the table any more: nothing else to end

    def hold(
        self,
        session: Session,
        history: list[str],
        line: str,
        width: int,
        height: int,
        kind: str,
        until: float,
    ) -> HeldOutput:
        """A held port for ``session`` until ``until``, watched by the node's heap."""
        held = HeldOutput(
            width,
            height,
            self.max_output,
            session.user,
            kind,
            self.held_end,
            self.services.clock,
            tuple(history),
            line,
            until=until,
        )
        self.lingering.add(held)
        return held

    def login_refusal(self, account: Account, peer: str = "", key: str = "") -> str | None:
        """Why ``account`` may not log in now, or None: a ban (of the address, the user, or
        the SSH key it logged in with), or a shutdown about to happen, which admins may
        still come in through, to cancel it."""
        return self.refusal(account.name, account.is_admin, peer, key)

    def refusal(self, user: str, is_admin: bool, peer: str, key: str) -> str | None:
        """:meth:`login_refusal` by name and role: a resume by token has a session, not an
        account, and must meet the same bans and shutdown."""
        banned = self.services.bans.login_refusal(user, peer, key)
        if banned is not None:
            return banned
        if is_admin:
            return None
        return self.services.shutdown.login_refusal()


async def begin(
    start: SessionStart,
    account: Account,
    terminal: Terminal,
    wire: IWire,
    mode: Mode = Mode.INTERACTIVE,
    still_wanted: Callable[[], bool] = lambda: True,
    key: str = "",
) -> Session | None:
    """Attach a session for ``account`` on ``terminal``; None when the login is refused.
    ``key`` is the fingerprint of the SSH key it logged in with ("" for a password).

    Applies the bans, the shutdown refusal and ``--max-sessions``/``--on-max``, records
    the login, and (interactive) greets with the motd, last login, shutdown
    notice and saved message count, then hands the terminal to the shell.
    ``still_wanted`` is asked once the login is recorded (the wire may have
    timed the connection out meanwhile); True means the wire counts it as
    logged in from now on. Store failures propagate (the caller says
    ``Service temporarily unavailable``).
    """
    name = account.name
    await start.services.hub.ready()  # a cluster node that has just started joins first
    refusal = start.login_refusal(account, wire.peer, key)
    if refusal:
        terminal.write(refusal + "\n")
        return None
    # Before any resume: a session detached while it was enrolling must not be a way to a
    # prompt without the second factor.
    enrolling = await start.second_factor.must_enrol(account)
    if enrolling and mode is Mode.COMMAND:
        terminal.write(ENROL_FIRST)
        return None
    known: parking.LoginState | None = None  # read with the parked sessions, if still true
    if mode is Mode.INTERACTIVE and start.linger > 0 and not enrolling:
        resumed = await _offer_resume(start, account, terminal, wire, still_wanted, key)
        if isinstance(resumed, Session):
            return resumed
        if resumed is False:
            return None
        known = resumed if isinstance(resumed, tuple) else None
    session_id = next(start.ids)
    if not await _make_room(start, terminal, wire, name, session_id):
        return None
    try:
        return await _start(
            start, account, terminal, wire, mode, still_wanted, session_id, key, enrolling, known
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
    key: str,
    enrolling: bool = False,
    known: parking.LoginState | None = None,
) -> Session | None:
    name = account.name
    services = start.services
    ignores, new_messages, previous = await people.session_starting(
        start.services.store, name, known
    )
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
        key=key,
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
            d = Deferred.fromCoroutine(_enrol_then_shell(start, account, terminal, shell, wire))
            d.addErrback(_enrolment_failed, start.trouble, terminal)
        else:
            terminal.set_handler(shell.line, shell.prompt, shell.complete)
            _give_token(start, shell.session, wire)
    return session


def _give_token(start: SessionStart, session: Session, wire: IWire) -> None:
    """A new resume token for a client that takes them (the browser page), which it
    presents if its socket drops; any token the session had before is worthless now.
    Only once the session has its shell: never to one still enrolling a second factor."""
    if start.linger > 0 and isinstance(wire, ResumeChannel) and wire.takes_tokens:
        wire.send_token(start.tokens.issue(session))
    else:
        start.tokens.forget(session)


async def _enrol_then_shell(
    start: SessionStart, account: Account, terminal: Terminal, shell: Shell, wire: IWire
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
        _give_token(start, shell.session, wire)
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


def lost(
    start: SessionStart, session: Session, terminal: Terminal, wire: IWire, interactive: bool
) -> None:
    """The connection of ``session`` is gone. Lost by the client (not closed by the server)
    from an interactive session with ``--linger`` on: the session waits, detached, to be
    resumed; otherwise it ends."""
    if interactive and start.linger > 0 and terminal.dropped and session.terminal is terminal:
        _detach(start, session, terminal, wire.kind)
    elif session.terminal is terminal:  # else it was resumed elsewhere and lives on
        end(start, session, wire)


def _detach(start: SessionStart, session: Session, terminal: Terminal, kind: str) -> None:
    services = start.services
    history, line = terminal.leftover()
    now = services.clock.seconds()
    held = start.hold(
        session, history, line, terminal.width, terminal.height, kind, now + start.linger
    )
    session.terminal = held
    session.detached_at = now
    d = services.hub.changed(session)
    d.addErrback(lambda f: None)  # clustered and Redis away: published when it is back
    log.info(
        "{user} detached from {tty}; kept {linger:.0f} s",
        event="detach",
        user=session.user,
        tty=session.tty,
        peer=session.peer,
        wire=kind,
        linger=start.linger,
    )


def end_detached(start: SessionStart, session: Session, held: HeldOutput, kind: str) -> None:
    """The detached session ends unresumed (linger over, ``n``, kick, lock, idle, shutdown):
    its held ``write`` messages go to the mailbox, then it ends as any session does."""
    mail = held.mail()
    held.let_go()
    services = start.services
    for w in mail:
        body = people.to_blob(w.text)
        d = people.run(services.store, people.save_message, session.user, w.sender, body, w.sent)
        d.addErrback(lambda f: log.failure("saving a held message failed", f))
    _ended(start, session, kind)


async def _offer_resume(
    start: SessionStart,
    account: Account,
    terminal: Terminal,
    wire: IWire,
    still_wanted: Callable[[], bool],
    key: str,
) -> Session | Literal[False] | parking.LoginState | None:
    """Ask about this user's detached sessions, on this node and (clustered) on the others:
    the resumed session, False when the login was abandoned meanwhile, None for a new
    session (``n``: the detached one then ends), or, when nothing was detached and no
    question asked, what the new session's start reads from the store, read in the same
    trip as the parked sessions."""
    services = start.services
    hub = services.hub
    # Sessions parked by a node that is not running (drained, stopped), or handed over to
    # this one, become this node's detached ones first, so one question covers them all.
    rows, state = await parking.take_for(start, account.name)
    for row in rows:
        await parking.take(start, row)
    waiting: list[SessionInfo] = list(hub.detached_here(account.name))
    waiting += [s for s in hub.sessions_of_now(account.name) if s.detached and s.node != hub.node]
    if not waiting:
        return None if rows else state
    now = services.clock.seconds()
    if len(waiting) == 1:
        s = waiting[0]
        answer = await _ask(
            start, terminal, RESUME_ONE.format(tty=s.tty, idle=idle_words(s.idle(now)))
        )
        choice = None if answer.strip().lower() in ("n", "no") else s
    else:
        terminal.write(f"You have {len(waiting)} detached sessions:\n")
        for i, s in enumerate(waiting, 1):
            terminal.write(f"  {i}  {s.tty} (idle {idle_words(s.idle(now))})\n")
        choice = None
        while True:
            answer = (await _ask(start, terminal, RESUME_WHICH)).strip().lower()
            if answer in ("n", "no"):
                break
            if answer in ("", "y", "yes"):
                answer = "1"
            if answer.isdigit() and 1 <= int(answer) <= len(waiting):
                choice = waiting[int(answer) - 1]
                break
            terminal.write(f"Answer a number from 1 to {len(waiting)}, or n for a new session.\n")
    if choice is None:
        if len(waiting) == 1:  # n: that one ends, its held writes saved as mail
            await _end_detached_anywhere(start, waiting[0])
        return None
    session = choice if isinstance(choice, Session) else None
    if session is None:  # on another node: it parks it for us, and we take it
        session = await parking.fetch(start, choice, account.name)
        if session is None:
            terminal.write("That session could not be taken over; starting a new one.\n")
            return None
    held = session.terminal
    if not isinstance(held, HeldOutput) or held.done:
        return None  # ended while the user answered: a new session
    if not terminal.connected or not still_wanted():
        return False
    resume(start, session, terminal, wire, key, "question")
    return session


async def _end_detached_anywhere(start: SessionStart, s: SessionInfo) -> None:
    if isinstance(s, Session):
        s.terminal.close()
    else:  # its node ends it, and saves its held writes there
        await start.services.hub.end_session(s, None)


async def _ask(start: SessionStart, terminal: Terminal, question: str) -> str:
    """The resume question, answered within ``RESUME_TIMEOUT``: an SSH login has no login
    timeout left by then, and a connection must not wait at the question for ever."""
    d = terminal.read_line(question)
    d.addTimeout(RESUME_TIMEOUT, start.services.clock)
    try:
        return await d
    except Interrupted:  # ^C: no, a new session
        return "n"
    except defer.TimeoutError:
        terminal.write(f"\nNo answer in {RESUME_TIMEOUT:.0f} seconds.\n")
        terminal.close()
        raise Disconnected() from None


async def resume_by_token(
    start: SessionStart,
    token: str,
    terminal: Terminal,
    wire: IWire,
    still_wanted: Callable[[], bool] = lambda: True,
) -> Session | bool | None:
    """The session a browser page's resume token names, resumed on this connection without a
    login or a question: the session; False when the resume is refused after all (a ban, a
    shutdown: said on the terminal) or the connection went meanwhile; None when the token
    is not a live one (the caller counts and logs that, and asks for a login)."""
    services = start.services
    await services.hub.ready()
    session = start.tokens.take(token, services.clock.seconds())
    if session is None or not _resumable(session):
        return None
    refusal = start.refusal(session.user, session.is_admin, wire.peer, "")
    if refusal:
        terminal.write(refusal + "\n")
        return False
    if not terminal.connected or not still_wanted():
        return False
    terminal.write("\n")  # below whatever the page still shows of the session
    resume(start, session, terminal, wire, "", "token")
    return session


def _resumable(session: Session) -> bool:
    """Still there to resume: detached and waiting, or shown by a connection the server has
    not yet seen go (a browser's dropped socket is often noticed only by the browser)."""
    port = session.terminal
    if isinstance(port, HeldOutput):
        return not port.done
    return isinstance(port, Terminal) and port.live


#: What a connection shows when a browser page's token takes its session away from it.
TAKEN_OVER = "\nThis session was resumed from another connection.\n"


def resume(
    start: SessionStart,
    session: Session,
    terminal: Terminal,
    wire: IWire,
    key: str,
    via: str,
) -> None:
    """Give ``session`` the new connection's terminal: the one way back, whether the user
    answered the question (``via`` ``question``) or a page presented its token
    (``token``). The held output is shown framed, then the prompt and the half-typed line
    come back; a session still shown by a connection the server did not yet see go is
    taken from it (that connection is told and closed, and the session lives on)."""
    services = start.services
    port = session.terminal
    old: Terminal | None = None
    if isinstance(port, HeldOutput):
        held = port
        framed, (history, line) = held.framed(), (list(held.history), held.line)
        held.let_go()
    else:
        assert isinstance(port, Terminal)  # _resumable said so
        old = port
        framed, (history, line) = "", old.leftover()
    session.terminal = terminal
    session.detached_at = None
    session.peer = wire.peer
    session.term = wire.term
    session.key = key  # a ban of the key it now uses ends it
    d = services.hub.changed(session)
    d.addErrback(lambda f: None)  # clustered and Redis away: published when it is back
    log.info(
        "{user} resumed {tty} from {peer}",
        event="resume",
        user=session.user,
        tty=session.tty,
        peer=session.peer,
        wire=wire.kind,
        via=via,
    )
    if old is not None:  # after the session moved: its close ends nothing now
        old.write(TAKEN_OVER)
        old.close()
    terminal.write(framed)
    shell = Shell(services, session, terminal)
    terminal.on_eof = shell.logout
    terminal.set_handler(shell.line, shell.prompt, shell.complete)
    terminal.resume_input(history, line)
    _give_token(start, session, wire)


def end(start: SessionStart, session: Session, wire: IWire) -> None:
    """The connection of ``session`` is gone: detach it, leave its rooms, record the logout."""
    _ended(start, session, wire.kind)


def _ended(start: SessionStart, session: Session, kind: str) -> None:
    services = start.services
    start.tokens.forget(session)
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
        wire=kind,
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
