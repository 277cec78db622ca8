"""One home on disk, as the I/O thread sees it: walked without following links, with usage kept.

Every method here blocks and runs on an I/O thread, one call per home at a
time (homefs.Home serialises them), so ``usage`` can be checked and updated
without a race: the check and the write are one step. The usage is measured
when the home is first used after the server starts and again when its user
logs in with no other session open (``measure_again``: files an operator put
there meanwhile count), and kept up to date by each operation in between.

Paths are walked component by component with ``lstat``: a symlink anywhere
is refused, never followed, and files are opened with ``O_NOFOLLOW``.
Temporary files for atomic replacement live in ``<data>/tmp``, outside every
user's namespace.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from typing import BinaryIO

from attrs import define, field

from shellserver.files import walk
from shellserver.files.sandbox import (
    EACCES,
    EDQUOT,
    EEXIST,
    EINVAL,
    EISDIR,
    ENOENT,
    ENOSPC,
    ENOTDIR,
    MAX_DEPTH,
    MAX_ENTRIES,
    TOO_DEEP,
    FsError,
    from_os,
    resolve,
    shown,
)

_COPY_CHUNK = 1024 * 1024


@define
class Usage:
    """Bytes in regular files and entries in one home, kept by each operation so a quota check
    costs no walk of the disk."""

    bytes: int = 0
    entries: int = 0


@define(eq=False)
class Tree:
    """One home on disk, used only from the I/O thread and one job at a time, so ``usage`` is
    checked and updated without a race. Every path is walked with ``lstat`` and symlinks are
    refused, so nothing an operator plants leads outside the home."""

    user: str
    root: str
    tmp: str
    quota: int
    usage: Usage | None = None
    #: Set when the disk itself was full, for the reactor side to log (rate-limited).
    out_of_space: bool = field(default=False)
    #: Set while userdel has the home in the trash: nothing may make it again meanwhile.
    away: bool = field(default=False)
    #: Homes shared with other processes: the stamp of the usage last seen (files/shared.py).
    stamp: bytes = field(default=b"")

    # -- names ---------------------------------------------------------------------

    def resolve(self, cwd: str, typed: str) -> list[str]:
        """Typed path to components, for this tree's user (see
        :func:`~shellserver.files.sandbox.resolve`): lexical only, nothing touches the disk yet."""
        return resolve(self.user, cwd, typed)

    def shown(self, parts: list[str]) -> str:
        """The path as the user sees it (``/home/<user>/…``), never the real one under the data
        dir."""
        return shown(self.user, parts)

    # -- the home itself -----------------------------------------------------------

    def open_home(self) -> None:
        """Make sure the home is a real directory (never a planted link), and measure it once."""
        if self.away:
            raise FsError(ENOENT)
        try:
            st = os.lstat(self.root)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.root), mode=0o700, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.root, 0o700)
            st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode):
            self.usage = None
            raise FsError(EACCES)
        if self.usage is None:
            totals = walk.measure(self.root)
            self.usage = Usage(totals.bytes, totals.entries)

    def measure_again(self) -> None:
        """Read the usage from the disk again: files an operator put in the home since it was
        last measured count from now on (a job like any other, behind the home's queue)."""
        self.usage = None
        self.open_home()

    def used(self) -> Usage:
        """The home's usage, measuring it first if it is not known yet (first use since the start,
        or after a partial removal made the count uncertain)."""
        self.open_home()
        assert self.usage is not None
        return self.usage

    def check_room(self, grow: int, new_entries: int = 0) -> None:
        """Reserve room for a change before making it: refuse what would break the quota."""
        u = self.used()
        full = new_entries and u.bytes >= self.quota  # a full home takes no new files, even empty
        if full or u.bytes + grow > self.quota or u.entries + new_entries > MAX_ENTRIES:
            raise FsError(EDQUOT)

    def account(self, grow: int, entries: int = 0) -> None:
        """Record a change already made on disk; clamped at zero so a count that drifted (an
        operator removed files) never goes negative and lets the home outgrow its quota."""
        u = self.used()
        u.bytes = max(0, u.bytes + grow)
        u.entries = max(0, u.entries + entries)

    def os_error(self, e: OSError) -> FsError:
        """:func:`~shellserver.files.sandbox.from_os`, and a full disk noted for the reactor side
        to log, rate-limited there, where the clock is."""
        error = from_os(e)
        if error.reason == ENOSPC:
            self.out_of_space = True
        return error

    # -- walking -------------------------------------------------------------------

    def path(self, parts: list[str], must_exist: bool = True) -> str:
        """Walk to ``parts`` refusing symlinks; the last part may be missing unless required."""
        self.open_home()
        here = self.root
        for i, name in enumerate(parts):
            here = os.path.join(here, name)
            try:
                st = os.lstat(here)
            except FileNotFoundError:
                if i == len(parts) - 1 and not must_exist:
                    return here
                raise FsError(ENOENT) from None
            except OSError as e:
                raise self.os_error(e) from None
            if stat.S_ISLNK(st.st_mode):
                raise FsError(EACCES)
            if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
                raise FsError(ENOTDIR)
        return here

    def lstat(self, parts: list[str]) -> os.stat_result:
        """The entry's own status (a link's, never its target's), errors in coreutils' words."""
        try:
            return os.lstat(self.path(parts))
        except OSError as e:
            raise self.os_error(e) from None

    def stat_or_none(self, parts: list[str]) -> os.stat_result | None:
        """The entry's lstat, or None if it does not exist (its parent must)."""
        target = self.path(parts, must_exist=False)
        try:
            return os.lstat(target)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self.os_error(e) from None

    def is_dir(self, parts: list[str]) -> bool:
        """True only for a real directory that may be reached; anything unreachable is simply not a
        directory, for callers that only need a yes or no."""
        try:
            return stat.S_ISDIR(self.lstat(parts).st_mode)
        except FsError:
            return False

    def listdir(self, parts: list[str]) -> list[str]:
        """A directory's names, sorted as ls and glob expansion show them; a file is ``Not a
        directory`` rather than an OS traceback."""
        target = self.path(parts)
        try:
            if not stat.S_ISDIR(os.lstat(target).st_mode):
                raise FsError(ENOTDIR)
            return sorted(os.listdir(target))
        except OSError as e:
            raise self.os_error(e) from None

    # -- reading -----------------------------------------------------------------------

    def open_read(self, parts: list[str]) -> int:
        """A descriptor for reading the file at ``parts`` (the caller closes it)."""
        target = self.path(parts)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as e:
            raise self.os_error(e) from None
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.close(fd)
            raise FsError(EISDIR)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FsError(EINVAL)
        return fd

    def read(self, parts: list[str], limit: int) -> bytes:
        """The file's first ``limit`` bytes (and one more, so callers can tell it was cut)."""
        fd = self.open_read(parts)
        try:
            with os.fdopen(os.dup(fd), "rb") as f:
                return f.read(limit + 1)
        finally:
            os.close(fd)

    # -- writing -----------------------------------------------------------------------

    def _existing_file(self, target: str) -> os.stat_result | None:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise self.os_error(e) from None
        if stat.S_ISDIR(st.st_mode):
            raise FsError(EISDIR)
        if stat.S_ISLNK(st.st_mode):
            raise FsError(EACCES)
        return st

    def write(self, parts: list[str], data: bytes, append: bool = False) -> None:
        """Replace (atomically) or extend a file, within the quota."""
        if not parts:
            raise FsError(EISDIR)
        target = self.path(parts, must_exist=False)
        old = self._existing_file(target)
        if append and old is not None:
            self.check_room(len(data))
            self._append(target, old.st_size, data)
            self.account(len(data))
            return
        self.check_room(len(data) - (old.st_size if old else 0), 0 if old else 1)
        self.replace_with(target, lambda f: f.write(data))
        self.account(len(data) - (old.st_size if old else 0), 0 if old else 1)

    def _append(self, target: str, size: int, data: bytes) -> None:
        self._append_with(target, size, lambda f: f.write(data))

    def _append_with(self, target: str, size: int, fill: Callable[[BinaryIO], object]) -> None:
        """Extend the file in place; if that fails, cut it back: all or nothing."""
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            with os.fdopen(os.dup(fd), "ab") as f:
                fill(f)
        except OSError as e:
            os.ftruncate(fd, size)
            raise self.os_error(e) from None
        finally:
            os.close(fd)

    def replace_with(self, target: str, fill: Callable[[BinaryIO], object]) -> None:
        """Write a temp file outside the home, then rename it over the target."""
        os.makedirs(self.tmp, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
            os.replace(tmp, target)
        except OSError as e:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise self.os_error(e) from None

    def copy(self, src: list[str], dst: list[str]) -> None:
        """Copy a regular file (``cp``): room is reserved for its size first."""
        self.concat([src], dst, append=False)

    def concat(self, sources: list[list[str]], dst: list[str], append: bool) -> None:
        """Files one after another into ``dst`` (``cat A B > C``), streamed, never held whole.

        Room for all of them is reserved before the first byte is written;
        each is copied no further than the size it had then.
        """
        fds: list[int] = []
        try:
            for src in sources:
                fds.append(self.open_read(src))
            sizes = [os.fstat(fd).st_size for fd in fds]
            target = self.path(dst, must_exist=False)
            old = self._existing_file(target)
            kept = old.st_size if old and append else 0
            grow = kept + sum(sizes) - (old.st_size if old else 0)
            self.check_room(grow, 0 if old else 1)

            def fill(f: BinaryIO) -> None:
                for fd, size in zip(fds, sizes, strict=True):
                    copy_out(fd, f, size)

            if append and old is not None:
                self._append_with(target, old.st_size, fill)
            else:
                self.replace_with(target, fill)
            self.account(grow, 0 if old else 1)
        finally:
            for fd in fds:
                os.close(fd)

    def touch(self, parts: list[str]) -> None:
        """An existing entry gets a new mtime without following a link; a new file is made with
        ``O_EXCL | O_NOFOLLOW`` (mode 0600) after the entry limit and quota allow it."""
        target = self.path(parts, must_exist=False)
        if os.path.lexists(target):
            try:
                os.utime(target, follow_symlinks=False)
            except OSError as e:
                raise self.os_error(e) from None
            return
        self.check_room(0, 1)
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        except OSError as e:
            raise self.os_error(e) from None
        self.account(0, 1)

    def mkdir(self, parts: list[str]) -> None:
        """A new directory, refused beyond 64 levels with a clear error (a bound users can see,
        rather than trees whose paths outgrow the 4096-byte limit) or when the quota or entry limit
        is reached."""
        if len(parts) > MAX_DEPTH:
            raise FsError(TOO_DEEP)
        target = self.path(parts, must_exist=False)
        if not parts or os.path.lexists(target):
            raise FsError(EEXIST)
        self.check_room(0, 1)
        try:
            os.mkdir(target, 0o700)
        except OSError as e:
            raise self.os_error(e) from None
        self.account(0, 1)

    # -- removing and moving -------------------------------------------------------------

    def rmdir(self, parts: list[str]) -> None:
        """Remove an empty directory (the kernel checks emptiness); the home itself is ``Permission
        denied`` so a user cannot remove their own root."""
        if not parts:
            raise FsError(EACCES)  # the home itself
        try:
            os.rmdir(self.path(parts))
        except OSError as e:
            raise self.os_error(e) from None
        self.account(0, -1)

    def remove(self, parts: list[str], recursive: bool) -> None:
        """``rm``: a file, a planted symlink (unlinked, never followed), or with ``recursive`` a
        whole tree via the non-recursive walk; a tree removed only in part leaves the usage unknown
        so the next job measures it again."""
        try:
            target = self.path(parts)
        except FsError as e:
            if e.reason == EACCES and parts and self._remove_link(parts):
                return
            raise
        try:
            st = os.lstat(target)
        except OSError as e:
            raise self.os_error(e) from None
        if stat.S_ISDIR(st.st_mode):
            if not recursive:
                raise FsError(EISDIR)
            if not parts:
                raise FsError(EACCES)
            try:
                totals = walk.remove_tree(target)
            except OSError as e:
                self.usage = None  # partly removed: measure again on next use
                raise self.os_error(e) from None
            self.account(-totals.bytes, -totals.entries - 1)
            return
        try:
            os.unlink(target)
        except OSError as e:
            raise self.os_error(e) from None
        self.account(-st.st_size if stat.S_ISREG(st.st_mode) else 0, -1)

    def _remove_link(self, parts: list[str]) -> bool:
        """A symlink planted in the home may be removed (unlinking never follows it)."""
        link = os.path.join(self.path(parts[:-1]), parts[-1])
        try:
            if not stat.S_ISLNK(os.lstat(link).st_mode):
                return False
            os.unlink(link)
        except OSError as e:
            raise self.os_error(e) from None
        self.account(0, -1)
        return True

    def rename(self, src: list[str], dst: list[str]) -> None:
        """Move ``src`` to exactly ``dst`` (the caller has applied "into a directory")."""
        if not src:
            raise FsError(EACCES)
        if dst[: len(src)] == src:
            raise FsError(EINVAL)  # into itself
        source = self.path(src)
        target = self.path(dst, must_exist=False)
        t = self.stat_or_none(dst)
        try:
            s = os.lstat(source)
            below = walk.measure(source).depth + 1 if stat.S_ISDIR(s.st_mode) else 0
        except OSError as e:
            raise self.os_error(e) from None
        if below and len(dst) - 1 + below > MAX_DEPTH:
            raise FsError(TOO_DEEP)
        try:
            os.rename(source, target)
        except OSError as e:
            raise self.os_error(e) from None
        if t is not None and (s.st_ino, s.st_dev) != (t.st_ino, t.st_dev):
            self.account(-t.st_size if stat.S_ISREG(t.st_mode) else 0, -1)


def copy_out(fd: int, f: BinaryIO, size: int) -> None:
    """At most ``size`` bytes of ``fd`` into ``f``, a chunk at a time (less if it shrank)."""
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, _COPY_CHUNK))
        if not chunk:
            break
        f.write(chunk)
        left -= len(chunk)


def same_entry(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether two stats are one file (inode and device, as coreutils compares), so ``cp a a``,
    ``mv`` onto a hard link and ``cat a > a`` are refused instead of destroying the data."""
    return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)
