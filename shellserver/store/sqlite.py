"""The embedded store's database: one SQLite file in the data dir, one connection.

WAL mode lets clustered nodes on one data dir share the file; ``BEGIN IMMEDIATE`` makes each
write transaction the only writer, across processes. The schema version is SQLite's
``user_version``, and an older store with data is copied beside itself (``.vN.bak``, 0600)
before it is migrated.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from zope.interface import implementer

from shellserver.store.sql import (
    ISQL,
    ConstraintFailed,
    Duplicate,
    Rows,
    StoreError,
    StoreTooNew,
)


@implementer(ISQL)
class SQLite:
    """The SQLite file at ``path``: named now, opened by :meth:`connect`."""

    dialect = "sqlite"
    #: A file is there as long as it is open (its failures are a full or failing disk).
    up = True

    def __init__(self, path: str) -> None:
        self.path = path
        self.where = path
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection; before :meth:`connect` a clear error, never a ``None`` deep in
        a query (the server connects before the reactor runs, so no caller meets it)."""
        conn = self._conn
        if conn is None:
            raise StoreError(f"the store at {self.path} is not open")
        return conn

    def connect(self) -> None:
        """Open and tune: WAL, foreign keys for the cascades, a busy wait for other nodes."""
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            os.chmod(self.path, 0o600)  # password hashes: owner only (-wal/-shm copy this mode)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def version(self) -> int:
        """SQLite's ``user_version``."""
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(
        self, target: int, steps: Mapping[int, Callable[[sqlite3.Connection], None]]
    ) -> None:
        """Copy an older store with data aside, then run each step in one transaction."""
        version = self.version()
        if version > target:
            raise StoreTooNew(
                f"the store at {self.path} has schema version {version}, newer than this "
                f"server understands ({target}); upgrade shellserver"
            )
        if version == target:
            return
        db = self.conn
        if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            copy = f"{self.path}.v{version}.bak"  # an older store with data: keep a copy
            # Password hashes: owner only, like the store, from before the first byte.
            os.close(os.open(copy, os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(copy, 0o600)
            backup = sqlite3.connect(copy)
            with backup:
                db.backup(backup)
            backup.close()
        with self.transaction():
            while version < target:
                steps[version](db)
                version += 1
            db.execute(f"PRAGMA user_version={target}")

    def close(self) -> None:
        """Called at the service's stop after the database thread is done."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """One statement on the one connection (autocommit outside a transaction)."""
        try:
            cur = self.conn.execute(sql, params)
            return Rows(cur.fetchall(), cur.rowcount, cur.lastrowid)
        except sqlite3.IntegrityError as e:
            raise _integrity(e) from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """``executemany`` on the connection; the rows changed."""
        try:
            return int(self.conn.executemany(sql, rows).rowcount)
        except sqlite3.IntegrityError as e:
            raise _integrity(e) from None

    def insert(self, sql: str, params: Sequence[Any] = (), key: str = "id") -> int:
        """The new row's ``lastrowid`` (the INTEGER PRIMARY KEY ``key`` is its alias)."""
        return int(self.execute(sql, params).lastrowid or 0)

    @contextmanager
    def transaction(self) -> Iterator[ISQL]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on any exception."""
        db = self.conn
        db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def ping(self) -> None:
        """The file answers as long as it is open."""
        self.conn.execute("SELECT 1").fetchone()


def _integrity(error: sqlite3.IntegrityError) -> ConstraintFailed:
    text = str(error)
    if "UNIQUE" in text or "PRIMARY KEY" in text:
        return Duplicate(text)
    return ConstraintFailed(text)
