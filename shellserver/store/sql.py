"""The thin layer between the store's SQL and a database: SQLite or PostgreSQL.

The store's SQL is written once, with ``?`` placeholders and plain SQL both databases take
(identifiers PostgreSQL reserves, such as ``user``, in double quotes). Each database is an
:class:`ISQL`: it runs that SQL (PostgreSQL's driver gets ``%s`` for each ``?``), groups
statements into one write transaction at a time, reads and sets the schema version, and turns
its driver's errors into the store's own (:class:`Duplicate`, :class:`ConstraintFailed`,
:class:`StoreUnavailable`), so the code above never names a driver.

What differs and stays here or in the dialect: the DDL of each migration, the way one writer
at a time is had (SQLite's ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), where the version
lives, and the id a new row got (``lastrowid`` or ``RETURNING``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from attrs import frozen
from zope.interface import Attribute, Interface


class StoreError(Exception):
    """Every refusal of the store, caught as one where a one-line message is all that is needed
    (start-up, the CLI) rather than a traceback."""


class StoreTooNew(StoreError):
    """The store was migrated by a newer shellserver: refused at start rather than read with a
    schema this code does not know (a downgrade must not damage data)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached now (PostgreSQL stopped, the network cut, no pooled
    connection in time): a moment's outage, after which the pool connects again by itself.
    Its text names the store without its password."""


class ConstraintFailed(StoreError):
    """A row a constraint refused (a check, a foreign key): the same error from both
    databases, so callers catch one class."""


class Duplicate(ConstraintFailed):
    """A unique key or primary key refused the row: the database decided inside the write,
    so two racing inserts cannot both win."""


@frozen
class Rows:
    """What a statement gave, read in full before its connection went back: the rows, the
    count of rows changed, and the id of a row inserted (SQLite only; PostgreSQL's comes from
    :meth:`ISQL.insert`). Shaped like a DB-API cursor, so code written against SQLite's
    ``fetchone``/``fetchall``/``rowcount`` reads it unchanged."""

    rows: list[tuple[Any, ...]]
    rowcount: int
    lastrowid: int | None = None

    def fetchone(self) -> Any:
        """The first row, or None (typed ``Any`` as sqlite3's cursor is, so ``(n,) =
        rows.fetchone()`` reads as it did on a cursor)."""
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        """Every row (each query the store makes is bounded, by a key or a LIMIT)."""
        return self.rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        """Row by row, as iterating a cursor does."""
        return iter(self.rows)


class ISQL(Interface):
    """One database as the store uses it, from one or several database threads."""

    dialect = Attribute("'sqlite' or 'postgresql'")
    where = Attribute("the store's name in messages: a path, or a URL without its password")
    up = Attribute("whether the last use reached the database (``status``; a file: always)")

    def connect() -> None:
        """Open the database (a file, a pool of connections); StoreUnavailable if it cannot be
        reached."""

    def migrate(target: int, steps: Mapping[int, Any]) -> None:
        """Bring the schema from its version to ``target`` with ``steps[v]`` (version v to
        v + 1) in one transaction, one node at a time; StoreTooNew for a newer schema."""

    def version() -> int:
        """The schema version stored (0: nothing made yet)."""

    def close() -> None:
        """Close every connection; a database never opened has nothing to close."""

    def execute(sql: str, params: Sequence[Any] = ()) -> Rows:
        """Run one statement (``?`` placeholders) in the current transaction, or on its own
        (committed at once) outside one."""

    def executemany(sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """One statement for each row of parameters; the rows changed in all."""

    def insert(sql: str, params: Sequence[Any] = (), key: str = "id") -> int:
        """An ``INSERT`` of one row; the value of its generated ``key`` column."""

    def transaction() -> AbstractContextManager[ISQL]:
        """A write transaction: one at a time over the whole store, committed at the end of
        the block, rolled back on any exception. Not nested. ``with sql.transaction() as
        conn:`` gives this ISQL, so code written for a sqlite3 connection reads unchanged."""

    def ping() -> None:
        """A round trip, for the store's health (``shellserver_store_up``); raises
        StoreUnavailable when the database cannot be reached."""


_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?|%")


@functools.lru_cache(maxsize=1024)
def pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (and a literal ``%`` as ``%%``), leaving quoted
    strings, quoted identifiers and comments as they are; cached, as the store's statements are
    a fixed set of literals."""

    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        return token

    return _TOKEN.sub(swap, sql)


def statements(script: str) -> list[str]:
    """A migration's script split into statements (none of the store's DDL has a ``;`` inside
    a literal)."""
    return [s.strip() for s in script.split(";") if s.strip()]
