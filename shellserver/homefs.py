"""Sandboxed home directories: every path a user types resolves inside their own home.

Paths are resolved lexically first (``..`` stops at the home, as under
chroot; ``/home/<user>`` and ``~`` name the home; any other absolute path or
``~other`` is refused), then walked component by component on disk with
``FilePath.child`` and ``lstat``: a symlink anywhere is refused, never
followed, and files are finally opened with ``O_NOFOLLOW``. Nothing here
creates a symlink, so one can only appear if someone with access to the data
dir plants it, and then it leads nowhere.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator

from attrs import define
from twisted.python.filepath import FilePath, InsecurePath

from shellserver.sanitize import careful_lines
from shellserver.threads import Runner

ENOENT = "No such file or directory"
ENOTDIR = "Not a directory"
EISDIR = "Is a directory"
EACCES = "Permission denied"
EEXIST = "File exists"
ENOTEMPTY = "Directory not empty"
EDQUOT = "Disk quota exceeded"
ENAMETOOLONG = "File name too long"
EINVAL = "Invalid argument"

MAX_NAME = 255
MAX_PATH = 4096
#: Files and directories one home may hold (inode quota).
MAX_ENTRIES = 10_000
#: Reads and writes larger than this go through a thread.
THREAD_THRESHOLD = 64 * 1024

_STRERROR = {
    errno.ENOENT: ENOENT,
    errno.ENOTDIR: ENOTDIR,
    errno.EISDIR: EISDIR,
    errno.EACCES: EACCES,
    errno.EPERM: EACCES,
    errno.ELOOP: EACCES,
    errno.EEXIST: EEXIST,
    errno.ENOTEMPTY: ENOTEMPTY,
    errno.EDQUOT: EDQUOT,
    errno.ENOSPC: EDQUOT,
    errno.ENAMETOOLONG: ENAMETOOLONG,
    errno.EINVAL: EINVAL,
}


class FsError(Exception):
    """A reason in strerror words (``No such file or directory``), shown after the path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def from_os(e: OSError) -> FsError:
    return FsError(_STRERROR.get(e.errno or 0, e.strerror or "I/O error"))


def _bad_name(name: str) -> str | None:
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in name):
        return EINVAL
    if len(name.encode("utf-8")) > MAX_NAME:
        return ENAMETOOLONG
    return None


