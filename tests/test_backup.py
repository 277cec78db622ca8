"""backup_store: SQLite's online backup into a checked, private, never-half-written file."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from shellserver.accounts import AccountDB
from shellserver.backup import BackupError, backup_store


@pytest.fixture
def store(tmp_path: Path) -> AccountDB:
    db = AccountDB.open(str(tmp_path / "accounts.sqlite3"))
    db.create("alice", "$hash")
    return db


def names(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM users ORDER BY name")]
    finally:
        conn.close()


def test_copy_of_an_open_store_in_wal_mode(store: AccountDB, tmp_path: Path) -> None:
    store.create("bob", "$hash")  # committed, possibly still only in the -wal file
    target = tmp_path / "out" / "copy.db"
    target.parent.mkdir()
    size = backup_store(store.path, str(target))
    assert size == target.stat().st_size > 0
    assert target.stat().st_mode & 0o777 == 0o600
    assert names(target) == ["alice", "bob"]
    conn = sqlite3.connect(target)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    conn.close()
    assert sorted(os.listdir(target.parent)) == ["copy.db"]  # no temp file left
    store.create("carol", "$hash")  # the live store goes on


def test_an_existing_file_is_kept_unless_forced(store: AccountDB, tmp_path: Path) -> None:
    target = tmp_path / "copy.db"
    target.write_text("precious")
    with pytest.raises(BackupError, match="exists; use --force"):
        backup_store(store.path, str(target))
    assert target.read_text() == "precious"
    backup_store(store.path, str(target), force=True)
    assert names(target) == ["alice"]


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_the_live_store_is_never_a_target(store: AccountDB, suffix: str) -> None:
    with pytest.raises(BackupError, match="is the live store"):
        backup_store(store.path, store.path + suffix, force=True)
    assert names(Path(store.path)) == ["alice"]


def test_a_missing_store_or_an_unwritable_place_is_one_line(
    store: AccountDB, tmp_path: Path
) -> None:
    with pytest.raises(BackupError, match="there is no store"):
        backup_store(str(tmp_path / "nothing.db"), str(tmp_path / "x.db"))
    assert not (tmp_path / "nothing.db").exists()  # not created empty
    with pytest.raises(BackupError, match="cannot write"):
        backup_store(store.path, str(tmp_path / "no" / "such" / "dir.db"))
    with pytest.raises(BackupError, match="is a directory"):
        backup_store(store.path, str(tmp_path))
