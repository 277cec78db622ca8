"""The audit ledger: one record per admin action, kept in the store, only ever appended to.

Nothing here updates or deletes a record: the ledger answers "who did what to whom, from
where, on which node" after the fact, so the product offers no way to rewrite it (an
operator with the database file can, as with any file; backups keep older copies). The
JSON log events stay as they are; the ledger is what outlives the logs' rotation.

:class:`Ledger` is the face every admin operation calls (``ledger.record(...)``): from a
session, from the control socket, and, through :func:`append` on the store directly, from
the offline CLI.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from attrs import define, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from shellserver.store.accounts import AccountDB, AccountStore

log = Logger()

#: The ``from`` of an action taken through the ``shellserver`` command line.
CLI = "cli"
#: Characters of a reason (or a wall's text) kept in a record: what an admin typed is bounded
#: by the line limit in a session, but the control socket takes up to 64 KiB.
REASON_LIMIT = 4096
#: ``shellserver audit`` shows this many records unless told otherwise (``--limit``).
DEFAULT_LIMIT = 100
#: The most records one ``audit`` call reads: its answer is held whole before it is sent.
MAX_LIMIT = 10000

_COLS = "id, at, actor, origin, action, target, reason, expires, node"


@frozen
class AuditRecord:
    """One admin action as the ledger keeps it. ``target`` is None for actions on no one
    (``wall``, ``shutdown``); ``expires`` is when a timed action ends (a mute, a ban, the
    time a shutdown stops the server)."""

    id: int
    at: float
    actor: str
    #: Where it was done from: the session's tty (``tel/3``) or ``cli``.
    origin: str
    action: str
    target: str | None
    reason: str | None
    expires: float | None
    node: str


@frozen
class AuditQuery:
    """What ``shellserver audit`` asks for: records at or after ``since`` (a time), by
    ``actor``, on ``target``, newest first, at most ``limit``."""

    since: float | None = None
    actor: str | None = None
    target: str | None = None
    limit: int = DEFAULT_LIMIT


def _bounded(text: str | None) -> str | None:
    if text is None or len(text) <= REASON_LIMIT:
        return text
    return text[: REASON_LIMIT - 1] + "…"


def append(
    db: AccountDB,
    at: float,
    actor: str,
    origin: str,
    action: str,
    target: str | None,
    reason: str | None,
    expires: float | None,
    node: str,
) -> int:
    """Add one record (database thread, or the offline CLI holding the data dir's lock); its id.

    The only write the ledger has: an INSERT, never an UPDATE or a DELETE.
    """
    with db._transaction():
        cur = db._db.execute(
            "INSERT INTO audit (at, actor, origin, action, target, reason, expires, node) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (at, actor, origin, action, target or None, _bounded(reason), expires, node),
        )
    return int(cur.lastrowid or 0)


def records(db: AccountDB, query: AuditQuery) -> list[AuditRecord]:
    """Newest first (by id: the order they were written in, whatever the nodes' clocks say),
    filtered and bounded by ``query``."""
    where: list[str] = []
    params: list[Any] = []
    if query.since is not None:
        where.append("at >= ?")
        params.append(query.since)
    if query.actor is not None:
        where.append("actor = ?")
        params.append(query.actor)
    if query.target is not None:
        where.append("target = ?")
        params.append(query.target)
    sql = f"SELECT {_COLS} FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(max(0, min(query.limit, MAX_LIMIT)))
    return [_record(r) for r in db._db.execute(sql, params).fetchall()]


def _record(row: Sequence[Any]) -> AuditRecord:
    return AuditRecord(*row)


def record_dict(record: AuditRecord, stamp: Any) -> dict[str, Any]:
    """A record as ``audit --json`` prints it (docs/admin.md); ``stamp`` writes a time."""
    return {
        "id": record.id,
        "time": stamp(record.at),
        "actor": record.actor,
        "from": record.origin,
        "action": record.action,
        "target": record.target,
        "reason": record.reason,
        "expires": None if record.expires is None else stamp(record.expires),
        "node": record.node,
    }


@define(eq=False)
class Ledger:
    """The ledger as the server writes it: ``record`` never blocks the reactor (the insert runs
    on the store's thread) and never fails its caller (the action is done by then; a store
    that cannot take the record gets a log line carrying every field instead)."""

    store: AccountStore
    #: This server's node name (``--node``, or the default the server uses).
    node: str
    clock: IReactorTime

    def record(
        self,
        actor: str,
        origin: str,
        action: str,
        target: str | None = None,
        reason: str | None = None,
        expires: float | None = None,
    ) -> Deferred[None]:
        """One admin action: who (``actor``), from where (a tty or :data:`CLI`), what
        (``action``: ``kick``, ``mute``, ``ban``...), to whom, why, until when. Fires once
        the record is written (or its failure logged)."""
        at = self.clock.seconds()
        store = self.store
        d = store.run_db(
            append, store.db, at, actor, origin, action, target, reason, expires, self.node
        )
        fields = {
            "actor": actor,
            "origin": origin,
            "action": action,
            "target": target,
            "reason": reason,
            "expires": expires,
        }
        d.addCallbacks(lambda _: None, _not_recorded, errbackKeywords=fields)
        return d

    def records(self, query: AuditQuery) -> Deferred[list[AuditRecord]]:
        """``shellserver audit`` through the control socket (database thread)."""
        return self.store.run_db(records, self.store.db, query)


def _not_recorded(failure: Failure, **fields: Any) -> None:
    """The store refused the record (a full disk, a store that is down): the log keeps it."""
    error = (
        f"{type(failure.value).__name__}: {failure.value}"
        if failure.check(sqlite3.Error, OSError)
        else repr(failure.value)
    )
    log.error(
        "audit record not written ({error}): {action} by {actor} ({origin}) on {target}",
        event="audit_not_recorded",
        error=error,
        **fields,
    )
