"""backup_store: SQLite's online backup into a checked, private, never-half-written file."""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
from pathlib import Path

import pytest

from shellserver.store.accounts import AccountDB
from shellserver.store.backup import BackupError, backup_store


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


# -- only a new regular file, or a regular file replaced with --force ---------------------------


def test_a_fifo_is_refused_even_with_force(store: AccountDB, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for force in (False, True):
        with pytest.raises(BackupError, match="is a FIFO, not a regular file"):
            backup_store(store.path, str(fifo), force=force)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    left = sorted(os.listdir(tmp_path))
    assert left == sorted(["accounts.sqlite3", "fifo", *_sidecars(tmp_path)])  # no temp file


def test_a_unix_socket_is_refused_even_with_force(store: AccountDB, tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        with pytest.raises(BackupError, match="is a socket, not a regular file"):
            backup_store(store.path, str(path), force=True)
    assert stat.S_ISSOCK(path.lstat().st_mode)


def test_dev_null_is_refused_and_stays_a_device(store: AccountDB) -> None:
    with pytest.raises(BackupError, match="/dev/null is a device, not a regular file"):
        backup_store(store.path, "/dev/null", force=True)
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    assert not [n for n in os.listdir("/dev") if n.startswith(".null.")]  # no temp file left


def test_a_path_through_a_symlinked_directory_is_refused(store: AccountDB, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"  # stands for /etc
    elsewhere.mkdir()
    (elsewhere / "passwd").write_text("root:x:0:0\n")
    (tmp_path / "backups").symlink_to(elsewhere)
    for name, force in (("passwd", True), ("new.db", False)):
        target = tmp_path / "backups" / name
        with pytest.raises(BackupError, match=r"/backups is a symbolic link; give a path"):
            backup_store(store.path, str(target), force=force)
    assert sorted(os.listdir(elsewhere)) == ["passwd"]
    assert (elsewhere / "passwd").read_text() == "root:x:0:0\n"
    deeper = tmp_path / "backups" / "sub"
    with pytest.raises(BackupError, match="is a symbolic link"):
        backup_store(store.path, str(deeper / "x.db"))


def test_a_symlink_as_the_file_itself_is_refused(store: AccountDB, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("keep")
    link = tmp_path / "copy.db"
    link.symlink_to(precious)
    with pytest.raises(BackupError, match=r"copy\.db is a symbolic link"):
        backup_store(store.path, str(link), force=True)
    assert link.is_symlink() and precious.read_text() == "keep"


def test_force_replaces_a_regular_file_and_keeps_it_private(
    store: AccountDB, tmp_path: Path
) -> None:
    target = tmp_path / "copy.db"
    target.write_text("old")
    target.chmod(0o644)
    backup_store(store.path, str(target), force=True)
    assert stat.S_ISREG(target.lstat().st_mode) and target.stat().st_mode & 0o777 == 0o600
    assert names(target) == ["alice"]


def _sidecars(directory: Path) -> list[str]:
    """The live store's own -wal/-shm files, whichever exist now."""
    return [n for n in os.listdir(directory) if n.startswith("accounts.sqlite3-")]
