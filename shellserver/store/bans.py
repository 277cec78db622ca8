"""Bans in the store: the ``bans`` table, read and written on the store's database thread.

The store is the truth every node shares; each node keeps an index of it in
memory (``ops/bans.py``) so no connection or login waits for it. Expired bans
are ignored when read and deleted (pruned) whenever the bans are loaded or
listed. Plain SQL with ``?`` placeholders, one statement at a time.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred

from shellserver.ops.bans import MAX_BANS, Ban, BanIndex
from shellserver.store.accounts import AccountDB, AccountStore, StoreError

_COLS = "target, kind, actor, created, expires, reason"


class TooManyBans(StoreError):
    """The store holds :data:`~shellserver.ops.bans.MAX_BANS` bans already."""


def _ban(row: tuple[Any, ...]) -> Ban:
    target, kind, actor, created, expires, reason = row
    return Ban(target, kind, actor, created, expires, reason)


def _prune(db: AccountDB, now: float) -> None:
    db._db.execute("DELETE FROM bans WHERE expires IS NOT NULL AND expires <= ?", (now,))


def add_ban(db: AccountDB, ban: Ban) -> bool:
    """Store ``ban``, replacing a ban of the same target; True if it replaced one. Raises
    TooManyBans when the table is full (expired bans are pruned first)."""
    with db._transaction() as conn:
        _prune(db, ban.created)
        replaced = conn.execute("DELETE FROM bans WHERE target=?", (ban.target,)).rowcount > 0
        (count,) = conn.execute("SELECT count(*) FROM bans").fetchone()
        if count >= MAX_BANS:
            raise TooManyBans(f"too many bans ({MAX_BANS}); unban some first")
        conn.execute(
            f"INSERT INTO bans ({_COLS}) VALUES (?, ?, ?, ?, ?, ?)",
            (ban.target, ban.kind, ban.by, ban.created, ban.expires, ban.reason),
        )
    return replaced


def remove_ban(db: AccountDB, target: str) -> Ban | None:
    """Delete the ban of ``target`` (canonical); the ban removed, or None."""
    with db._transaction() as conn:
        row = conn.execute(f"SELECT {_COLS} FROM bans WHERE target=?", (target,)).fetchone()
        if row is None:
            return None
        conn.execute("DELETE FROM bans WHERE target=?", (target,))
    return _ban(row)


def active_bans(db: AccountDB, now: float) -> list[Ban]:
    """Every ban still in force, oldest first; the expired ones are deleted."""
    with db._transaction() as conn:
        _prune(db, now)
        rows = conn.execute(
            f"SELECT {_COLS} FROM bans ORDER BY created, target LIMIT ?", (MAX_BANS,)
        ).fetchall()
    return [_ban(row) for row in rows]


def load_index(db: AccountDB, now: float) -> BanIndex:
    """The bans in force, indexed (built here, on the database thread, so the reactor only
    swaps it in)."""
    return BanIndex.of(active_bans(db, now))


@frozen
class BanStore:
    """The bans as the reactor uses them: every call runs on the store's database thread."""

    store: AccountStore

    def add(self, ban: Ban) -> Deferred[bool]:
        """:func:`add_ban` off the reactor."""
        return self.store.run_db(add_ban, self.store.db, ban)

    def remove(self, target: str) -> Deferred[Ban | None]:
        """:func:`remove_ban` off the reactor."""
        return self.store.run_db(remove_ban, self.store.db, target)

    def active(self, now: float) -> Deferred[list[Ban]]:
        """:func:`active_bans` off the reactor (``bans``)."""
        return self.store.run_db(active_bans, self.store.db, now)

    def index(self, now: float) -> Deferred[BanIndex]:
        """:func:`load_index` off the reactor."""
        return self.store.run_db(load_index, self.store.db, now)
