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

It rests on how CPython's collector reports its work: an automatic collection
of the oldest generation reaches ``gc.callbacks`` as ``generation == 2``.
CPython 3.14's incremental collector changes what is collected and reported,
so the policy is on only where it was measured (:data:`MEASURED`) and
``tests/test_contracts.py`` checks the report on the Python it runs on.
``SHELLSERVER_GC_POLICY=0`` turns it off; ``=1`` turns it on elsewhere too,
to measure it there (docs/performance.md, "Switches").
"""

from __future__ import annotations

import gc as _gc
import os
import sys
from collections.abc import Mapping
from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

#: Seconds between full scans of everything (the safety net for cycles among frozen objects).
RESCAN = 3600.0

#: The generation an automatic full collection reports to ``gc.callbacks``.
FULL = 2

#: The CPython versions (major, minor) the policy was measured on (docs/performance.md).
MEASURED = frozenset({(3, 11)})

#: The switch: off, on even where not measured; anything else (or unset) means "where measured".
ENV = "SHELLSERVER_GC_POLICY"
_OFF = frozenset({"0", "off", "no", "false"})
_ON = frozenset({"1", "on", "yes", "true"})


def wanted(
    environ: Mapping[str, str] = os.environ,
    version: tuple[int, ...] = tuple(sys.version_info[:2]),
    implementation: str = sys.implementation.name,
) -> tuple[bool, str]:
    """Whether the policy should run here, and why (logged at start, so an operator sees it)."""
    switch = environ.get(ENV, "").strip().lower()
    if switch in _OFF:
        return False, f"off ({ENV}={switch})"
    if switch in _ON:
        return True, f"on ({ENV}={switch})"
    where = f"{implementation} {'.'.join(map(str, version[:2]))}"
    if implementation == "cpython" and tuple(version[:2]) in MEASURED:
        return True, f"on (measured on {where})"
    return False, f"off (not measured on {where}; {ENV}=1 turns it on)"


@define(eq=False)
class GCPolicy:
    """Keeps full collections short on a server holding many long-lived sessions: see the
    module's docstring. Started and stopped with the service; does nothing when off."""

    clock: IReactorTime
    rescan: float = RESCAN
    #: The ``gc`` module; a fake in tests.
    gc: Any = _gc
    #: Whether :meth:`start` does anything, and why (:func:`wanted`).
    switch: tuple[bool, str] = field(factory=wanted)
    _call: IDelayedCall | None = field(default=None, init=False)
    _hooked: bool = field(default=False, init=False)
    _started: bool = field(default=False, init=False)

    def start(self) -> None:
        """Called at the service's start, after start-up has made its long-lived objects (store,
        pools, listeners): freezing them then keeps them out of every later scan. Logs whether
        it is on and why, so an operator sees the choice."""
        on, why = self.switch
        log.info("gc policy {why}", why=why)
        if not on:
            return
        self._started = True
        self.gc.collect()
        self.gc.freeze()
        if not self._hooked:
            self._hooked = True
            self.gc.callbacks.append(self._collected)
        self._schedule()

    def stop(self) -> None:
        """Unhook and unfreeze, so a stopped service leaves ``gc`` as it found it (tests start
        and stop many services in one process)."""
        if not self._started:
            return
        self._started = False
        if self._hooked:
            self._hooked = False
            self.gc.callbacks.remove(self._collected)
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.gc.unfreeze()

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        """``gc.callbacks``: after a full collection, freeze what survived it."""
        if phase == "stop" and info.get("generation") == FULL:
            self.gc.freeze()

    def _schedule(self) -> None:
        if self.rescan > 0:
            self._call = self.clock.callLater(self.rescan, self._rescan)

    def _rescan(self) -> None:
        self._call = None
        self.gc.unfreeze()
        self.gc.collect()  # a full collection: the hook freezes what survives
        self._schedule()
