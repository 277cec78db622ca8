"""Sessions parked in the store by a restart or a drain, for any node to resume.

``shellserver restart`` (and ``drain``) write every session of the node here,
attached and detached alike, before the process stops: its user, tty name,
node, when it was parked, until when it may be resumed (the rest of its
``--linger``), and its state as one JSON text (the shell's business:
``shell/parking.py``). A node that starts takes its own back into memory as
detached sessions; a login on any node finds the user's parked sessions of
nodes that are not running and may take one. *Take* is a select and a delete
in one transaction, so two nodes never both get the same session.

Plain SQL with ``?`` placeholders, one statement at a time.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from shellserver.store.accounts import AccountDB

_COLS = "id, node, owner, tty, parked, until, state"
#: At most this many rows are taken at once (a node's start, the sweep of expired ones).
TAKE_LIMIT = 10_000


@frozen
class Parked:
    """One parked session: ``state`` is the JSON text the shell wrote."""

    id: int
    node: str
    owner: str
    tty: str
    parked: float
    until: float
    state: str


def _row(row: tuple[Any, ...]) -> Parked:
    return Parked(*row)


def park(db: AccountDB, rows: list[tuple[str, str, str, float, float, str]]) -> int:
    """Write (node, owner, tty, parked, until, state) rows in one transaction; how many.
    A row whose account is gone meanwhile is skipped, not an error for the others."""
    written = 0
    with db._transaction() as conn:
        for node, owner, tty, parked, until, state in rows:
            exists = conn.execute("SELECT 1 FROM users WHERE name=?", (owner,)).fetchone()
            if exists is None:
                continue
            conn.execute(
                "INSERT INTO parked (node, owner, tty, parked, until, state) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (node, owner, tty, parked, until, state),
            )
            written += 1
    return written


def take_of_node(db: AccountDB, node: str | None, now: float) -> list[Parked]:
    """Take the sessions ``node`` parked (None: every node's, for a server alone) that may
    still be resumed; the oldest first."""
    where, args = ("node=? AND ", (node,)) if node is not None else ("", ())
    with db._transaction() as conn:
        rows = conn.execute(
            f"SELECT {_COLS} FROM parked WHERE {where}until > ? ORDER BY id LIMIT ?",
            (*args, now, TAKE_LIMIT),
        ).fetchall()
        for row in rows:
            conn.execute("DELETE FROM parked WHERE id=?", (row[0],))
    return [_row(r) for r in rows]


def parked_of(db: AccountDB, owner: str, now: float) -> list[Parked]:
    """``owner``'s parked sessions that may still be resumed, oldest first (not taken)."""
    rows = db._db.execute(
        f"SELECT {_COLS} FROM parked WHERE owner=? AND until > ? ORDER BY id LIMIT 100",
        (owner, now),
    ).fetchall()
    return [_row(r) for r in rows]


def take(db: AccountDB, parked_id: int) -> Parked | None:
    """Take one parked session by id; None if another node took it first."""
    with db._transaction() as conn:
        row = conn.execute(f"SELECT {_COLS} FROM parked WHERE id=?", (parked_id,)).fetchone()
        if row is None:
            return None
        conn.execute("DELETE FROM parked WHERE id=?", (parked_id,))
    return _row(row)


def take_expired(db: AccountDB, now: float) -> list[Parked]:
    """Take the sessions no one resumed in time (their held mail is then saved)."""
    with db._transaction() as conn:
        rows = conn.execute(
            f"SELECT {_COLS} FROM parked WHERE until <= ? ORDER BY id LIMIT ?",
            (now, TAKE_LIMIT),
        ).fetchall()
        for row in rows:
            conn.execute("DELETE FROM parked WHERE id=?", (row[0],))
    return [_row(r) for r in rows]
