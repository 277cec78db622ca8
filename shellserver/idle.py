"""Idle sessions are warned a minute before ``--idle-timeout``, then logged out.

Each node scans its own sessions (``IHub.local_sessions``). One periodic scan
instead of a timer per session: resetting a timer on every typed line would
cost more than a pass over the table every few seconds.
"""

from __future__ import annotations

from attrs import define, field
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.hub import IHub, Message
from shellserver.words import counted

log = Logger()

WARNING = 60.0


@define(eq=False)
class IdleWatch:
    hub: IHub
    timeout: float
    _warning: Message = field(init=False)
    _logout: Message = field(init=False)

    def __attrs_post_init__(self) -> None:
        minutes = int(self.timeout // 60)
        span = counted(minutes, "minute") if minutes else counted(int(self.timeout), "second")
        self._warning = Message.of(
            "You have been idle a long time; you will be logged out in a minute."
        )
        self._logout = Message.of(f"Idle for {span}; logging you out.")

    def scan(self, now: float) -> None:
        if self.timeout <= 0:
            return
        warn_after = max(0.0, self.timeout - WARNING)
        for s in self.hub.local_sessions():  # each node watches its own
            idle = s.idle(now)
            if idle >= self.timeout:
                self.hub.end_session(s, self._logout).addErrback(self._failed, "idle logout")
            elif idle >= warn_after and s.idle_warned != s.last_active:
                s.idle_warned = s.last_active
                self.hub.deliver(s, self._warning).addErrback(self._failed, "idle warning")

    def _failed(self, failure: Failure, what: str) -> None:
        log.failure("{what} failed", failure, what=what)
