"""One connection's life: login timeout, login, the session, and cleaning up after it."""

from __future__ import annotations

from attrs import field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.hub.session import Session
from shellserver.ops.admission import MADE_ROOM, Admission, Stalled
from shellserver.shell import sessionstart
from shellserver.shell.login import STORE_DOWN_TEXT, UNAVAILABLE_TEXT, Login, login_dialogue
from shellserver.shell.resume import ResumeChannel
from shellserver.shell.sessionstart import SessionStart
from shellserver.store.accounts import UNAVAILABLE, Account, StoreUnavailable
from shellserver.terminal.discipline import Disconnected, EndOfInput, IWire, Terminal

log = Logger()


@frozen
class Lobby:
    """Where in-band login connections (telnet, the browser) wait to log in, given by the
    assembly: the login dialogue, the session start that follows it, admission, and the
    login timeout. Its :meth:`new_connection` is what those wires' factories call."""

    login: Login
    start: SessionStart
    admission: Admission
    clock: IReactorTime
    #: ``--login-timeout`` (0: none).
    login_timeout: float
    #: Connections waiting to log in, oldest first, with the time they started waiting.
    waiting: dict[Connection, float] = field(factory=dict)

    def new_connection(self, wire: IWire) -> Terminal:
        """A wire has a new connection: admit it and start its login; the returned terminal
        receives what the wire reads."""
        connection = Connection(self, wire)
        connection.start()
        return connection.terminal


class Connection:
    """One in-band login connection: admitted, timed out if it does not log in, then
    seated; it gives its admission slot back however it ends."""

    def __init__(self, lobby: Lobby, wire: IWire) -> None:
        self.lobby = lobby
        self.wire = wire
        self.terminal = Terminal(wire, lobby.start.redraws)
        self.session: Session | None = None
        self._timer: IDelayedCall | None = None
        self._admitted = False
        #: In admission's list of stalled connections until a login name arrives.
        self._stalled: Stalled | None = None
        self._closed = False
        #: Counted by admission as logged in (no longer waiting to log in).
        self._logged_in = False

    def start(self) -> None:
        """Counted, admitted (or refused at once, saying why), then the login dialogue."""
        self.lobby.start.seats.add(self)
        self.terminal.on_disconnect = self._lost
        admission = self.lobby.admission
        timeout = self.lobby.login_timeout
        if timeout > 0:
            self._expire_waiting(admission.login_grace(timeout))
        now = self.lobby.clock.seconds()
        refusal = admission.admit(self.wire.peer, now)
        if refusal is not None:
            count = admission.refusals_to_log(self.lobby.clock.seconds())
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
            self.lobby.waiting[self] = self.lobby.clock.seconds()
            self._timer = self.lobby.clock.callLater(grace, self._timed_out, grace)
        d = Deferred.fromCoroutine(self._run())
        d.addErrback(self._crashed)

    def _expire_waiting(self, grace: float) -> None:
        """Under pressure the grace is shorter for those already waiting too: time out, oldest
        first, those waiting longer than it. Run before admission, so a full house of
        half-open connections makes room for a newcomer once they are ``grace`` old."""
        now = self.lobby.clock.seconds()
        waiting = self.lobby.waiting
        while waiting:
            oldest, started = next(iter(waiting.items()))
            if started + grace > now:
                break
            oldest._timed_out(grace)

    async def _run(self) -> None:
        try:
            if isinstance(self.wire, ResumeChannel) and await self._resumed(self.wire):
                return
            banner = True
            while True:
                account = await login_dialogue(
                    self.lobby.login, self.terminal, self.wire.peer, banner, self._progressed
                )
                banner = False
                try:
                    if account is None or not await self._begin(account):
                        self._close()
                    break
                except StoreUnavailable as e:  # the store went down meanwhile: say so, close
                    self.lobby.start.trouble.unavailable(e, "login", "store down")
                    self.terminal.write(STORE_DOWN_TEXT)
                    self._close()
                    break
                except UNAVAILABLE as e:  # disk full at the login record: say so, stay
                    self.lobby.start.trouble.unavailable(e, "login")
                    self.terminal.write(UNAVAILABLE_TEXT)
        except EndOfInput:
            self._close()
        except Disconnected:
            pass

    async def _resumed(self, wire: ResumeChannel) -> bool:
        """A browser page presents its resume token before any login: True when that resumed
        its session (or refused it for good, closing); False for the login dialogue. A token
        that is not a live one counts as a failed login of the address, so guessing meets
        the same block as guessing passwords, and is logged."""
        token = await wire.first_token()
        if not token:
            return False
        self._progressed()
        login, peer = self.lobby.login, self.wire.peer
        if not await login.failed_logins.attempt(peer, self.lobby.clock.seconds()):
            return False  # blocked: the login dialogue says so and closes
        try:
            resumed = await sessionstart.resume_by_token(
                self.lobby.start, token, self.terminal, self.wire, self._logging_in
            )
        except BaseException:
            login.failed_logins.finished(peer, self.lobby.clock.seconds(), failed=False)
            raise
        now = self.lobby.clock.seconds()
        login.failed_logins.finished(peer, now, failed=resumed is None)
        if resumed is None:
            self.lobby.start.tokens.refused(peer, now)
        if isinstance(resumed, Session):
            self.session = resumed
            return True
        if resumed is False:
            self._close()
            return True
        return False

    async def _begin(self, account: Account) -> bool:
        """Attach a session; False when the login is refused after all."""
        session = await sessionstart.begin(
            self.lobby.start, account, self.terminal, self.wire, still_wanted=self._logging_in
        )
        self.session = session
        return session is not None

    def _logging_in(self) -> bool:
        """The session is recorded: unless timed out meanwhile, no longer waiting to log in."""
        if not self._admitted:
            return False
        self._cancel_timer()
        self.lobby.admission.logged_in(self.wire.peer)
        self._logged_in = True
        return True

    def _progressed(self) -> None:
        """A login name arrived: no longer among the stalled, first closed under pressure."""
        self.lobby.admission.progressed(self._stalled)
        self._stalled = None

    def _close(self) -> None:
        """Closed by the server (failed logins, a refusal, ^D): not a time-out when the close
        takes a while."""
        self._closed = True
        self.terminal.close()

    def _timed_out(self, grace: float) -> None:
        self._cancel_timer()
        if self._admitted and not self._closed:
            self.lobby.admission.timed_out(self.wire.peer, self.lobby.clock.seconds())
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
        self.lobby.waiting.pop(self, None)
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _lost(self) -> None:
        self.lobby.start.seats.discard(self)
        self._cancel_timer()
        session, self.session = self.session, None
        self._release()
        if session is not None:
            sessionstart.lost(self.lobby.start, session, self.terminal, self.wire, True)

    def _release(self) -> None:
        self._progressed()  # gone: no longer stalled either
        if self._admitted:
            self._admitted = False
            self.lobby.admission.gone(self.wire.peer, logged_in=self._logged_in)

    def _crashed(self, failure: Failure) -> None:
        log.failure("connection handler failed", failure)
        self.terminal.close()
