"""Store and disk failures told once a minute, whoever met them.

A full disk fails every login record, registration and logout at once; the log
must say so without drowning. Login, session start and the wires all report
here, so one kind of failure cannot hide another and none floods the log.
"""

from __future__ import annotations

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from shellserver.ops.throttle import LogLimit

log = Logger()


@define(eq=False)
class Trouble:
    """One log limit per outcome (what the user got instead), shared by every part that can
    meet a failing store or disk, so the whole server logs each kind at most once a minute."""

    clock: IReactorTime
    _limits: dict[str, LogLimit] = field(factory=dict, init=False)

    def unavailable(
        self, error: BaseException, doing: str, outcome: str = "service unavailable"
    ) -> None:
        """The store or the disk failed (full, I/O error): one critical line a minute at most
        for each ``outcome``, so one kind never hides another."""
        limit = self._limits.get(outcome)
        if limit is None:
            limit = self._limits[outcome] = LogLimit()
        count = limit.due(self.clock.seconds())
        if count:
            log.critical(
                "{doing} failed, {outcome} ({count} time(s) since the last report): {error}",
                doing=doing,
                outcome=outcome,
                count=count,
                error=f"{type(error).__name__}: {error}",
            )
