"""One connection's life: login timeout, login, the session, and cleaning up after it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver import people
from shellserver.accounts import UNAVAILABLE, Account
from shellserver.hub import Message
from shellserver.login import UNAVAILABLE_TEXT, login_dialogue
from shellserver.sanitize import careful
from shellserver.session import Session
from shellserver.shell import Shell
from shellserver.terminal import Disconnected, EndOfInput, IWire, Terminal
from shellserver.throttle import TokenBucket
from shellserver.timefmt import format_login_time

if TYPE_CHECKING:
    from shellserver.server import Server

log = Logger()


class Connection:
    def __init__(self, server: Server, wire: IWire) -> None:
        self.server = server
        self.wire = wire
        self.terminal = Terminal(wire, server.redraws)
        self.session: Session | None = None
        self._timer: IDelayedCall | None = None
        self._admitted = False
        #: Counted by admission as logged in (no longer waiting to log in).
        self._logged_in = False

    def start(self) -> None:
        self.server.connections.add(self)
        self.terminal.on_disconnect = self._lost
        admission = self.server.admission
        timeout = self.server.config.login_timeout
        if timeout > 0:
            self._expire_waiting(admission.login_grace(timeout))
        refusal = admission.admit(self.wire.peer)
        if refusal is not None:
            count = admission.refusals_to_log(self.server.clock.seconds())
            if count:
                log.warn(
                    "refused {count} connection(s) over the limits; latest from {peer}: {why}",
                    count=count,
                    peer=self.wire.peer,
                    why=refusal,
                )
            self.terminal.write(refusal + "\n")
            self.terminal.close()
            return
        self._admitted = True
        if timeout > 0:
            grace = admission.login_grace(timeout)
            self.server.waiting[self] = self.server.clock.seconds()
            self._timer = self.server.clock.callLater(grace, self._timed_out, grace)
        d = Deferred.fromCoroutine(self._run())
        d.addErrback(self._crashed)

    def _expire_waiting(self, grace: float) -> None:
        """Under pressure the grace is shorter for those already waiting too: time out, oldest
        first, those waiting longer than it. Run before admission, so a full house of
        half-open connections makes room for a newcomer once they are ``grace`` old."""
        now = self.server.clock.seconds()
        waiting = self.server.waiting
        while waiting:
            oldest, started = next(iter(waiting.items()))
            if started + grace > now:
                break
            oldest._timed_out(grace)

    async def _run(self) -> None:
        try:
            banner = True
            while True:
                account = await login_dialogue(self.server, self.terminal, self.wire.peer, banner)
                banner = False
                try:
                    if account is None or not await self._begin(account):
                        self.terminal.close()
                    break
                except UNAVAILABLE as e:  # disk full at the login record: say so, stay
                    self.server.unavailable(e, "login")
                    self.terminal.write(UNAVAILABLE_TEXT)
        except EndOfInput:
            self.terminal.close()
        except Disconnected:
            pass

    async def _begin(self, account: Account) -> bool:
        """Attach a session; False when the login is refused after all."""
        server, term, name = self.server, self.terminal, account.name
        refusal = server.login_refusal(account)
        if refusal:
            term.write(refusal + "\n")
            return False
        if not await self._make_room(name):
            return False
        previous = await server.store.last_login(name)
        new_messages = await people.session_starting(server, name)
        if not term.connected:  # gone while the store answered: allocate nothing
            return False
        now = server.clock.seconds()
        session = Session(
            id=server.next_id(),
            user=name,
            role=account.role,
            tty=server.hub.allocate_tty(self.wire.kind),
            peer=self.wire.peer,
            term=self.wire.term,
            login_time=now,
            terminal=term,
            last_active=now,
            bucket=TokenBucket(server.config.cmd_rate, server.config.cmd_burst),
        )
        self.session = session
        await server.hub.attach(session)
        try:
            session.login_record = await server.store.record_login(
                name, session.tty, session.peer, now
            )
        except BaseException:
            self.session = None
            await server.hub.detach(session)
            raise
        if not term.connected or not self._admitted:
            # Gone, or timed out, while the login was recorded: close the record too.
            self._record_logout(session)
            return False
        self._cancel_timer()
        server.admission.logged_in(self.wire.peer)
        self._logged_in = True
        log.info(
            "{user} logged in on {tty} from {peer}",
            event="login",
            user=name,
            role=account.role,
            tty=session.tty,
            peer=session.peer,
            wire=self.wire.kind,
        )
        term.write(server.motd())
        if previous is None:
            term.write("This is your first login.\n")
        else:
            when = format_login_time(previous.login)
            term.write(f"Last login: {when} from {careful(previous.peer)}\n")
        term.write(server.login_notice())
        term.write(new_messages)
        shell = Shell(server, session)
        term.on_eof = shell.logout
        term.set_handler(shell.line, shell.prompt, shell.complete)
        return True

    async def _make_room(self, name: str) -> bool:
        """Apply ``--max-sessions``/``--on-max``: refuse, or end the oldest sessions."""
        limit = self.server.config.max_sessions
        if not limit:
            return True
        mine = await self.server.hub.sessions_of(name)
        if len(mine) < limit:
            return True
        if self.server.config.on_max == "refuse":
            self.terminal.write(
                f"Too many sessions for {name} (limit {limit}); log out elsewhere first.\n"
            )
            return False
        notice = Message.of(f"\nSession replaced by a new login from {careful(self.wire.peer)}.")
        for old in mine[: len(mine) - limit + 1]:
            await self.server.hub.end_session(old, notice)
            await self.server.hub.detach(old)
        return True

    def _timed_out(self, grace: float) -> None:
        self._cancel_timer()
        self._release()  # its slot is free now, not only when the close completes
        self.terminal.write(f"\nLogin timed out after {round(grace)} seconds.\n")
        self.terminal.close()

    def _cancel_timer(self) -> None:
        self.server.waiting.pop(self, None)
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _lost(self) -> None:
        self.server.connections.discard(self)
        self._cancel_timer()
        session, self.session = self.session, None
        self._release()
        if session is None:
            return
        d = self.server.hub.detach(session)
        d.addErrback(lambda f: log.failure("detaching {tty} failed", f, tty=session.tty))
        ended = Deferred.fromCoroutine(people.session_ended(self.server, session))
        ended.addErrback(lambda f: log.failure("ending {tty} failed", f, tty=session.tty))
        self._record_logout(session)
        log.info(
            "{user} logged out from {tty}",
            event="logout",
            user=session.user,
            tty=session.tty,
            peer=session.peer,
            wire=self.wire.kind,
        )

    def _release(self) -> None:
        if self._admitted:
            self._admitted = False
            self.server.admission.gone(self.wire.peer, logged_in=self._logged_in)

    def _record_logout(self, session: Session) -> None:
        if session.login_record is not None:
            d = self.server.store.record_logout(session.login_record, self.server.clock.seconds())
            d.addErrback(lambda f: log.failure("recording logout failed", f))

    def _crashed(self, failure: Failure) -> None:
        log.failure("connection handler failed", failure)
        self.terminal.close()
