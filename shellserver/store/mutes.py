"""Mutes as the store keeps them: who may not send messages, until when, and why.

The server reads them all at start and keeps them in memory (``shell/mutes.py``), so the
``write`` path never asks the store; these functions run on the database thread, or in the
offline CLI holding the data dir's lock.
"""

from __future__ import annotations

from attrs import frozen

from shellserver.store.accounts import AccountDB, NoSuchUser


@frozen
class MuteRecord:
    """One user's mute: until when (a time), why (None: no reason given), by whom."""

    name: str
    until: float
    reason: str | None
    by: str


def set_mute(
    db: AccountDB, name: str, until: float, reason: str | None, by: str, now: float
) -> MuteRecord:
    """Mute ``name`` until ``until``, replacing an earlier mute; :class:`NoSuchUser` for a name
    with no account (the foreign key says so inside the insert). Expired rows are cleared in
    the same transaction, so the table holds no more than the mutes in force."""
    with db._transaction():
        conn = db._db
        if conn.execute("SELECT 1 FROM users WHERE name=?", (name,)).fetchone() is None:
            raise NoSuchUser(name)
        conn.execute("DELETE FROM mutes WHERE until <= ?", (now,))
        conn.execute(
            "INSERT INTO mutes (name, until, reason, muted_by, muted_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT (name) DO UPDATE SET until=excluded.until, reason=excluded.reason, "
            "muted_by=excluded.muted_by, muted_at=excluded.muted_at",
            (name, until, reason, by, now),
        )
    return MuteRecord(name, until, reason, by)


def clear_mute(db: AccountDB, name: str, now: float) -> bool:
    """End ``name``'s mute; False when none was in force (``unmute`` says so)."""
    with db._transaction():
        cur = db._db.execute("DELETE FROM mutes WHERE name=? AND until > ?", (name, now))
        db._db.execute("DELETE FROM mutes WHERE until <= ?", (now,))
    return cur.rowcount == 1


def active_mutes(db: AccountDB, now: float) -> list[MuteRecord]:
    """Every mute still in force: what each node holds in memory. Bounded by the accounts,
    one row each at most."""
    rows = db._db.execute(
        "SELECT name, until, reason, muted_by FROM mutes WHERE until > ? ORDER BY name", (now,)
    ).fetchall()
    return [MuteRecord(*row) for row in rows]
