"""The one way into a session for every wire, once the user is known.

Telnet (and the browser) reach it after the in-band login dialogue, SSH after
conch's authentication: both call :func:`begin` with an authenticated
:class:`Account`, and :func:`end` when the connection goes. Admission (the
pre-auth limits and the login timeout) and authentication stay with the
wire, because *when* a connection stops waiting to log in differs by wire.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.hub.local import ClusterUnavailable, Message
from shellserver.hub.session import Session
from shellserver.ops.throttle import bucket_for
from shellserver.shell import people
from shellserver.shell.commands.registry import Services
from shellserver.shell.dispatch import Shell
from shellserver.store.accounts import UNAVAILABLE, Account
from shellserver.terminal.discipline import IWire, Terminal
from shellserver.text.sanitize import careful
from shellserver.text.timefmt import format_login_time

if TYPE_CHECKING:
    from shellserver.terminal.discipline import Redraws

log = Logger()

#: What a user gets when the login record cannot be written (:meth:`unavailable`'s outcome).
LOGGED_IN_UNRECORDED = "logged in without a login record"


class Mode(enum.Enum):
    #: A prompt, the motd and the login notices, then the shell until logout.
    INTERACTIVE = "interactive"
    #: One command line (``ssh host CMD``): no prompt, no greeting.
    COMMAND = "command"


class Seat(Protocol):
    """A live connection as the server keeps it (``Server.connections``): for ``who``'s
    metrics, the shutdown's close of everyone, and the output held."""

    @property
    def wire(self) -> IWire: ...

    @property
    def terminal(self) -> Terminal: ...

    @property
    def session(self) -> Session | None: ...


class SessionServices(Services, Protocol):
    """What starting and ending a session use of the running server (``Server`` provides it)."""

    redraws: Redraws
    connections: set[Seat]

    def next_id(self) -> int: ...

    async def motd(self) -> str: ...

    def login_refusal(self, account: Account) -> str | None: ...

    def login_notice(self) -> str: ...

    def unavailable(
        self, error: BaseException, doing: str, outcome: str = "service unavailable"
    ) -> None: ...


async def begin(
    server: SessionServices,
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
    await server.hub.ready()  # a cluster node that has just started joins first
    refusal = server.login_refusal(account)
    if refusal:
        terminal.write(refusal + "\n")
        return None
    session_id = server.next_id()
    if not await _make_room(server, terminal, wire, name, session_id):
        return None
    try:
        return await _start(server, account, terminal, wire, mode, still_wanted, session_id)
    except BaseException:
        server.hub.release(name, session_id)
        raise


async def _start(
    server: SessionServices,
    account: Account,
    terminal: Terminal,
    wire: IWire,
    mode: Mode,
    still_wanted: Callable[[], bool],
    session_id: int,
) -> Session | None:
    name = account.name
    ignores, new_messages, previous = await people.session_starting(server, name)
    motd = await server.motd() if mode is Mode.INTERACTIVE else ""
    if not terminal.connected:  # gone while the store answered: allocate nothing
        server.hub.release(name, session_id)
        return None
    tty = await server.hub.allocate_tty(wire.kind)
    now = server.clock.seconds()
    session = Session(
        id=session_id,
        node=server.hub.node,
        user=name,
        role=account.role,
        tty=tty,
        peer=wire.peer,
        term=wire.term,
        login_time=now,
        terminal=terminal,
        last_active=now,
        bucket=bucket_for(server.config.cmd_rate, server.config.cmd_burst),
    )
    if server.homes is not None and not server.hub.sessions_of_now(name):
        # The user's first session: their home is measured again before their first
        # command (files an operator put there count; docs/files.md).
        server.homes.measure_again(name)
    await people.attach(server, session, ignores)
    try:
        session.login_record = await server.store.record_login(
            name, session.tty, session.peer, now
        )
    except UNAVAILABLE as e:
        # The disk is full (or failing): let the user in all the same, without a record, so
        # they can delete files; `last` will not show this login.
        server.unavailable(e, "recording a login", LOGGED_IN_UNRECORDED)
    except BaseException:
        await server.hub.detach(session)
        raise
    if not terminal.connected or not still_wanted():
        # Gone, or timed out, while the login was recorded: close the record too.
        _record_logout(server, session)
        await server.hub.detach(session)
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
        terminal.write(server.login_notice())
        terminal.write(new_messages)
        shell = Shell(server, session, terminal)
        terminal.on_eof = shell.logout
        terminal.set_handler(shell.line, shell.prompt, shell.complete)
    return session


async def _make_room(
    server: SessionServices, terminal: Terminal, wire: IWire, name: str, session_id: int
) -> bool:
    """Apply ``--max-sessions``/``--on-max``: refuse, or end the oldest sessions (on
    whichever node they are)."""
    limit = server.config.max_sessions
    if not limit:
        return True
    replace = server.config.on_max != "refuse"
    older = await server.hub.admit(name, session_id, limit, replace)
    if older is None:
        terminal.write(f"Too many sessions for {name} (limit {limit}); log out elsewhere first.\n")
        return False
    notice = Message.of(f"\nSession replaced by a new login from {careful(wire.peer)}.")
    for old in older:
        await server.hub.end_session(old, notice)
    return True


def end(server: SessionServices, session: Session, wire: IWire) -> None:
    """The connection of ``session`` is gone: detach it, leave its rooms, record the logout."""
    d = server.hub.detach(session)
    d.addErrback(lambda f: log.failure("detaching {tty} failed", f, tty=session.tty))
    ended = Deferred.fromCoroutine(people.session_ended(server, session))
    ended.addErrback(_ending_failed, session)
    _record_logout(server, session)
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


def _record_logout(server: SessionServices, session: Session) -> None:
    if session.login_record is not None:
        d = server.store.record_logout(session.login_record, server.clock.seconds())
        d.addErrback(_logout_not_recorded, server)


def _logout_not_recorded(failure: Failure, server: SessionServices) -> None:
    error = failure.value
    if failure.check(*UNAVAILABLE) is None or error is None:
        log.failure("recording logout failed", failure)
    else:  # disk full: one line a minute, not a traceback per logout
        server.unavailable(error, "recording a logout", "logout time not recorded")
