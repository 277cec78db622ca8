"""Rate limits that keep one client from costing everyone else: commands and failed logins."""

from __future__ import annotations

from collections import deque
from typing import TypeVar

from attrs import Factory, define, field
from twisted.internet.defer import Deferred, succeed

V = TypeVar("V")


@define
class TokenBucket:
    """``burst`` commands at once, then ``rate`` per second; pasting a few lines works."""

    rate: float
    burst: int
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        """One token for a command line, refilled from the time passed: no timer per session,
        and a few float operations per line on the hot path."""
        if self.rate <= 0:
            return True
        self.tokens, self.stamp = self._level(now), now
        if self.tokens >= 1.0 - 1e-9:  # a wait() of exactly the right length suffices
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until :meth:`take` would succeed (0 when it would now)."""
        if self.rate <= 0:
            return 0.0
        return max(0.0, 1.0 - self._level(now)) / self.rate

    def _level(self, now: float) -> float:
        """Tokens at ``now``: full at first use, then refilled at ``rate`` up to ``burst``."""
        if self.tokens < 0:
            return float(self.burst)
        return min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)


#: One bucket for every session when ``--cmd-rate`` is 0: an unlimited bucket never changes
#: (``take`` and ``wait`` return at once), so 10,000 sessions need not carry one each.
UNLIMITED = TokenBucket(0, 0)


def bucket_for(rate: float, burst: int) -> TokenBucket:
    """A new session's bucket: the shared :data:`UNLIMITED` when there is no rate, so an
    unlimited server spends no memory on buckets."""
    return UNLIMITED if rate <= 0 else TokenBucket(rate, burst)


@define
class Recent:
    """Per client address, the times of recent events (the last ``keep``, for ``window`` seconds).

    At most ``max_addresses`` addresses are remembered: a new one past that
    forgets the one first seen longest ago, at a constant cost, so a flood of
    addresses holds bounded memory and never makes one attempt walk them all.
    """

    window: float
    keep: int
    max_addresses: int = 100_000
    _times: dict[str, deque[float]] = field(factory=dict)

    def __len__(self) -> int:
        return len(self._times)

    def count(self, addr: str, now: float) -> int:
        """Events from ``addr`` in the window ending at ``now`` (older ones are forgotten)."""
        times = self._times.get(addr)
        if times is None:
            return 0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._times[addr]
        return len(times)

    def add(self, addr: str, now: float) -> None:
        """Record an event; a new address first makes room, so the table never passes
        ``max_addresses`` however many addresses a flood comes from."""
        times = self._times.get(addr)
        if times is None:
            _make_room(self._times, self.max_addresses)
            times = self._times[addr] = deque(maxlen=self.keep)
        times.append(now)

    def take_back(self, addr: str, when: float) -> None:
        """The event at ``when`` does not count after all."""
        times = self._times.get(addr)
        if times is not None and when in times:
            times.remove(when)

    def forget(self, addr: str) -> None:
        """Drop an address's events once a block's deadline has replaced them."""
        self._times.pop(addr, None)


def _make_room(table: dict[str, V], most: int) -> None:
    """Forget the entries first added, until one more fits within ``most``."""
    while table and len(table) >= most:
        del table[next(iter(table))]


@define
class FailedLogins:
    """Per-address password checks: ``limit`` failures in ``window`` seconds block the address
    for ``block`` (10 per 10 minutes by default: a person's few mistyped passwords never block
    them, while a guesser from one address is held to a few tries a minute).

    A check takes a slot when its password arrives, before it is checked, and
    there are never more than ``limit`` minus the recent failures in flight:
    counting only finished failures would let parallel connections have many
    more guesses checked before the first failure is known. A check over that
    waits for a slot instead of being refused, so parallel logins from one
    address (a NAT, a school, the benchmark) that succeed are only queued,
    while an attacker's parallel guesses still get ``limit`` checks in all.
    """

    limit: int = 10
    window: float = 600.0
    block: float = 300.0
    max_addresses: int = 100_000
    _failures: Recent = field(
        default=Factory(lambda self: Recent(self.window, self.limit, self.max_addresses), True)
    )
    _blocked: dict[str, float] = field(factory=dict)
    _in_flight: dict[str, int] = field(factory=dict)
    #: Checks waiting for a slot, per address (bounded by its pre-auth connections).
    _waiting: dict[str, deque[Deferred[bool]]] = field(factory=dict)

    def blocked(self, addr: str, now: float) -> bool:
        """Asked before the prompt and before each check (telnet, the browser, SSH): reaching
        ``limit`` becomes one deadline, and the failures behind it are forgotten."""
        until = self._blocked.get(addr)
        if until is not None:
            if now < until:
                return True
            del self._blocked[addr]
        if self._failures.count(addr, now) < self.limit:
            return False
        self._failures.forget(addr)
        _make_room(self._blocked, self.max_addresses)
        self._blocked[addr] = now + self.block
        return True

    def attempt(self, addr: str, now: float) -> Deferred[bool]:
        """A slot for a check that starts now: True when it may go on, False when blocked.

        Fires at once unless ``limit`` checks from ``addr`` are already in
        flight; then when one of them ends. Every True must be followed by
        :meth:`finished`.
        """
        if self.blocked(addr, now):
            return succeed(False)
        if self._free(addr, now) and addr not in self._waiting:
            self._in_flight[addr] = self._in_flight.get(addr, 0) + 1
            return succeed(True)
        queue = self._waiting.setdefault(addr, deque())
        d: Deferred[bool] = Deferred(lambda d: _discard(queue, d))
        queue.append(d)
        return d

    def finished(self, addr: str, now: float, failed: bool) -> None:
        """The check that held a slot is over; a failure counts toward the block."""
        left = self._in_flight.get(addr, 0) - 1
        if left > 0:
            self._in_flight[addr] = left
        else:
            self._in_flight.pop(addr, None)
        if failed:
            self._failures.add(addr, now)
        queue = self._waiting.get(addr)
        while queue:
            if self.blocked(addr, now):
                while queue:
                    queue.popleft().callback(False)
            elif self._free(addr, now):
                self._in_flight[addr] = self._in_flight.get(addr, 0) + 1
                queue.popleft().callback(True)
            else:
                break
        if queue is not None and not queue:
            del self._waiting[addr]

    def _free(self, addr: str, now: float) -> bool:
        return self._failures.count(addr, now) + self._in_flight.get(addr, 0) < self.limit

    def addresses(self) -> int:
        """Addresses remembered (with failures or blocked): bounded by ``max_addresses`` each."""
        return len(self._failures) + len(self._blocked)


def _discard(queue: deque[Deferred[bool]], d: Deferred[bool]) -> None:
    if d in queue:
        queue.remove(d)


@define
class Registrations:
    """Accounts made with ``new`` per client address: ``limit`` an hour, 0 = unlimited.

    One is counted just before the account is created and given back if that
    fails, so registrations racing in parallel cannot pass the limit together.
    """

    limit: int = 5
    window: float = 3600.0
    max_addresses: int = 100_000
    _made: Recent = field(
        default=Factory(
            lambda self: Recent(self.window, max(1, self.limit), self.max_addresses), True
        )
    )

    def full(self, addr: str, now: float) -> bool:
        """Asked when ``new`` is typed, so an address at its limit is told before the questions;
        :meth:`take` checks again when the account is about to be made."""
        return bool(self.limit) and self._made.count(addr, now) >= self.limit

    def take(self, addr: str, now: float) -> bool:
        """Count one registration from ``addr``; False (nothing counted) when it is over."""
        if not self.limit:
            return True
        if self.full(addr, now):
            return False
        self._made.add(addr, now)
        return True

    def give_back(self, addr: str, taken: float) -> None:
        """The account was not made after all (the name taken meanwhile, no home, an error):
        a failure of ours must not use up the address's allowance."""
        self._made.take_back(addr, taken)

    def addresses(self) -> int:
        """Addresses remembered, for the tests that hold the table to ``max_addresses``."""
        return len(self._made)


@define
class LogLimit:
    """At most one log line per ``every`` seconds for a repeating trouble; the rest are counted."""

    every: float = 60.0
    _count: int = 0
    _logged_at: float = float("-inf")

    def due(self, now: float) -> int:
        """Count one occurrence; the number to report now, or 0 to stay quiet."""
        self._count += 1
        if now - self._logged_at < self.every:
            return 0
        count, self._count, self._logged_at = self._count, 0, now
        return count
