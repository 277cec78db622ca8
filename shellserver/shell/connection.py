"""One connection's life: login timeout, login, the session, and cleaning up after it."""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.hub.session import Session
from shellserver.ops.admission import MADE_ROOM, Admission, Stalled
from shellserver.shell import sessionstart
from shellserver.shell.login import UNAVAILABLE_TEXT, LoginServices, login_dialogue
from shellserver.shell.sessionstart import SessionServices
from shellserver.store.accounts import UNAVAILABLE, Account
from shellserver.terminal.discipline import Disconnected, EndOfInput, IWire, Terminal


class ConnectionServices(SessionServices, LoginServices, Protocol):
    """What an in-band login connection uses of the running server (``Server``)."""

    admission: Admission
    #: Connections waiting to log in, oldest first, with the time they started waiting.
    waiting: dict[Connection, float]


log = Logger()


class Connection:
    def __init__(self, server: ConnectionServices, wire: IWire) -> None:
        self.server = server
        self.wire = wire
        self.terminal = Terminal(wire, server.redraws)
        self.session: Session | None = None
        self._timer: IDelayedCall | None = None
        self._admitted = False
        #: In admission's list of stalled connections until a login name arrives.
        self._stalled: Stalled | None = None
        self._closed = False
        #: Counted by admission as logged in (no longer waiting to log in).
        self._logged_in = False

    def start(self) -> None:
        self.server.connections.add(self)
        self.terminal.on_disconnect = self._lost
        admission = self.server.admission
        timeout = self.server.config.login_timeout
        if timeout > 0:
            self._expire_waiting(admission.login_grace(timeout))
        now = self.server.clock.seconds()
        refusal = admission.admit(self.wire.peer, now)
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
        self._stalled = admission.stalled(self.wire.peer, now, self._make_room)
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
                account = await login_dialogue(
                    self.server, self.terminal, self.wire.peer, banner, self._progressed
                )
                banner = False
                try:
                    if account is None or not await self._begin(account):
                        self._close()
                    break
                except UNAVAILABLE as e:  # disk full at the login record: say so, stay
                    self.server.unavailable(e, "login")
                    self.terminal.write(UNAVAILABLE_TEXT)
        except EndOfInput:
            self._close()
        except Disconnected:
            pass

    async def _begin(self, account: Account) -> bool:
        """Attach a session; False when the login is refused after all."""
        session = await sessionstart.begin(
            self.server, account, self.terminal, self.wire, still_wanted=self._logging_in
        )
        self.session = session
        return session is not None

    def _logging_in(self) -> bool:
        """The session is recorded: unless timed out meanwhile, no longer waiting to log in."""
        if not self._admitted:
            return False
        self._cancel_timer()
        self.server.admission.logged_in(self.wire.peer)
        self._logged_in = True
        return True

    def _progressed(self) -> None:
        """A login name arrived: no longer among the stalled, first closed under pressure."""
        self.server.admission.progressed(self._stalled)
        self._stalled = None

    def _close(self) -> None:
        """Closed by the server (failed logins, a refusal, ^D): not a time-out when the close
        takes a while."""
        self._closed = True
        self.terminal.close()

    def _timed_out(self, grace: float) -> None:
        self._cancel_timer()
        if self._admitted and not self._closed:
            self.server.admission.timed_out(self.wire.peer, self.server.clock.seconds())
        self._release()  # its slot is free now, not only when the close completes
        self.terminal.write(f"\nLogin timed out after {round(grace)} seconds.\n")
        self.terminal.close()

    def _make_room(self) -> None:
        """Admission closes this stalled connection for a newcomer (and took its slot back)."""
        self._stalled = None
        self._admitted = False
        self._cancel_timer()
        self.terminal.write(f"\n{MADE_ROOM}\n")
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
        if session is not None:
            sessionstart.end(self.server, session, self.wire)

    def _release(self) -> None:
        self._progressed()  # gone: no longer stalled either
        if self._admitted:
            self._admitted = False
            self.server.admission.gone(self.wire.peer, logged_in=self._logged_in)

    def _crashed(self, failure: Failure) -> None:
        log.failure("connection handler failed", failure)
        self.terminal.close()
