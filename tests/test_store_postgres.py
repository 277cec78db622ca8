"""The PostgreSQL store's own parts: its URL, the placeholders, the schema kept in step with
SQLite's, migrations under the advisory lock, a newer schema refused, an outage and the pool
coming back, the host keys every node shares. The store's behaviour itself is the shared store
suite (tests/test_accounts.py and others, on both stores)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import StoreMaker
from pgserver import PostgresServer

from shellserver.store.accounts import (
    MIGRATIONS,
    POSTGRESQL_MIGRATIONS,
    SCHEMA_VERSION,
    StoreTooNew,
    StoreUnavailable,
)
from shellserver.store.postgres import PostgresAccountDB, parse_postgres_url
from shellserver.store.sql import pyformat

SECRET = "s3cr3t-pw"


def test_every_migration_has_its_postgresql_ddl() -> None:
    """A table added to the SQLite store must be added to PostgreSQL's too, at the same
    version: the two stores never differ in schema."""
    assert sorted(POSTGRESQL_MIGRATIONS) == sorted(MIGRATIONS) == list(range(SCHEMA_VERSION))


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://app@db.example/shell", "postgresql://app@db.example/shell"),
        (f"postgresql://app:{SECRET}@db:6432/shell", "postgresql://app@db:6432/shell"),
        (
            f"postgres://app:{SECRET}@10.0.0.5/shell?sslmode=verify-full",
            "postgres://app@10.0.0.5/shell?sslmode=verify-full",
        ),
        ("postgresql://app@[::1]:5433/shell", "postgresql://app@[::1]:5433/shell"),
    ],
)
def test_urls_are_shown_without_their_password(text: str, shown: str) -> None:
    url = parse_postgres_url(text)
    assert str(url) == shown
    assert SECRET not in repr(url) and SECRET not in str(url)
    assert url.conninfo == text  # libpq gets it all, password included


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("mysql://app@db/shell", "not a PostgreSQL URL"),
        ("postgresql://app@db", "no database named"),
        (f"postgresql://app:{SECRET}@db:99999/shell", "Port out of range"),
        (f"postgresql://app:{SECRET}@db/shell?nosuchoption=1", "nosuchoption"),
    ],
)
def test_bad_urls_are_one_line_without_the_password(text: str, says: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_postgres_url(text)
    message = str(e.value)
    assert says in message and "\n" not in message
    assert SECRET not in message
    assert "expected postgresql://USER[:PASS]@HOST[:PORT]/DB" in message


def test_placeholders_become_psycopgs_outside_quotes() -> None:
    assert pyformat("SELECT a FROM t WHERE b=? AND c=?") == "SELECT a FROM t WHERE b=%s AND c=%s"
    assert pyformat("SELECT '?', \"q?\" FROM t WHERE b LIKE '5%' AND c=?") == (
        "SELECT '?', \"q?\" FROM t WHERE b LIKE '5%' AND c=%s"
    )
    assert pyformat("SELECT 10 % 3, ?") == "SELECT 10 %% 3, %s"
    assert pyformat("SELECT 'it''s ?' -- ?\n, ?") == "SELECT 'it''s ?' -- ?\n, %s"


def test_a_store_that_cannot_be_reached_is_named_without_its_password() -> None:
    from redisserver import free_port

    url = parse_postgres_url(f"postgresql://app:{SECRET}@127.0.0.1:{free_port()}/shell")
    db = PostgresAccountDB(url, wait=1.0)
    with pytest.raises(StoreUnavailable) as e:
        db.connect()
    message = str(e.value)
    assert message.startswith(
        f"cannot reach the store at postgresql://app@127.0.0.1:{url.shown.split(':')[2]}"
    )
    assert SECRET not in message


def test_nodes_starting_at_once_migrate_once(postgres: PostgresServer) -> None:
    """Each node migrates under the advisory lock: the first creates the schema, the others
    find it made; none fails on a table another created meanwhile."""
    url = parse_postgres_url(postgres.new_database())
    start = threading.Barrier(4)
    outcomes: list[Any] = []

    def node() -> None:
        db = PostgresAccountDB(url, size=1)
        start.wait()
        try:
            db.connect()
            outcomes.append(db.postgres.version())
        except Exception as e:  # collected, so the assertion shows it
            outcomes.append(e)
        finally:
            db.close()

    threads = [threading.Thread(target=node) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == [SCHEMA_VERSION] * 4
    rows = postgres.psql("SELECT count(*) FROM shellserver_schema", url.shown.rsplit("/", 1)[1])
    assert rows == "1"


def test_a_newer_schema_is_refused(postgres: PostgresServer) -> None:
    url = parse_postgres_url(postgres.new_database())
    PostgresAccountDB.at(url).close()
    database = url.shown.rsplit("/", 1)[1]
    postgres.psql("UPDATE shellserver_schema SET version=99", database)
    with pytest.raises(StoreTooNew) as e:
        PostgresAccountDB.at(url)
    assert str(e.value) == (
        f"the store at {url} has schema version 99, newer than this server understands "
        f"({SCHEMA_VERSION}); upgrade shellserver"
    )


def test_an_outage_is_unavailable_and_the_pool_comes_back(own_postgres: PostgresServer) -> None:
    """PostgreSQL stopped: each call says StoreUnavailable within the wait; started again on
    the same port: the next calls work, on new connections the pool made by itself."""
    db = PostgresAccountDB(parse_postgres_url(own_postgres.new_database()), size=2, wait=1.0)
    db.connect()
    try:
        db.create("alice", "h")
        own_postgres.stop()
        for _ in range(3):
            with pytest.raises(StoreUnavailable):
                db.get("alice")
        with pytest.raises(StoreUnavailable):
            db.create("bob", "h")
        own_postgres.start()
        deadline = time.monotonic() + 15
        while True:  # each call waits up to 1 s for the pool's next attempt to connect
            try:
                account = db.get("alice")
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the pool did not connect again"
        assert account is not None and account.name == "alice"
        db.create("bob", "h")
        assert [a.name for a in db.users()] == ["alice", "bob"]
    finally:
        db.close()


def test_the_first_host_key_kept_is_the_one_every_node_gets(store_maker: StoreMaker) -> None:
    one, two = store_maker.open(), store_maker.open()
    assert one.host_keys() == {}
    assert one.add_host_key("ed25519", b"first") == b"first"
    assert two.add_host_key("ed25519", b"second") == b"first"
    assert two.host_keys() == {"ed25519": b"first"}


def test_the_store_option_takes_a_postgresql_url_and_never_shows_its_password() -> None:
    from twisted.python.usage import UsageError

    from shellserver.app.tap import Options

    options = Options()
    options.parseOptions(["--store", f"postgresql://app:{SECRET}@db.example.org/shell"])
    store = options.config.store
    assert store is not None and str(store) == "postgresql://app@db.example.org/shell"
    assert SECRET not in repr(options.config)  # the whole configuration, as a log could show it
    default = Options()
    default.parseOptions([])
    assert default.config.store is None  # the embedded store
    with pytest.raises(UsageError, match=r"^--store: not a PostgreSQL URL \(expected"):
        Options().parseOptions(["--store", "sqlite:///tmp/a.db"])
