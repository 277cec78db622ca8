"""Idle sessions are warned before ``--idle-timeout``, then logged out.

The warning comes a minute before the timeout, or half-way through it when the
timeout is under two minutes (a 20 s timeout warns after 10 s, not at login),
and says how long is left: ``in a minute``, ``in 10 seconds``.

Each node scans its own sessions (``IHub.local_sessions``). One periodic scan
instead of a timer per session: resetting a timer on every typed line would
cost more than a pass over the table every few seconds. The scan runs every
:data:`SCAN` seconds, or every second when the warning comes less than
:data:`FINE_BELOW` seconds before the logout, so a short warning is not late
by a large part of itself.
"""

from __future__ import annotations

import math

from attrs import define, field
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.hub.local import IHub, Message
from shellserver.text.words import counted

log = Logger()

#: Seconds between the warning and the logout, for timeouts of two minutes or more.
WARNING = 60.0
#: Seconds between two scans, and between two scans when the warning comes late.
SCAN = 5.0
FINE_SCAN = 1.0
FINE_BELOW = 25.0


def warning_lead(timeout: float) -> float:
    """How long before the logout the warning comes: a minute, or half a short timeout."""
    return WARNING if timeout >= 2 * WARNING else timeout / 2


def time_left(seconds: float) -> str:
    """``a minute``, ``10 seconds``, ``1 second``: whole seconds, rounded up."""
    whole = max(1, math.ceil(seconds - 1e-6))
    return "a minute" if whole == 60 else counted(whole, "second")


@define(eq=False)
class IdleWatch:
    """Warns, then logs out, this node's idle sessions from one periodic scan (the service's
    looping call runs :meth:`scan` every :attr:`period`), since a timer per session reset on every
    line would cost more than the scan."""

    hub: IHub
    timeout: float
    #: Seconds between the warning and the logout.
    lead: float = field(init=False)
    #: How often :meth:`scan` should run (the service's looping call).
    period: float = field(init=False)
    _logout: Message = field(init=False)
    #: Warnings by the text of the time left, each made once (a few dozen at most).
    _warnings: dict[str, Message] = field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self.lead = warning_lead(self.timeout)
        self.period = FINE_SCAN if self.lead < FINE_BELOW else SCAN
        minutes = int(self.timeout // 60)
        span = counted(minutes, "minute") if minutes else counted(int(self.timeout), "second")
        self._logout = Message.of(f"Idle for {span}; logging you out.")

    @property
    def logout_notice(self) -> Message:
        """``Idle for 60 minutes; logging you out.``: what an idle session is told (and an idle
        file transfer, which the service ends from the same scan)."""
        return self._logout

    def warning(self, left: float) -> Message:
        """The warning for ``left`` seconds to go."""
        said = time_left(left)
        message = self._warnings.get(said)
        if message is None:
            message = self._warnings[said] = Message.of(
                f"You have been idle a long time; you will be logged out in {said}."
            )
        return message

    def scan(self, now: float) -> None:
        """One pass over this node's sessions at ``now``: past the timeout they are ended; in the
        warning window each idle stretch is warned once (``idle_warned`` remembers which), and a
        failure is logged, never raised into the looping call, which would stop it."""
        if self.timeout <= 0:
            return
        warn_after = self.timeout - self.lead
        for s in self.hub.local_sessions():  # each node watches its own
            idle = s.idle(now)
            if idle >= self.timeout:
                self.hub.end_session(s, self._logout).addErrback(self._failed, "idle logout")
            elif idle >= warn_after and s.idle_warned != s.last_active:
                s.idle_warned = s.last_active
                warning = self.warning(self.timeout - idle)
                self.hub.deliver(s, warning).addErrback(self._failed, "idle warning")

    def _failed(self, failure: Failure, what: str) -> None:
        log.failure("{what} failed", failure, what=what)
