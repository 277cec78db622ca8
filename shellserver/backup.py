"""``shellserver backup FILE``: a consistent copy of the store with SQLite's online backup API.

The copy is made through a connection of its own, on the server's database
thread while the server runs (so it never races a store write and never
stalls the reactor), or by the CLI holding the data dir's lock while the
server is stopped. It is written to a 0600 temp file beside FILE, switched
from WAL to a plain rollback journal (one self-contained file), checked with
``PRAGMA integrity_check``, synced, and only then given its name: FILE is
never seen half-written, and never replaced unless ``force`` is given.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from urllib.parse import quote


class BackupError(Exception):
    pass


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def backup_store(source: str, target: str, force: bool = False) -> int:
    """Copy the store at ``source`` to ``target``; the copy's size in bytes.

    Raises BackupError with a one-line reason (target exists, the live store
    itself, no room, no permission, a copy that fails its integrity check).
    """
    target = os.path.abspath(target)
    if not os.path.isfile(source):
        raise BackupError(f"there is no store at {source}")
    for live in (source, source + "-wal", source + "-shm"):
        if os.path.realpath(target) == os.path.realpath(live) or _same_file(target, live):
            raise BackupError(f"{target} is the live store; back up to another file")
    if os.path.isdir(target):
        raise BackupError(f"{target} is a directory; give a file name")
    if os.path.lexists(target) and not force:
        raise BackupError(f"{target} exists; use --force to replace it")
    try:
        return _copy(source, target, force)
    except OSError as e:
        raise BackupError(f"cannot write {target}: {e.strerror or e}") from None
    except sqlite3.Error as e:
        raise BackupError(f"backup to {target} failed: {e}") from None


def _copy(source: str, target: str, force: bool) -> int:
    directory, name = os.path.split(target)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")  # mode 0600
    os.close(fd)
    try:
        # mode=rw: a store that vanished is an error, not a new empty database.
        src = sqlite3.connect(f"file:{quote(source)}?mode=rw", uri=True, isolation_level=None)
        try:
            src.execute("PRAGMA busy_timeout=5000")
            dst = sqlite3.connect(tmp, isolation_level=None)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")  # the copy is one file, no -wal
                result = dst.execute("PRAGMA integrity_check").fetchall()
                if result != [("ok",)]:
                    problem = "; ".join(str(row[0]) for row in result[:3])
                    raise BackupError(f"the copy failed its integrity check: {problem}")
            finally:
                dst.close()
        finally:
            src.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # never replaces a file that appeared meanwhile
            except FileExistsError:
                raise BackupError(f"{target} exists; use --force to replace it") from None
            os.unlink(tmp)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return os.path.getsize(target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
