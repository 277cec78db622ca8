"""What the cyclic garbage collector scans: only what is new since its last full collection.

CPython collects its oldest generation when it has grown by a quarter, and a
full collection walks every tracked object: at 10,000 sessions that took
200-390 ms, during which no session is served (docs/performance.md). Nearly
all of those objects live as long as their session or the process, and a
session's objects are freed by reference counting when its connection is lost
(its cycles are broken then: ``Terminal.connection_lost``, the wire's
``connectionLost``), so scanning them again and again finds nothing.

So, like CPython's own advice for long-running servers (``gc.freeze``): after
start-up and after every full collection, what survived is moved to the
permanent generation, and the next full collection walks only what came since.
Cyclic garbage among frozen objects would not be found that way, so once every
``rescan`` seconds everything is unfrozen and collected once (one full pause,
at a known time) and frozen again.
"""

from __future__ import annotations

import gc as _gc
from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Seconds between full scans of everything (the safety net for cycles among frozen objects).
RESCAN = 3600.0


@define(eq=False)
class GCPolicy:
    clock: IReactorTime
    rescan: float = RESCAN
    #: The ``gc`` module; a fake in tests.
    gc: Any = _gc
    _call: IDelayedCall | None = field(default=None, init=False)
    _hooked: bool = field(default=False, init=False)

    def start(self) -> None:
        self.gc.collect()
        self.gc.freeze()
        if not self._hooked:
            self._hooked = True
            self.gc.callbacks.append(self._collected)
        self._schedule()

    def stop(self) -> None:
        if self._hooked:
            self._hooked = False
            self.gc.callbacks.remove(self._collected)
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.gc.unfreeze()

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        """``gc.callbacks``: after a full collection, freeze what survived it."""
        if phase == "stop" and info.get("generation") == 2:
            self.gc.freeze()

    def _schedule(self) -> None:
        if self.rescan > 0:
            self._call = self.clock.callLater(self.rescan, self._rescan)

    def _rescan(self) -> None:
        self._call = None
        self.gc.unfreeze()
        self.gc.collect()  # a full collection: the hook freezes what survives
        self._schedule()
