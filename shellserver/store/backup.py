"""``shellserver backup FILE``: a consistent copy of the store with SQLite's online backup API.

The copy is made through a connection of its own, on the server's database
thread while the server runs (so it never races a store write and never
stalls the reactor), or by the CLI holding the data dir's lock while the
server is stopped. It is written to a 0600 temp file beside FILE, switched
from WAL to a plain rollback journal (one self-contained file), checked with
``PRAGMA integrity_check``, synced, and only then given its name: FILE is
never seen half-written, and never replaced unless ``force`` is given.

The backup may run as root, so FILE is only ever a new regular file, or (with
``force``) a regular file replaced. The directory is opened one component at
a time from ``/`` with ``O_NOFOLLOW`` and everything after happens relative to
that descriptor: a path through a symbolic link is refused rather than
followed (into ``/etc``, say), and a device, FIFO or socket at FILE is refused
rather than replaced (``/dev/null`` stays a device).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
from urllib.parse import quote


class BackupError(Exception):
    """A refusal with its one-line reason, shown by the CLI as is: a backup that cannot be made
    safely is not made, and never ends in a traceback."""


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def backup_store(source: str, target: str, force: bool = False) -> int:
    """Copy the store at ``source`` to ``target``; the copy's size in bytes.

    Raises BackupError with a one-line reason (target exists, the live store
    itself, not a regular file, a path through a symbolic link, no room, no
    permission, a copy that fails its integrity check).
    """
    target = os.path.abspath(target)
    if not os.path.isfile(source):
        raise BackupError(f"there is no store at {source}")
    directory, name = os.path.split(target)
    if not name:
        raise BackupError(f"{target} is a directory; give a file name")
    try:
        dir_fd = _open_directory(directory, target)
    except OSError as e:
        raise BackupError(f"cannot write {target}: {e.strerror or e}") from None
    try:
        _check_target(source, target, name, dir_fd, force)
        return _copy(source, target, name, dir_fd, force)
    except OSError as e:
        raise BackupError(f"cannot write {target}: {e.strerror or e}") from None
    except sqlite3.Error as e:
        raise BackupError(f"backup to {target} failed: {e}") from None
    finally:
        os.close(dir_fd)


def _open_directory(directory: str, target: str) -> int:
    """``directory`` (absolute) opened from ``/`` one component at a time, following no link."""
    fd = os.open("/", _DIR_FLAGS)
    walked = ""
    try:
        for part in directory.split("/"):
            if not part:
                continue
            walked += "/" + part
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fd):
                    raise BackupError(
                        f"{target}: {walked} is a symbolic link; give a path without links"
                    ) from None
                raise
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _check_target(source: str, target: str, name: str, dir_fd: int, force: bool) -> None:
    """Refuse anything at ``target`` but a regular file replaced with ``force``."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    for live in (source, source + "-wal", source + "-shm"):
        try:
            other = os.stat(live)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino):
            raise BackupError(f"{target} is the live store; back up to another file")
    if stat.S_ISDIR(st.st_mode):
        raise BackupError(f"{target} is a directory; give a file name")
    if stat.S_ISLNK(st.st_mode):
        raise BackupError(f"{target} is a symbolic link; give a path without links")
    if not stat.S_ISREG(st.st_mode):
        raise BackupError(
            f"{target} is a {_kind(st.st_mode)}, not a regular file; a backup only "
            "writes regular files"
        )
    if not force:
        raise BackupError(f"{target} exists; use --force to replace it")


def _kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _temp_file(dir_fd: int, name: str) -> str:
    """A new 0600 file beside the target, made with O_EXCL in the opened directory."""
    for _ in range(100):
        tmp = f".{name}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dir_fd,
            )
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise OSError(errno.EEXIST, "no free temporary name")


def _in_dir(dir_fd: int, name: str) -> str:
    """A path SQLite can open that names ``name`` in the already opened directory."""
    return f"/proc/self/fd/{dir_fd}/{name}"


def _copy(source: str, target: str, name: str, dir_fd: int, force: bool) -> int:
    tmp = _temp_file(dir_fd, name)
    try:
        # mode=rw: a store that vanished is an error, not a new empty database.
        src = sqlite3.connect(f"file:{quote(source)}?mode=rw", uri=True, isolation_level=None)
        try:
            src.execute("PRAGMA busy_timeout=5000")
            dst = sqlite3.connect(_in_dir(dir_fd, tmp), isolation_level=None)
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
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if force:
            _check_target(source, target, name, dir_fd, force)  # still a regular file, or none
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        else:
            try:  # never replaces a file that appeared meanwhile
                os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                raise BackupError(f"{target} exists; use --force to replace it") from None
            os.unlink(tmp, dir_fd=dir_fd)
        os.fsync(dir_fd)
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_size
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
