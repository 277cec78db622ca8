"""Per-account password pacing: guessing from many addresses meets one slow, fixed pace.

The per-address lockout (:class:`throttle.FailedLogins`) stops one address,
but guesses at one account spread over many addresses each stay under it.
So each account (the name as typed: unknown names too, or the pace would tell
which accounts exist) counts its failed passwords as well: once it has
``limit`` (10) in ``window`` (10 minutes), from any number of addresses, its
password checks are handed out one per ``interval`` (10 s). A check waits for
its turn and is then answered as always (``Login incorrect``, or the session).

Not a lockout the attacker could turn against the owner: the right password
still works on its turn, a public-key login is never paced, and neither is a
login from an address that logged in to the account before (remembered here
for this run, and read once from the store's login history when the account
is first paced).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import TypeVar

from attrs import Factory, define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from shellserver.ops.throttle import Recent

log = Logger()

K = TypeVar("K")
V = TypeVar("V")

#: Characters of a typed name kept as the key (longer names are never accounts).
KEY_LENGTH = 64

#: Reads the addresses that logged in to an account before (the store's login history).
History = Callable[[str], Deferred[Iterable[str]]]


def _no_history(name: str) -> Deferred[Iterable[str]]:
    return succeed(())


@define(eq=False)
class AccountPacing:
    """The per-account pace (see the module's docstring), shared by every wire that checks a
    password (telnet and the browser's login dialogue, SSH's userauth), so no wire is a way
    around it. Tables are bounded: a flood of made-up names forgets the oldest."""

    clock: IReactorTime
    limit: int = 10
    window: float = 600.0
    interval: float = 10.0
    #: Accounts remembered (failures, turns): past that the one first seen is forgotten.
    max_accounts: int = 100_000
    #: Account–address pairs that logged in, remembered to spare them the pace.
    max_known: int = 100_000
    history: History = _no_history
    _failures: Recent = field(
        default=Factory(lambda self: Recent(self.window, self.limit, self.max_accounts), True)
    )
    _known: dict[tuple[str, str], None] = field(factory=dict)
    #: Accounts whose login history has been read into ``_known`` (once per account).
    _read: dict[str, None] = field(factory=dict)
    #: When each paced account's next check may start.
    _next: dict[str, float] = field(factory=dict)
    #: Checks waiting for their turn, with a way to ask whether their connection is still there.
    _waiting: dict[str, deque[tuple[Deferred[bool], Callable[[], bool]]]] = field(factory=dict)
    _timers: dict[str, IDelayedCall] = field(factory=dict)
    #: Checks allowed and not yet finished, per account (bounded by the connections).
    _in_flight: dict[str, int] = field(factory=dict)

    #: Checks waiting for one in flight to end (see :meth:`_turn`).
    _held: dict[str, deque[Deferred[None]]] = field(factory=dict)

    def paced(self, name: str) -> bool:
        """Has ``name`` had ``limit`` failures in the window?"""
        return self._failures.count(_key(name), self.clock.seconds()) >= self.limit

    def turn(
        self, name: str, peer: str, alive: Callable[[], bool] = lambda: True
    ) -> Deferred[bool]:
        """Fires True when the password check for ``name`` from ``peer`` may start: at once
        unless the account is paced (and ``peer`` unknown to it); then at its turn, one per
        ``interval``. False when the connection was gone (``alive()``) by its turn. Every
        True must be followed by :meth:`finished`."""
        key = _key(name)
        if self._free(key, peer):
            # Every login asks; nearly all go at once. Answered without a coroutine: the
            # same decision as the first step of :meth:`_turn`, at a fraction of the cost.
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
            return succeed(True)
        d = Deferred.fromCoroutine(self._turn(key, peer, alive))
        return d.addCallback(self._started, key)

    def _free(self, name: str, peer: str) -> bool:
        """May the check start now, without waiting? A known address, or an account whose
        failures and checks in flight are under ``limit`` (what :meth:`_turn` decides
        first, so both paths agree)."""
        if (name, peer) in self._known:
            return True
        failures = self._failures.count(name, self.clock.seconds())
        return failures + self._in_flight.get(name, 0) < self.limit

    def _started(self, go: bool, name: str) -> bool:
        if go:
            self._in_flight[name] = self._in_flight.get(name, 0) + 1
        return go

    def finished(self, name: str, failed: bool) -> None:
        """The check :meth:`turn` allowed is over; a wrong password counts (from any address)."""
        key = _key(name)
        left = self._in_flight.get(key, 0) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)
        if failed:
            now = self.clock.seconds()
            self._failures.add(key, now)
            if self._failures.count(key, now) == self.limit:
                log.warn(
                    "password attempts for {user} are paced to one per {interval:.0f} s: "
                    "{limit} failures in {window:.0f} s",
                    event="account_paced",
                    user=key,
                    interval=self.interval,
                    limit=self.limit,
                    window=self.window,
                )
        held = self._held.pop(key, None)
        while held:  # each asks again: one may go now, or all join the pace
            held.popleft().callback(None)

    async def _turn(self, name: str, peer: str, alive: Callable[[], bool]) -> bool:
        """Checks in flight count as failures until they end, as they do per address:
        otherwise guesses sent in parallel would all be checked before the first failure
        was known. A check over that waits for one to end (a burst of right passwords, a
        storm of logins, is only queued), then asks again."""
        if (name, peer) in self._known:
            return True
        while not self.paced(name):
            failures = self._failures.count(name, self.clock.seconds())
            if failures + self._in_flight.get(name, 0) < self.limit:
                return True
            freed: Deferred[None] = Deferred()
            self._held.setdefault(name, deque()).append(freed)
            await freed
            if not alive():
                return False
        if name not in self._read:
            _remember(self._read, name, None, self.max_accounts)
            try:
                for known_peer in await self.history(name):
                    _remember(self._known, (name, known_peer), None, self.max_known)
            except Exception:
                log.failure("reading the login history of {user} failed", user=name)
            if (name, peer) in self._known:
                return True
            if not alive():
                return False
        now = self.clock.seconds()
        if name not in self._waiting and now >= self._next.get(name, now):
            _remember(self._next, name, now + self.interval, self.max_accounts)
            return True
        queue = self._waiting.setdefault(name, deque())
        _let_go_of_the_gone(queue)
        entry: tuple[Deferred[bool], Callable[[], bool]]
        d: Deferred[bool] = Deferred(lambda d: _discard(queue, entry))
        entry = (d, alive)
        queue.append(entry)
        self._schedule(name)
        return await d

    def _schedule(self, name: str) -> None:
        if name in self._timers:
            return
        wait = max(0.0, self._next.get(name, 0.0) - self.clock.seconds())
        self._timers[name] = self.clock.callLater(wait, self._release, name)

    def _release(self, name: str) -> None:
        """The account's turn: the first waiter whose connection is still there goes."""
        del self._timers[name]
        queue = self._waiting.get(name)
        while queue:
            d, alive = queue.popleft()
            if not alive():
                d.callback(False)  # costs no turn
                continue
            _remember(self._next, name, self.clock.seconds() + self.interval, self.max_accounts)
            d.callback(True)
            break
        if queue:
            self._schedule(name)
        else:
            self._waiting.pop(name, None)

    def succeeded(self, name: str, peer: str) -> None:
        """``peer`` logged in to ``name`` (any method): its later passwords are not paced."""
        key = (_key(name), peer)
        self._known.pop(key, None)  # seen again: the last to be forgotten
        _remember(self._known, key, None, self.max_known)

    def accounts(self) -> int:
        """Accounts remembered in each table, at most: bounded by ``max_accounts``."""
        return max(len(self._failures), len(self._next), len(self._read))


def _key(name: str) -> str:
    return name[:KEY_LENGTH]


def _remember(table: dict[K, V], key: K, value: V, most: int) -> None:
    """Set ``table[key]``; a new key past ``most`` forgets the entries first added."""
    if key not in table:
        while table and len(table) >= most:
            del table[next(iter(table))]
    table[key] = value


def _let_go_of_the_gone(queue: deque[tuple[Deferred[bool], Callable[[], bool]]]) -> None:
    """Answer False at once to waiters whose connection is gone, so a client that hangs up
    and comes back cannot pile up waiters (and their connections) until the next turn."""
    gone = [entry for entry in queue if not entry[1]()]
    for entry in gone:
        queue.remove(entry)
        entry[0].callback(False)


def _discard(
    queue: deque[tuple[Deferred[bool], Callable[[], bool]]],
    entry: tuple[Deferred[bool], Callable[[], bool]],
) -> None:
    if entry in queue:
        queue.remove(entry)
