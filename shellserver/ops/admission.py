"""Who may connect at all: ``--max-connections``, ``--max-unauth``, ``--max-unauth-per-addr``.

A login costs a password hash on a thread; connections that never log in
cost a file descriptor and a timer for 60 s. Counting them, in total and per
address (like OpenSSH's MaxStartups), keeps one noisy address from filling
the login queue for everyone else, and keeps the process inside its file
descriptor limit (see :func:`raise_fd_limit`).

Under pressure (from half of ``--max-unauth`` on) new connections are dropped
at random with a chance growing from 30 % to 100 % at the limit, OpenSSH's
``MaxStartups 100:30:200``, and the login grace shortens from 60 s towards
10 s, so half-open connections churn instead of holding every slot for a
minute. The random source is passed in, so tests decide every draw.

Connections that make no progress (telnet and the browser: no login name
typed yet; SSH: no key exchange completed) are *stalled*. When a newcomer
would be refused (a full house, or the early drop), the oldest stalled
connection that has had ``MIN_STALL_AGE`` seconds is closed instead to make
room. Where none has had it yet, an address holding at least two more stalled
connections than the newcomer's address holds waiting ones gives up its oldest
(``FAIR_SHARE``): a flood from a few addresses that reconnects faster than
``MIN_STALL_AGE`` cannot keep a clean address out. Every connection the server
closes without a login (closed so, or timed out at the login grace) counts
against its address's penalty
(``penalties.py``): an address that keeps connections stalled is refused at
once for a growing time, so a flood of half-open connections from a few
addresses churns among themselves and then stops, while a clean address gets
in.
"""

from __future__ import annotations

import resource
from collections import Counter
from collections.abc import Callable
from random import Random

from attrs import define, field
from twisted.logger import Logger

from shellserver.ops.bans import BanList
from shellserver.ops.penalties import Penalties
from shellserver.ops.throttle import LogLimit

log = Logger()

TOO_MANY = "Too many connections; try again later."
TOO_MANY_UNAUTH = "Too many connections waiting to log in; try again later."
TOO_MANY_FROM_YOU = "Too many connections from your address waiting to log in; try again later."
PENALISED = "Too many stalled connections from your address; try again later."
#: Told to a stalled connection closed to make room for a newcomer.
MADE_ROOM = "Too many connections waiting to log in; closing those that sent nothing."

#: A stalled connection is closed to make room only once it has had this long to make progress.
MIN_STALL_AGE = 2.0

#: Before any stalled connection has had ``MIN_STALL_AGE``, an address holding this many more
#: stalled connections than the newcomer's address holds waiting ones gives up its oldest.
FAIR_SHARE = 2

#: The chance of a random early drop at half of ``--max-unauth`` (OpenSSH's ``rate``).
EARLY_DROP = 0.30
#: The shortest login grace, reached when ``--max-unauth`` connections are waiting.
MIN_GRACE = 10.0

#: Descriptors kept for everything that is not a client: store, logs, listeners, threads.
FD_HEADROOM = 64


@define(eq=False)
class Stalled:
    """An admitted connection that has made no progress yet; ``close`` ends it when room is
    needed (its admission slot is already given back then)."""

    peer: str
    since: float
    close: Callable[[], None]


