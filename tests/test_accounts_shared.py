"""One store, several processes (clustered nodes on one data dir): SQLite in WAL mode, waiting
its turn (busy timeout) instead of failing with "database is locked"."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from shellserver.store.accounts import AccountDB

WRITER = """
import os, sys, time
from shellserver.store.accounts import AccountDB
db = AccountDB.open(sys.argv[1])
name = sys.argv[2]
print("ready", flush=True)
while not os.path.exists(sys.argv[3]):
    time.sleep(0.001)
for i in range(150):
    db.create(f"{name}{i}", "hash")
    record = db.record_login(f"{name}{i}", "tel/0", "127.0.0.1", time.time())
    db.record_logout(record, time.time())
db.close()
"""


def test_the_store_is_in_wal_mode(tmp_path: Path) -> None:
    path = str(tmp_path / "accounts.sqlite3")
    AccountDB.open(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_processes_writing_at_once_all_succeed(tmp_path: Path) -> None:
    path = str(tmp_path / "accounts.sqlite3")
    AccountDB.open(path).close()  # made (and migrated) once, as the first node's start does
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, path, name, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b", "c", "d")
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    db = AccountDB.open(path)
    try:
        assert db.count() == 600
        assert db.close_open_logins(0.0) == 0  # every login recorded was closed
    finally:
        db.close()
