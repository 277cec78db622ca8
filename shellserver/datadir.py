"""The data directory: created 0700, claimed by one server at a time with a lock file."""

from __future__ import annotations

import fcntl
import os

from attrs import define, field
from twisted.python.filepath import FilePath


class DataDirLocked(Exception):
    pass


@define
class DataDir:
    path: FilePath[str]
    _lock_fd: int | None = field(default=None, init=False)

    @property
    def db_path(self) -> FilePath[str]:
        return self.path.child("accounts.sqlite3")

    @property
    def home_root(self) -> FilePath[str]:
        return self.path.child("home")

    @property
    def lock_path(self) -> FilePath[str]:
        return self.path.child("shellserver.lock")

    @property
    def control_socket(self) -> FilePath[str]:
        return self.path.child("control.sock")

    @property
    def admin_password_path(self) -> FilePath[str]:
        return self.path.child("initial-admin-password")

    def create(self) -> None:
        os.makedirs(self.path.path, mode=0o700, exist_ok=True)
        os.chmod(self.path.path, 0o700)
        os.makedirs(self.home_root.path, mode=0o700, exist_ok=True)

    def lock(self) -> None:
        """Claim the directory, or say which process has it."""
        fd = os.open(self.lock_path.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            owner = f" (pid {pid})" if pid.isdigit() else ""
            raise DataDirLocked(
                f"another shellserver is running on {self.path.path}{owner}"
            ) from None
        self._lock_fd = fd
        self.write_pid()

    def write_pid(self) -> None:
        """Record our pid in the lock (again after twistd forks to daemonise)."""
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def is_locked(self) -> bool:
        """Does a server hold the directory? (The CLI asks before touching the store.)"""
        if not self.lock_path.exists():
            return False
        fd = os.open(self.lock_path.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def write_secret(self, target: FilePath[str], text: str) -> None:
        """Write a 0600 file that is never seen half-written or with a wider mode."""
        tmp = target.sibling(f".{target.basename()}.{os.getpid()}.tmp")
        fd = os.open(tmp.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp.path, target.path)
