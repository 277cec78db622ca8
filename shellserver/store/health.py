"""Whether the store answers: a round trip every few seconds on a database thread, behind the
``shellserver_store_up`` gauge and one log line at each change (down, then back), so an outage
is one line in the log however many logins and commands met it."""

from __future__ import annotations

from collections.abc import Callable

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.ops.threads import Runner
from shellserver.store.accounts import UNAVAILABLE, IAccountDB

log = Logger()
#: Seconds between two checks: how soon the gauge (and the log) see an outage and its end.
PERIOD = 5.0


@define(eq=False)
class StoreProbe:
    """Pings the store on its own runner (never the reactor) and reports up or down."""

    db: IAccountDB
    run_db: Runner
    clock: IReactorTime
    #: Told True or False after every check (the gauge's ``set``).
    report: Callable[[bool], None]
    #: Seconds between two checks (``--store-wait``).
    period: float = PERIOD
    up: bool = field(default=True, init=False)
    _busy: bool = field(default=False, init=False)
    _loop: LoopingCall | None = field(default=None, init=False)

    def start(self) -> None:
        """Check now and every ``period`` seconds."""
        loop = self._loop = LoopingCall(self.check)
        loop.clock = self.clock
        loop.start(self.period, now=True)

    def stop(self) -> None:
        """At the service's stop, before the store closes."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check(self) -> None:
        """One ping, unless the last one is still waiting (a stalled database thread must
        not pile up pings)."""
        if self._busy:
            return
        self._busy = True
        d = self.run_db(self.db.sql.ping)
        d.addCallbacks(lambda _: self._seen(True, None), lambda f: self._seen(False, f))

    def _seen(self, up: bool, failure: Failure | None) -> None:
        self._busy = False
        if failure is not None and failure.check(*UNAVAILABLE) is None:
            log.failure("checking the store failed", failure)
        if up != self.up:
            if up:
                log.info("the store at {where} answers again", where=self.db.where)
            else:
                assert failure is not None
                log.critical(
                    "the store at {where} is unavailable: {error}",
                    where=self.db.where,
                    error=failure.getErrorMessage(),
                )
        self.up = up
        self.report(up)
