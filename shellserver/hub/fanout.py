"""Room lines to many members, paced: a bounded number of deliveries per reactor turn.

A room line is one :class:`~shellserver.text.message.Message` for every member (sanitised and
encoded once, as a ``wall``), but handing it to each member still costs a few microseconds
(the terminal's lead, the send). Five hundred sessions joining one room at once make
125,000 such deliveries; done as each line arrives, they filled reactor turns for most of a
second and every other session waited. The hub gives each fan-out to :class:`Fanout`
instead, which makes at most :data:`SLICE` deliveries per turn, all fan-outs together, and
goes on in the next turn (``callLater(0)``): other sessions' input is read between slices.

Order is kept: fan-outs run one after another in the order they were asked for, each in its
members' order, so every member sees the lines of a room in the order they were said. A
fan-out that fits in what is left of this turn's slice, with none waiting, is done at once
(the usual small room costs no delayed call). The Deferred that :meth:`Fanout.run` returns
fires when every member has been handed the line: the sender's command waits for it, so one
session has at most one fan-out waiting, and a paste of forty ``say`` lines to a large room
is spread over the turns instead of queued whole.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Deliveries per reactor turn, all room fan-outs together (a few microseconds each: about a
#: millisecond of work, then the reactor reads everyone's input again).
SLICE = 128

T = TypeVar("T")


@define(eq=False)
class _Job(Generic[T]):
    items: Sequence[T]
    step: Callable[[T], object]
    done: Deferred[None] = field(factory=Deferred)
    at: int = 0


@define(eq=False)
class Fanout:
    """Runs ``step(item)`` for each item of each fan-out, at most ``size`` per reactor turn.

    Without a clock (a hub made bare, as in unit tests of other parts) everything runs at
    once, as before pacing.
    """

    clock: IReactorTime | None
    size: int = SLICE
    _jobs: deque[_Job[Any]] = field(init=False, factory=deque)
    #: Steps taken in this turn (reset by the delayed call that marks the next turn).
    _used: int = field(init=False, default=0)
    _call: IDelayedCall | None = field(init=False, default=None)

    @property
    def waiting(self) -> int:
        """Fan-outs not finished yet."""
        return len(self._jobs)

    def run(self, items: Sequence[T], step: Callable[[T], object]) -> Deferred[None]:
        """``step`` for every item, in order, in this turn or in the next ones; the Deferred
        fires once all are done."""
        if self.clock is None:
            for item in items:
                step(item)
            return succeed(None)
        if not self._jobs and self._used + len(items) <= self.size:
            for item in items:
                step(item)
            if items:
                self._used += len(items)
                self._arm()
            return succeed(None)
        job: _Job[T] = _Job(items, step)
        self._jobs.append(job)
        self._arm()
        return job.done

    def _arm(self) -> None:
        if self._call is None:
            assert self.clock is not None
            self._call = self.clock.callLater(0, self._turn)

    def _turn(self) -> None:
        """A new turn: up to ``size`` steps of the waiting fan-outs, oldest first."""
        self._call = None
        self._used = 0
        jobs = self._jobs
        while jobs and self._used < self.size:
            job = jobs[0]
            start = job.at
            end = min(len(job.items), start + self.size - self._used)
            items, step = job.items, job.step
            try:
                for i in range(start, end):
                    step(items[i])
            except Exception:  # a bug in a step: that fan-out fails, the others go on
                jobs.popleft()
                job.done.errback()
                continue
            job.at = end
            self._used += end - start
            if end >= len(items):
                jobs.popleft()
                # The sender's command goes on (and may ask for the next fan-out: it queues
                # behind those waiting, or takes what is left of this turn's slice).
                job.done.callback(None)
        if jobs or self._used:
            self._arm()
