"""Idle sessions are warned a minute before ``--idle-timeout``, then logged out.

One periodic scan instead of a timer per session: resetting a timer on every
typed line would cost more than a pass over the table every few seconds.
"""

from __future__ import annotations

from attrs import define, field

from shellserver.hub import Hub, Message
from shellserver.session import Session

WARNING = 60.0


@define(eq=False)
class IdleWatch:
    hub: Hub
    timeout: float
    _warning: Message = field(init=False)
    _logout: Message = field(init=False)

    def __attrs_post_init__(self) -> None:
        minutes = int(self.timeout // 60)
        self._warning = Message.of(
            "You have been idle a long time; you will be logged out in a minute."
        )
        self._logout = Message.of(f"Idle for {minutes} minutes; logging you out.")

    def scan(self, now: float) -> None:
        if self.timeout <= 0:
            return
        self.hub.sessions().addCallback(self._check, now)

    def _check(self, sessions: list[Session], now: float) -> None:
        warn_after = max(0.0, self.timeout - WARNING)
        for s in sessions:
            idle = s.idle(now)
            if idle >= self.timeout:
                s.deliver(self._logout)
                s.disconnect()
            elif idle >= warn_after and s.idle_warned != s.last_active:
                s.idle_warned = s.last_active
                s.deliver(self._warning)
