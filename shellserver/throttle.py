"""Rate limits that keep one client from costing everyone else: commands and failed logins."""

from __future__ import annotations

from collections import deque

from attrs import define, field


@define
class TokenBucket:
    """``burst`` commands at once, then ``rate`` per second; pasting a few lines works."""

    rate: float
    burst: int
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
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


@define
class FailedLogins:
    """Per-address login attempts: ``limit`` in ``window`` seconds block the address for ``block``.

    An attempt is counted when its password arrives, before it is checked, and
    taken back when it succeeds. Counting only finished failures would let
    parallel connections have many more guesses checked before the first
    failure is known (SPEC §3: 10 per 10 minutes, whatever the parallelism).
    """

    limit: int = 10
    window: float = 600.0
    block: float = 300.0
    max_addresses: int = 100_000
    _tries: dict[str, deque[float]] = field(factory=dict)
    _blocked: dict[str, float] = field(factory=dict)

    def blocked(self, addr: str, now: float) -> bool:
        until = self._blocked.get(addr)
        if until is not None:
            if now < until:
                return True
            del self._blocked[addr]
        tries = self._tries.get(addr)
        if tries is None:
            return False
        while tries and tries[0] <= now - self.window:
            tries.popleft()
        if len(tries) < self.limit:
            return False
        self._blocked[addr] = now + self.block
        tries.clear()
        return True

    def attempt(self, addr: str, now: float) -> bool:
        """Count an attempt that starts now; False (and nothing counted) when blocked."""
        if self.blocked(addr, now):
            return False
        tries = self._tries.get(addr)
        if tries is None:
            if len(self._tries) >= self.max_addresses:
                self.prune(now)
            tries = self._tries[addr] = deque(maxlen=self.limit)
        tries.append(now)
        return True

    def succeeded(self, addr: str, started: float) -> None:
        """The attempt started at ``started`` was not a failure after all."""
        tries = self._tries.get(addr)
        if tries is not None and started in tries:
            tries.remove(started)

    def prune(self, now: float) -> None:
        """Forget addresses with no attempt inside the window (bounds memory under attack)."""
        cutoff = now - self.window
        for addr in [a for a, f in self._tries.items() if not f or f[-1] <= cutoff]:
            del self._tries[addr]
        for addr in [a for a, t in self._blocked.items() if t <= now]:
            del self._blocked[addr]


@define
class Registrations:
    """Accounts made with ``new`` per client address: ``limit`` an hour, 0 = unlimited.

    One is counted just before the account is created and given back if that
    fails, so registrations racing in parallel cannot pass the limit together.
    """

    limit: int = 5
    window: float = 3600.0
    max_addresses: int = 100_000
    _made: dict[str, deque[float]] = field(factory=dict)

    def full(self, addr: str, now: float) -> bool:
        if not self.limit:
            return False
        made = self._made.get(addr)
        if made is None:
            return False
        while made and made[0] <= now - self.window:
            made.popleft()
        if not made:
            del self._made[addr]
            return False
        return len(made) >= self.limit

    def take(self, addr: str, now: float) -> bool:
        """Count one registration from ``addr``; False (nothing counted) when it is over."""
        if not self.limit:
            return True
        if self.full(addr, now):
            return False
        made = self._made.get(addr)
        if made is None:
            if len(self._made) >= self.max_addresses:
                self._prune(now)
            made = self._made[addr] = deque(maxlen=self.limit)
        made.append(now)
        return True

    def give_back(self, addr: str, taken: float) -> None:
        made = self._made.get(addr)
        if made is not None and taken in made:
            made.remove(taken)

    def _prune(self, now: float) -> None:
        cutoff = now - self.window
        for addr in [a for a, m in self._made.items() if not m or m[-1] <= cutoff]:
            del self._made[addr]


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
