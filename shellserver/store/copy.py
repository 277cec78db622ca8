"""``shellserver store copy --to postgresql://…``: the embedded store into PostgreSQL.

The SQLite file is read in one read transaction, so every table comes from one snapshot even
while the server runs and writes (WAL lets a reader keep its snapshot); the server may also be
stopped. Everything is written in one PostgreSQL transaction under the store's write lock: the
copy is there whole or not at all. A target that holds anything is refused unless ``force``,
which empties it first (in the same transaction).

The tables are found in the file, not listed here, in foreign-key order, so a table a later
version adds is copied with no change to this module; ids are kept, and each identity column's
sequence is moved past them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from urllib.parse import quote

from shellserver.store.accounts import SCHEMA_VERSION, AccountDB
from shellserver.store.sql import StoreError

#: Rows sent in one ``executemany``: bounded memory whatever the table's size.
BATCH = 1000


def tables_in_order(src: sqlite3.Connection) -> list[str]:
    """The store's tables, each after those its foreign keys name."""
    names = [
        row[0]
        for row in src.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    needs = {
        name: {row[2] for row in src.execute(f'PRAGMA foreign_key_list("{name}")')} - {name}
        for name in names
    }
    ordered: list[str] = []
    while needs:
        ready = sorted(name for name, wanted in needs.items() if wanted <= set(ordered))
        if not ready:  # a cycle: none in the store's schema, but never loop forever
            ready = sorted(needs)
        for name in ready:
            ordered.append(name)
            del needs[name]
    return ordered


def copy_store(
    source: str, target: AccountDB, force: bool = False, host_keys: Mapping[str, bytes] = {}
) -> dict[str, int]:
    """Copy the SQLite store at ``source`` into ``target`` (open, migrated, PostgreSQL); the
    rows copied by table. ``host_keys`` (by kind) are kept in the store's ``host_keys`` as
    well, when the file has none, so the nodes present the keys clients already know.

    Raises StoreError with one line: a source that is missing or of another schema version,
    a target that is not empty (without ``force``).
    """
    try:
        src = sqlite3.connect(f"file:{quote(source)}?mode=rw", uri=True, isolation_level=None)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open the store at {source}: {e}") from None
    try:
        src.execute("PRAGMA busy_timeout=5000")
        version = int(src.execute("PRAGMA user_version").fetchone()[0])
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"the store at {source} has schema version {version}, this shellserver "
                f"copies version {SCHEMA_VERSION}; run the same version as the server"
            )
        src.execute("BEGIN")  # one snapshot for every table, however the server writes
        try:
            return _copy(src, target, force, host_keys)
        finally:
            src.execute("ROLLBACK")
    except sqlite3.Error as e:
        raise StoreError(f"reading the store at {source} failed: {e}") from None
    finally:
        src.close()


def _copy(
    src: sqlite3.Connection, target: AccountDB, force: bool, host_keys: Mapping[str, bytes]
) -> dict[str, int]:
    sql = target.sql
    tables = tables_in_order(src)
    counts: dict[str, int] = {}
    with sql.transaction():
        held = [t for t in tables if sql.execute(f'SELECT 1 FROM "{t}" LIMIT 1').fetchone()]
        if held and not force:
            raise StoreError(
                f"the store at {target.where} is not empty (it has {', '.join(held)}); "
                "give --force to replace what it holds"
            )
        for table in reversed(tables):
            sql.execute(f'DELETE FROM "{table}"')
        for table in tables:
            counts[table] = _copy_table(src, target, table)
        if "host_keys" in tables and not counts["host_keys"]:
            for kind, key in sorted(host_keys.items()):
                sql.execute("INSERT INTO host_keys (kind, key) VALUES (?,?)", (kind, key))
            counts["host_keys"] = len(host_keys)
    return counts


def _copy_table(src: sqlite3.Connection, target: AccountDB, table: str) -> int:
    sql = target.sql
    cur = src.execute(f'SELECT * FROM "{table}"')
    columns = [d[0] for d in cur.description]
    binary = {
        row[0]
        for row in sql.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name=? AND data_type='bytea'",
            (table,),
        )
    }
    places = ",".join("?" for _ in columns)
    names = ",".join(f'"{c}"' for c in columns)
    insert = f'INSERT INTO "{table}" ({names}) VALUES ({places})'
    blobs = [i for i, c in enumerate(columns) if c in binary]
    count = 0
    while rows := cur.fetchmany(BATCH):
        if blobs:
            rows = [_as_bytes(row, blobs) for row in rows]
        sql.executemany(insert, rows)
        count += len(rows)
    for column in columns:
        sequence = sql.execute("SELECT pg_get_serial_sequence(?, ?)", (table, column)).fetchone()
        if sequence is not None and sequence[0] is not None and count:
            sql.execute(
                f'SELECT setval(?, (SELECT max("{column}") FROM "{table}"))', (sequence[0],)
            )
    return count


def _as_bytes(row: tuple[object, ...], blobs: list[int]) -> tuple[object, ...]:
    """SQLite lets TEXT sit in a BLOB's place; PostgreSQL's BYTEA takes bytes only."""
    values = list(row)
    for i in blobs:
        if isinstance(values[i], str):
            values[i] = str(values[i]).encode("utf-8", "surrogateescape")
    return tuple(values)
