"""The locked accounts, in memory on every node, and which accounts' pages are not served.

The personal pages answer every request from memory and the disk, never the store: a
locked, banned or deleted user's pages must answer the same 404 as a missing user's,
and a store round trip per request would let anyone make the store work. So the locked
names are held here as a set, read from the store at start and every :data:`REFRESH`
seconds, changed at once by a ``lock`` or ``unlock`` on this node and, through the
hub's :data:`LOCKED` announcement, on the others; a user ban is read from the ban list
every node already holds (``ops/bans.py``); a deleted account's home is gone, so its
pages are missing like any other's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import define, field
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from shellserver.ops.bans import BanList
from shellserver.shell.people import USER_DELETED
from shellserver.store.accounts import AccountDB, AccountStore

log = Logger()

#: Seconds after which the set is read again from the store (announcements are at most once).
REFRESH = 60.0
#: The announcement of a lock or an unlock: ``{"user", "locked"}``.
LOCKED = "lock"


@define(eq=False)
class Locks:
    """Every locked account of the cluster, as this node knows it."""

    store: AccountStore
    _names: set[str] = field(init=False, factory=set)
    _loading: bool = field(init=False, default=False)
    #: Changes made while a read is under way, put back on top of what it returns.
    _pending: dict[str, bool] = field(init=False, factory=dict)

    def __contains__(self, user: object) -> bool:
        return user in self._names

    def set(self, user: str, locked: bool) -> None:
        """A lock or an unlock made here or heard from another node: in force at once."""
        if self._loading:
            self._pending[user] = locked
        if locked:
            self._names.add(user)
        else:
            self._names.discard(user)

    def refresh(self) -> None:
        """Read the store's locked names in the background (at start, then every
        :data:`REFRESH` seconds); a read still under way is not doubled."""
        if self._loading:
            return
        self._loading = True
        d = self.store.run_db(self.store.db.locked_names)
        d.addCallbacks(self._loaded, self._load_failed)

    def _loaded(self, names: list[str]) -> None:
        self._loading = False
        found = set(names)
        for user, locked in self._pending.items():
            if locked:
                found.add(user)
            else:
                found.discard(user)
        self._pending.clear()
        self._names = found

    def _load_failed(self, failure: Any) -> None:
        """The set stays as it was; the next refresh tries again."""
        self._loading = False
        self._pending.clear()
        log.warn("cannot read the locked accounts from the store: {error}", error=failure.value)

    def load_now(self, db: AccountDB) -> None:
        """At start-up, before the reactor runs: the locked names, read directly, so the first
        page request already meets them."""
        self._names = set(db.locked_names())

    def heard(self, kind: str, fields: dict[str, Any]) -> None:
        """Another node's lock, unlock or deletion (``IHub.subscribe_announcements``)."""
        user = fields.get("user")
        if not isinstance(user, str):
            return
        if kind == LOCKED:
            self.set(user, bool(fields.get("locked")))
        elif kind == USER_DELETED:
            self.set(user, False)


def pages_hidden(locks: Locks, bans: BanList, clock: IReactorTime) -> Callable[[str], bool]:
    """Whether ``user``'s pages are withheld (answered as a missing user's): locked, or banned
    by name. Two lookups in memory, no store round trip."""

    def hidden(user: str) -> bool:
        return user in locks or bans.login(user, "", clock.seconds()) is not None

    return hidden