@define(eq=False)
class Admission:
    """Counts of open connections; every limit of 0 means unlimited."""

    max_connections: int = 0
    max_unauth: int = 0
    max_unauth_per_addr: int = 0
    connections: int = 0
    unauth: int = 0
    _unauth_by_addr: Counter[str] = field(factory=Counter)
    random: Random = field(factory=Random)
    #: Refusals not yet logged, and when the last log line was written.
    _unlogged: int = 0
    _logged_at: float = float("-inf")
    penalties: Penalties = field(factory=Penalties)
    _penalised_log: LogLimit = field(factory=LogLimit)
    #: Stalled connections, oldest first.
    _stalled: dict[Stalled, None] = field(factory=dict)
    #: How many of ``_stalled`` each address holds.
    _stalled_by_addr: Counter[str] = field(factory=Counter)
    #: Addresses and networks banned: refused before anything else, and not counted.
    bans: BanList = field(factory=BanList)
    _banned_log: LogLimit = field(factory=LogLimit)

    def admit(self, peer: str, now: float = 0.0) -> str | None:
        """Count a new connection from ``peer``; or say why it is refused (and count nothing).

        Where a full house or the early drop would refuse it, the oldest stalled
        connection is closed instead, if one has had its chance (``MIN_STALL_AGE``).
        A banned address is refused first, before any prompt, and logged apart from the
        limits' refusals (at most a line a minute).
        """
        ban = self.bans.address(peer, now)
        if ban is not None:
            count = self._banned_log.due(now)
            if count:
                log.info(
                    "refused {count} connection(s) from banned addresses; latest from {peer} "
                    "(ban {target})",
                    event="banned_refused",
                    count=count,
                    peer=peer,
                    target=ban.target,
                )
            return ban.address_refusal()
        if self.penalties.refused(peer, now):
            return self._refuse(PENALISED)
        if self.max_connections and self.connections >= self.max_connections:
            return self._refuse(TOO_MANY)
        yours_full = bool(
            self.max_unauth_per_addr
            and self._unauth_by_addr.get(peer, 0) >= self.max_unauth_per_addr
        )
        if (
            self.max_unauth
            and self.unauth >= self.max_unauth
            and (yours_full or not self._make_room(peer, now))
        ):
            return self._refuse(TOO_MANY_UNAUTH)
        if yours_full:
            return self._refuse(TOO_MANY_FROM_YOU)
        pressure = self.pressure()
        if (
            pressure is not None
            and self.random.random() < EARLY_DROP + (1 - EARLY_DROP) * pressure
            and not self._make_room(peer, now)
        ):
            return self._refuse(TOO_MANY_UNAUTH)
        self.connections += 1
        self.unauth += 1
        self._unauth_by_addr[peer] += 1
        return None

    def pressure(self) -> float | None:
        """None below half of ``--max-unauth``; from there 0.0 rising to 1.0 at the limit."""
        if not self.max_unauth:
            return None
        start = self.max_unauth // 2
        if self.unauth < start:
            return None
        return min(1.0, (self.unauth - start) / max(1, self.max_unauth - start))

    def login_grace(self, base: float) -> float:
        """The login timeout for now: ``base``, shortened towards MIN_GRACE under pressure."""
        pressure = self.pressure()
        if pressure is None or base <= MIN_GRACE:
            return base
        return base - (base - MIN_GRACE) * pressure

    def stalled(self, peer: str, now: float, close: Callable[[], None]) -> Stalled:
        """An admitted connection waits, with no progress yet; ``close`` must end it without
        giving back its slot (this does that) when the room is needed."""
        entry = Stalled(peer, now, close)
        self._stalled[entry] = None
        self._stalled_by_addr[peer] += 1
        return entry

    def progressed(self, entry: Stalled | None) -> None:
        """The connection made progress (a login name, a key exchange): no longer stalled.
        Also when it ends for any other reason."""
        if entry is not None and entry in self._stalled:
            del self._stalled[entry]
            self._forget_stalled(entry.peer)

    def timed_out(self, peer: str, now: float) -> None:
        """A connection of ``peer`` reached its login grace without logging in: penalised."""
        self._penalise(peer, now, "timed out")

    def _make_room(self, peer: str, now: float) -> bool:
        """Close a stalled connection for ``peer``'s newcomer; True if one was.

        The oldest, if it has had its chance; otherwise the oldest of the address with the
        most stalled connections, if that holds ``FAIR_SHARE`` more than ``peer`` waits with.
        """
        if not self._stalled:
            return False
        victim = next(iter(self._stalled))
        if now - victim.since < MIN_STALL_AGE:
            busiest, held = max(self._stalled_by_addr.items(), key=lambda item: item[1])
            if held < self._unauth_by_addr.get(peer, 0) + FAIR_SHARE:
                return False
            victim = next(s for s in self._stalled if s.peer == busiest)
        del self._stalled[victim]
        self._forget_stalled(victim.peer)
        self.gone(victim.peer, logged_in=False)
        self._penalise(victim.peer, now, "stalled")
        victim.close()
        return True

    def _forget_stalled(self, peer: str) -> None:
        left = self._stalled_by_addr[peer] - 1
        if left > 0:
            self._stalled_by_addr[peer] = left
        else:
            del self._stalled_by_addr[peer]

    def _penalise(self, peer: str, now: float, why: str) -> None:
        if not self.penalties.stalled(peer, now):
            return
        count = self._penalised_log.due(now)
        if count:
            log.info(
                "refusing {count} address(es) for stalled connections; latest {peer} for "
                "{seconds:.0f} s: its connections {why} without logging in",
                event="penalised",
                count=count,
                peer=peer,
                seconds=self.penalties.left(peer, now),
                why=why,
            )

    def logged_in(self, peer: str) -> None:
        """An admitted connection has a session now: it no longer waits to log in."""
        self._forget_unauth(peer)

    def gone(self, peer: str, logged_in: bool) -> None:
        """An admitted connection closed."""
        self.connections -= 1
        if not logged_in:
            self._forget_unauth(peer)

    def refusals_to_log(self, now: float, every: float = 60.0) -> int:
        """How many refusals to report now: at most one log line a minute under a flood."""
        if not self._unlogged or now - self._logged_at < every:
            return 0
        count, self._unlogged, self._logged_at = self._unlogged, 0, now
        return count

    def _refuse(self, why: str) -> str:
        self._unlogged += 1
        return why

    def _forget_unauth(self, peer: str) -> None:
        self.unauth -= 1
        left = self._unauth_by_addr[peer] - 1
        if left > 0:
            self._unauth_by_addr[peer] = left
        else:
            del self._unauth_by_addr[peer]


