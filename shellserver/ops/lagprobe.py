"""How late the event loop runs a timer: the reactor-lag probe behind ``reactor_lag_seconds``.

A timer asked for every ``interval`` seconds fires late by exactly the time
the reactor spent on other work (a long callback, a blocking call, a big
fan-out). That delay is the latency every user sees on top of the network,
so it is the first thing to alert on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, IReactorTime

INTERVAL = 0.1


@define(eq=False)
class LagProbe:
    """One timer for the whole process, not a measurement per event: the lag histogram costs
    ten calls a second whatever the load. ``observe`` is the histogram's, passed in."""

    clock: IReactorTime
    observe: Callable[[float], None]
    interval: float = INTERVAL
    #: Monotonic in the server (a wall-clock step is not lag); the test clock's time in tests.
    now: Callable[[], float] = time.monotonic
    _due: float = 0.0
    _call: IDelayedCall | None = field(default=None)

    def start(self) -> None:
        """Armed at the service's start, so the probe runs only while the server does."""
        self._arm()

    def stop(self) -> None:
        """Cancel the pending timer at the service's stop, so none is left in the reactor."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _arm(self) -> None:
        self._due = self.now() + self.interval
        self._call = self.clock.callLater(self.interval, self._fired)

    def _fired(self) -> None:
        self.observe(max(0.0, self.now() - self._due))
        self._arm()