@define(eq=False)
class Home:
    """One user's home. ``parts`` are lists of names below the home."""

    user: str
    root: FilePath[str]
    quota: int
    run_io: Runner

    # -- names -------------------------------------------------------------------

    def resolve(self, cwd: str, typed: str) -> list[str]:
        """The components below the home that ``typed`` names, seen from ``cwd``."""
        if len(typed.encode("utf-8", "surrogateescape")) > MAX_PATH:
            raise FsError(ENAMETOOLONG)
        if "\x00" in typed:
            raise FsError(EINVAL)
        if typed == "~" or typed.startswith("~/"):
            base: list[str] = []
            rest = typed[1:]
        elif typed.startswith("~"):
            other = typed[1:].split("/", 1)[0]
            if other != self.user:
                raise FsError(EACCES)
            base, rest = [], typed[1 + len(other) :]
        elif typed.startswith("/"):
            mine = f"/home/{self.user}"
            if typed.rstrip("/") != mine and not typed.startswith(mine + "/"):
                raise FsError(EACCES)
            base, rest = [], typed[len(mine) :]
        else:
            base, rest = [p for p in cwd.split("/") if p], typed
        parts = base
        for name in rest.split("/"):
            if name in ("", "."):
                continue
            if name == "..":
                if parts:
                    parts.pop()
                continue
            problem = _bad_name(name)
            if problem is not None:
                raise FsError(problem)
            parts.append(name)
        return parts

    def shown(self, parts: list[str]) -> str:
        return "/".join(["/home", self.user, *parts])

    # -- walking -------------------------------------------------------------------

    def ensure(self) -> FilePath[str]:
        """The home directory, created on first use (accounts made with the server stopped)."""
        if not self.root.isdir():
            os.makedirs(self.root.path, mode=0o700, exist_ok=True)
        return self.root

    def path(self, parts: list[str], must_exist: bool = True) -> FilePath[str]:
        """Walk to ``parts`` refusing symlinks; the last part may be missing unless required."""
        here = self.ensure()
        for i, name in enumerate(parts):
            try:
                here = here.child(name)
            except InsecurePath:
                raise FsError(EINVAL) from None
            try:
                st = os.lstat(here.path)
            except FileNotFoundError:
                if i == len(parts) - 1 and not must_exist:
                    return here
                raise FsError(ENOENT) from None
            except OSError as e:
                raise from_os(e) from None
            if stat.S_ISLNK(st.st_mode):
                raise FsError(EACCES)
            if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
                raise FsError(ENOTDIR)
        return here

    def lstat(self, parts: list[str]) -> os.stat_result:
        return os.lstat(self.path(parts).path)

    def is_dir(self, parts: list[str]) -> bool:
        try:
            return stat.S_ISDIR(self.lstat(parts).st_mode)
        except FsError:
            return False

    def listdir(self, parts: list[str]) -> list[str]:
        target = self.path(parts)
        if not stat.S_ISDIR(os.lstat(target.path).st_mode):
            raise FsError(ENOTDIR)
        try:
            return sorted(os.listdir(target.path))
        except OSError as e:
            raise from_os(e) from None

    # -- quota ---------------------------------------------------------------------

    def _walk(self) -> Iterator[os.stat_result]:
        stack = [self.ensure().path]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except OSError:
                continue
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                yield st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)

    def usage(self) -> tuple[int, int]:
        """(bytes in regular files, number of entries)."""
        size = count = 0
        for st in self._walk():
            count += 1
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
        return size, count

    def check_room(self, grow: int, new_entries: int = 0) -> None:
        size, count = self.usage()
        full = new_entries and size >= self.quota  # a full home takes no new files, even empty
        if full or size + grow > self.quota or count + new_entries > MAX_ENTRIES:
            raise FsError(EDQUOT)

    # -- reading and writing -------------------------------------------------------------

    async def read(self, parts: list[str], limit: int) -> bytes:
        """The file's first ``limit`` bytes (and one more, so callers can tell it was cut)."""
        target = self.path(parts)
        st = os.lstat(target.path)
        if stat.S_ISDIR(st.st_mode):
            raise FsError(EISDIR)
        if st.st_size > THREAD_THRESHOLD:
            data: bytes = await self.run_io(_read, target.path, limit + 1)
            return data
        return _read(target.path, limit + 1)

    async def write(self, parts: list[str], data: bytes, append: bool = False) -> None:
        """Replace or extend a file, all or nothing, within the quota."""
        target = self.path(parts, must_exist=False)
        old = b""
        existing = None
        if target.exists():
            existing = os.lstat(target.path)
            if stat.S_ISDIR(existing.st_mode):
                raise FsError(EISDIR)
            if append:
                old = await self.read(parts, self.quota)
        grow = len(old) + len(data) - (existing.st_size if existing else 0)
        self.check_room(grow, 0 if existing else 1)
        content = old + data
        if len(content) > THREAD_THRESHOLD:
            await self.run_io(_replace, target, content)
        else:
            _replace(target, content)

    async def copy(self, src: list[str], dst: list[str]) -> None:
        data = await self.read(src, self.quota)
        if len(data) > self.quota:
            raise FsError(EDQUOT)
        await self.write(dst, data)

    def touch(self, parts: list[str]) -> None:
        target = self.path(parts, must_exist=False)
        if target.exists():
            os.utime(target.path, follow_symlinks=False)
            return
        self.check_room(0, 1)
        _replace(target, b"")

    def mkdir(self, parts: list[str]) -> None:
        target = self.path(parts, must_exist=False)
        if target.exists() or os.path.lexists(target.path):
            raise FsError(EEXIST)
        self.check_room(0, 1)
        try:
            os.mkdir(target.path, 0o700)
        except OSError as e:
            raise from_os(e) from None

    def rmdir(self, parts: list[str]) -> None:
        if not parts:
            raise FsError(EACCES)  # the home itself
        try:
            os.rmdir(self.path(parts).path)
        except OSError as e:
            raise from_os(e) from None

    def remove(self, parts: list[str], recursive: bool) -> None:
        target = self.path(parts)
        if stat.S_ISDIR(os.lstat(target.path).st_mode):
            if not recursive:
                raise FsError(EISDIR)
            if not parts:
                raise FsError(EACCES)
            shutil.rmtree(target.path)  # never follows symlinks
        else:
            os.unlink(target.path)

    def rename(self, src: list[str], dst: list[str]) -> None:
        if not src:
            raise FsError(EACCES)
        source = self.path(src)
        target = self.path(dst, must_exist=False)
        if dst[: len(src)] == src:
            raise FsError(EINVAL)  # into itself
        if target.exists() and stat.S_ISDIR(os.lstat(target.path).st_mode):
            if stat.S_ISDIR(os.lstat(source.path).st_mode) and os.listdir(target.path):
                raise FsError(ENOTEMPTY)
            if not stat.S_ISDIR(os.lstat(source.path).st_mode):
                raise FsError(EISDIR)
        try:
            os.rename(source.path, target.path)
        except OSError as e:
            raise from_os(e) from None


def _read(path: str, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read(limit)


def _replace(target: FilePath[str], data: bytes) -> None:
    """Write a sibling temp file, then rename it over the target: never a partial file."""
    tmp = target.sibling(f".{target.basename()[:200]}.{os.getpid()}.tmp")
    fd = os.open(tmp.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp.path, target.path)
    except OSError as e:
        if os.path.lexists(tmp.path):
            os.unlink(tmp.path)
        raise from_os(e) from None


@define(eq=False)
class Homes:
    """All homes, under ``<data>/home``."""

    root: FilePath[str]
    quota: int
    run_io: Runner

    def home(self, user: str) -> Home:
        return Home(user, self.root.child(user), self.quota, self.run_io)

    def create(self, user: str) -> None:
        self.home(user).ensure()

    def delete(self, user: str) -> None:
        """userdel removes the home with everything in it (see docs/files.md)."""
        path = self.root.child(user)
        if os.path.lexists(path.path):
            if path.islink() or not path.isdir():
                os.unlink(path.path)
            else:
                shutil.rmtree(path.path)

    async def plan(self, user: str) -> str | None:
        home = self.home(user)
        try:
            data = await home.read([".plan"], PLAN_LIMIT)
        except (FsError, OSError):
            return "No Plan."
        text = careful_lines(data[:PLAN_LIMIT].decode("utf-8", "surrogateescape"))
        return "Plan:\n" + text.rstrip("\n")


PLAN_LIMIT = 4096