def raise_fd_limit(max_connections: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to fit ``max_connections`` (0: as far as allowed).

    Returns (the soft limit now, the descriptors wanted). The hard limit is
    not ours to raise; when it is too low the caller says so and admits
    fewer connections, so clients are refused with a message instead of
    meeting EMFILE at accept.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    if max_connections:
        wanted = max_connections + FD_HEADROOM
    else:
        wanted = hard if hard != infinite else 1 << 20
    target = wanted if hard == infinite else min(wanted, hard)
    if soft != infinite and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == infinite:
        soft = max(wanted, 1 << 20)
    return soft, wanted


@define(frozen=True)
class Shares:
    """``--max-connections`` split between the listeners, so none takes another's descriptors.

    The web page's plain HTTP connections, the metrics listener and the personal
    pages each get a cap of their own out of the total (at most a quarter of it
    each); the
    login wires (telnet, SSH and the browser's WebSocket, which admission
    counts together) share the rest.
    """

    logins: int
    web_http: int = 0
    metrics: int = 0
    #: The personal pages' HTTP connections (``--pages``).
    pages: int = 0


def split_connections(total: int, web_http: int, metrics: int, pages: int = 0) -> Shares:
    """Reserve ``web_http``, ``metrics`` and ``pages`` (0: no such listener) out of ``total``."""
    quarter = max(1, total // 4)
    web = min(web_http, quarter) if web_http else 0
    scrape = min(metrics, quarter) if metrics else 0
    published = min(pages, quarter) if pages else 0
    return Shares(max(1, total - web - scrape - published), web, scrape, published)


def connection_limit(max_connections: int, fd_soft_limit: int) -> int:
    """The limit to enforce: the configured one, but never past what descriptors allow."""
    fit = max(1, fd_soft_limit - FD_HEADROOM)
    return min(max_connections, fit) if max_connections else fit
