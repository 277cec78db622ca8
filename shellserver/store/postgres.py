"""The store in PostgreSQL (``--store postgresql://…``), shared by nodes on many machines.

Through psycopg 3 and a ``psycopg_pool`` connection pool, from the store's database threads,
never the reactor. Each connection is checked as it leaves the pool, so connections that
died with the server are replaced without a user meeting them, and the pool connects again
by itself when PostgreSQL is back. Every write transaction first takes one transaction-scoped
advisory lock, so writes are one at a time as in SQLite (a count of administrators and the
change that depends on it cannot interleave with another node's); migrations run under it
too, so nodes starting together migrate once. The schema version is a one-row table.

The URL is libpq's: ``postgresql://USER[:PASS]@HOST[:PORT]/DB[?sslmode=…]``, with
``PGPASSWORD`` and ``~/.pgpass`` read by libpq as usual. The password is never shown: every
message names the store by the URL without it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool
from zope.interface import implementer

from shellserver.store.accounts import POSTGRESQL_MIGRATIONS, AccountDB
from shellserver.store.pgurl import PostgresURL as PostgresURL
from shellserver.store.pgurl import parse_postgres_url as parse_postgres_url
from shellserver.store.sql import (
    ISQL,
    ConstraintFailed,
    Duplicate,
    Rows,
    StoreError,
    StoreTooNew,
    StoreUnavailable,
    pyformat,
    statements,
)

#: The advisory lock every write transaction (and every migration) takes first: one writer at
#: a time over the whole store ("shellsrv" as a number).
WRITE_LOCK = 0x7368656C6C737276
#: Seconds a store call waits for a connection (or to connect) before the store counts as
#: down: a login then hears "Service temporarily unavailable" rather than hanging.
WAIT = 5.0
#: Connections in the pool, and the database threads that use them.
POOL_SIZE = 4
SCHEMA_TABLE = "shellserver_schema"

# The pool's own warnings (each failed reconnection, every second of an outage) would flood
# stderr; the store's health check logs an outage once, and its end.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


@implementer(ISQL)
class PostgreSQL:
    """A PostgreSQL database through a pool of connections, one per database thread."""

    dialect = "postgresql"

    def __init__(self, url: PostgresURL, size: int = POOL_SIZE, wait: float = WAIT) -> None:
        self.url = url
        self.where = str(url)
        self.size = size
        self.wait = wait
        #: Whether the last use of the database reached it (``shellserver status``).
        self.up = True
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._local = threading.local()

    def _conninfo(self) -> str:
        given = conninfo_to_dict(self.url.conninfo)
        extra: dict[str, Any] = {"application_name": "shellserver"}
        if "connect_timeout" not in given:
            extra["connect_timeout"] = max(1, int(self.wait))
        return make_conninfo(
            self.url.conninfo, **{k: v for k, v in extra.items() if k not in given}
        )

    def connect(self) -> None:
        """One connection first, so a wrong password or host is told in libpq's words, then
        the pool (StoreUnavailable, naming the store without its password)."""
        conninfo = self._conninfo()
        with self._errors("cannot reach the store at"):
            psycopg.connect(conninfo, autocommit=True).close()
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=self.size,
            open=False,
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,
            timeout=self.wait,
            # A connection that cannot be made is retried with a doubling delay until this
            # many seconds have passed, then given up; the next call asks for a new one at
            # once. Short, so the delay never grows to minutes in a long outage: the store
            # is back within seconds of PostgreSQL (the health check calls every 5 s).
            reconnect_timeout=self.wait,
            name="shellserver-store",
        )
        with self._errors("cannot reach the store at"):
            pool.open(wait=True, timeout=self.wait)
        self._pool = pool

    @property
    def pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        """The open pool; before :meth:`connect` a clear error."""
        if self._pool is None:
            raise StoreError(f"the store at {self.where} is not open")
        return self._pool

    def close(self) -> None:
        """Close every pooled connection (at the service's stop, the database threads done)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    @contextmanager
    def _errors(self, doing: str = "the store at") -> Iterator[None]:
        """psycopg's errors as the store's: a lost or refused connection is StoreUnavailable
        (the store is down for a moment), a unique key Duplicate, another constraint
        ConstraintFailed; anything else (a bug in SQL) goes up as it is."""
        try:
            yield
        except pgerrors.UniqueViolation as e:
            raise Duplicate(_first_line(e)) from None
        except psycopg.IntegrityError as e:
            raise ConstraintFailed(_first_line(e)) from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            self.up = False
            raise StoreUnavailable(f"{doing} {self.where}: {_first_line(e)}") from None
        self.up = True

    def _current(self) -> psycopg.Connection[Any] | None:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        return conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """In this thread's transaction, or on a pooled connection of its own (autocommit)."""
        query = pyformat(sql)
        conn = self._current()
        with self._errors():
            if conn is not None:
                return _run(conn, query, params)
            with self.pool.connection() as conn:
                return _run(conn, query, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """One statement per row of parameters, in one round of the pipeline."""
        query = pyformat(sql)
        conn = self._current()
        with self._errors():
            if conn is not None:
                return _run_many(conn, query, rows)
            with self.pool.connection() as conn:
                return _run_many(conn, query, rows)

    def insert(self, sql: str, params: Sequence[Any] = (), key: str = "id") -> int:
        """``RETURNING`` the generated key (psycopg has no ``lastrowid``)."""
        row = self.execute(f'{sql} RETURNING "{key}"', params).fetchone()
        assert row is not None, "INSERT … RETURNING gives the row"
        return int(row[0])

    @contextmanager
    def transaction(self) -> Iterator[ISQL]:
        """One pooled connection for the block, in a transaction that first takes the store's
        write lock (released at commit or rollback)."""
        if self._current() is not None:
            raise StoreError("store transactions do not nest")
        with self._errors(), self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            self._local.conn = conn
            try:
                yield self
            finally:
                self._local.conn = None

    def version(self) -> int:
        """The one row of the schema table; 0 before any migration."""
        exists = self.execute("SELECT to_regclass(?)", (SCHEMA_TABLE,)).fetchone()
        if exists is None or exists[0] is None:
            return 0
        row = self.execute(f"SELECT version FROM {SCHEMA_TABLE}").fetchone()
        return 0 if row is None else int(row[0])

    def migrate(self, target: int, steps: Mapping[int, Any]) -> None:
        """Under the write lock, in one transaction: two nodes starting at once migrate once
        (the second finds the work done); a newer schema is refused."""
        with self.transaction():
            self.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)")
            version = self.version()
            if version > target:
                raise StoreTooNew(
                    f"the store at {self.where} has schema version {version}, newer than "
                    f"this server understands ({target}); upgrade shellserver"
                )
            if version == target:
                return
            start = version
            while version < target:
                step = steps[version]
                if callable(step):
                    step(self)
                else:
                    for statement in statements(step):
                        self.execute(statement)
                version += 1
            if start == 0:
                self.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (?)", (target,))
            else:
                self.execute(f"UPDATE {SCHEMA_TABLE} SET version=?", (target,))

    def ping(self) -> None:
        """``SELECT 1`` on a pooled connection."""
        self.execute("SELECT 1")


def _run(conn: psycopg.Connection[Any], query: str, params: Sequence[Any]) -> Rows:
    cur = conn.execute(query, tuple(params))
    rows = cur.fetchall() if cur.description is not None else []
    return Rows(rows, cur.rowcount)


def _run_many(conn: psycopg.Connection[Any], query: str, rows: Iterable[Sequence[Any]]) -> int:
    with conn.cursor() as cur:
        cur.executemany(query, [tuple(r) for r in rows])
        return max(0, cur.rowcount)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class PostgresAccountDB(AccountDB):
    """The store's SQL over PostgreSQL: the same code as the SQLite store, with
    PostgreSQL's DDL for each schema version."""

    migrations = POSTGRESQL_MIGRATIONS

    def __init__(self, url: PostgresURL, size: int = POOL_SIZE, wait: float = WAIT) -> None:
        self.url = url
        self.path = str(url)
        self.postgres = PostgreSQL(url, size, wait)
        self.sql: ISQL = self.postgres

    @classmethod
    def at(cls, url: PostgresURL, size: int = POOL_SIZE) -> PostgresAccountDB:
        """The store at ``url``, opened (and migrated) now: the CLI's ``store copy``, tests."""
        db = cls(url, size)
        db.connect()
        return db
