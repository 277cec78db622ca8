"""Open files and single-path operations for file transfer (SFTP): jobs over a home's Tree.

The shell's commands take words and print text; a file-transfer client
instead names one path per request and keeps files open between requests,
reading and writing at offsets. These jobs give it exactly that on the same
:class:`~shellserver.files.tree.Tree`, so the sandbox (paths walked with
``lstat``, links refused, ``O_NOFOLLOW``), the quota, the entry, depth and
name limits are the shell's own. Each runs on the I/O pool, queued behind
the home's other jobs (``Home.run``), the shell's commands included, so a
quota check and the write it allows are one step.

A write at an offset is charged for what it adds past the file's end: a
write that would pass the quota stores nothing and fails with ``Disk quota
exceeded``, so an upload over the quota leaves the file as it was before that
write, never with a byte past the limit.
"""

from __future__ import annotations

import os
import stat
import time

from attrs import frozen

from shellserver.files.listing import long_line
from shellserver.files.sandbox import (
    EACCES,
    EEXIST,
    EINVAL,
    EISDIR,
    ENAMETOOLONG,
    ENOENT,
    MAX_PATH,
    FsError,
    resolve,
)
from shellserver.files.tree import Tree
from shellserver.text.sanitize import careful

#: The largest offset a file can have (``off_t``).
MAX_OFFSET = 2**63 - 1
#: Names one open directory holds, at most: the per-home entry limit, with room for files an
#: operator put there beyond it.
MAX_LISTED = 20_000
#: Entries looked up per readdir answer (one job each), so a big directory is never held
#: with every entry's status at once.
BATCH = 100


def client_parts(user: str, path: str) -> list[str]:
    """The components below the home that a file-transfer client's path names.

    The client sees the home as ``/`` and as ``/home/USER`` alike: ``/x`` and
    ``/home/USER/x`` are the same file, ``..`` stops at the home, and any
    other absolute path (``/etc/passwd``) is read below the home, so nothing
    outside it can be named. ``~`` means nothing special here: SFTP paths are
    not expanded by a shell.
    """
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH:
        raise FsError(ENAMETOOLONG)
    mine = f"/home/{user}"
    if path == mine or path.startswith(mine + "/"):
        path = path[len(mine) :]
    return resolve(user, "", "./" + path.lstrip("/"))


@frozen
class Entry:
    """A directory entry as a client lists it: its name, the ``ls -l`` line, its status."""

    name: str
    longname: str
    st: os.stat_result


def directory_names(tree: Tree, parts: list[str]) -> list[str]:
    """An opened directory's names, sorted, ``.`` and ``..`` first as a server's readdir gives
    them, at most :data:`MAX_LISTED`: the entries' status is looked up a batch at a time by
    :func:`list_entries` as the client reads them."""
    if not stat.S_ISDIR(tree.lstat(parts).st_mode):
        raise FsError("Not a directory")
    return [".", "..", *tree.listdir(parts)[:MAX_LISTED]]


def list_entries(
    tree: Tree, parts: list[str], names: list[str], now: float | None = None
) -> list[Entry]:
    """The entries named, with their own status (a planted link is listed as a link, never
    followed) and their ``ls -l`` line, names with control characters made visible; a name
    removed meanwhile is left out. The directory is walked again (no link on the way)."""
    when = time.time() if now is None else now
    base = tree.path(parts)
    entries = []
    for name in names:
        try:
            if name in (".", ".."):
                st = tree.lstat(parts if name == "." else parts[:-1])
            else:
                st = os.lstat(os.path.join(base, name))
        except (OSError, FsError):
            continue
        entries.append(Entry(name, long_line(careful(name), st, when), st))
    return entries


def list_directory(tree: Tree, parts: list[str], now: float | None = None) -> list[Entry]:
    """A whole directory's entries at once (see :func:`directory_names`)."""
    return list_entries(tree, parts, directory_names(tree, parts), now)


def open_reading(tree: Tree, parts: list[str]) -> int:
    """A descriptor to read a regular file from (links refused, ``O_NOFOLLOW``); the caller
    closes it."""
    fd = tree.open_read(parts)
    os.set_blocking(fd, True)
    return fd


def read_at(tree: Tree, fd: int, size: int, offset: int) -> bytes:
    """At most ``size`` bytes of an open file at ``offset`` (empty at its end)."""
    try:
        return os.pread(fd, size, offset)
    except OSError as e:
        raise tree.os_error(e) from None


def status_of(tree: Tree, fd: int) -> os.stat_result:
    """An open file's status (``fstat``)."""
    try:
        return os.fstat(fd)
    except OSError as e:
        raise tree.os_error(e) from None


def open_writing(
    tree: Tree,
    parts: list[str],
    create: bool,
    truncate: bool,
    exclusive: bool,
    readable: bool = False,
) -> int:
    """A descriptor to write (and with ``readable`` read) a regular file at offsets.

    A new file costs one entry (refused when the home is full, as ``touch``
    is); emptying an existing one gives its bytes back to the quota at once.
    """
    if not parts:
        raise FsError(EISDIR)
    target = tree.path(parts, must_exist=False)
    old = tree.stat_or_none(parts)
    if old is not None:
        if exclusive:
            raise FsError(EEXIST)
        if stat.S_ISDIR(old.st_mode):
            raise FsError(EISDIR)
        if not stat.S_ISREG(old.st_mode):
            raise FsError(EACCES)  # a planted link or device: never opened
    elif not create:
        raise FsError(ENOENT)
    else:
        tree.check_room(0, 1)
    flags = (os.O_RDWR if readable else os.O_WRONLY) | os.O_NOFOLLOW | os.O_CLOEXEC
    if old is None:
        flags |= os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(target, flags, 0o600)
    except OSError as e:
        raise tree.os_error(e) from None
    if old is None:
        tree.account(0, 1)
    elif truncate and old.st_size:
        try:
            os.ftruncate(fd, 0)
        except OSError as e:
            os.close(fd)
            raise tree.os_error(e) from None
        tree.account(-old.st_size)
    return fd


def write_at(tree: Tree, fd: int, offset: int, data: bytes, append: bool) -> None:
    """Write ``data`` at ``offset`` (at the end with ``append``), charged for what it adds past
    the end: all of it or, over the quota, none of it (``Disk quota exceeded``). A file removed
    while open is written without being charged: its bytes are no longer in the home."""
    st = os.fstat(fd)
    start = st.st_size if append else offset
    if start < 0 or start + len(data) > MAX_OFFSET:
        raise FsError(EINVAL)
    grow = max(0, start + len(data) - st.st_size)
    counted = st.st_nlink > 0
    if counted:
        tree.check_room(grow)
    try:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:], start + done)
    except OSError as e:
        if grow:  # all or nothing: what this write added past the end goes again
            os.ftruncate(fd, st.st_size)
        raise tree.os_error(e) from None
    if counted:
        tree.account(grow)


def resize(tree: Tree, fd: int, size: int) -> None:
    """Cut or extend an open file to ``size`` (a client's truncate), within the quota."""
    if size < 0 or size > MAX_OFFSET:
        raise FsError(EINVAL)
    st = os.fstat(fd)
    counted = st.st_nlink > 0
    if counted and size > st.st_size:
        tree.check_room(size - st.st_size)
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        raise tree.os_error(e) from None
    if counted:
        tree.account(size - st.st_size)


def resize_path(tree: Tree, parts: list[str], size: int) -> None:
    """:func:`resize` by name: the file is opened without following a link."""
    fd = open_writing(tree, parts, create=False, truncate=False, exclusive=False)
    try:
        resize(tree, fd, size)
    finally:
        os.close(fd)


def set_times(tree: Tree, parts: list[str], atime: int, mtime: int) -> None:
    """A client's ``-p``: the entry's own times (a link's, never its target's)."""
    target = tree.path(parts)
    try:
        os.utime(target, (atime, mtime), follow_symlinks=False)
    except OSError as e:
        raise tree.os_error(e) from None


def set_times_open(tree: Tree, fd: int, atime: int, mtime: int) -> None:
    """:func:`set_times` on an open file."""
    try:
        os.utime(fd, (atime, mtime))
    except OSError as e:
        raise tree.os_error(e) from None


def remove_file(tree: Tree, parts: list[str]) -> None:
    """A file (or a planted link, unlinked and never followed); a directory is ``Is a
    directory``, as ``rm`` without ``-r`` says."""
    tree.remove(parts, recursive=False)


def rename(tree: Tree, src: list[str], dst: list[str], replace: bool) -> None:
    """Move ``src`` to ``dst``: the plain SFTP rename refuses an existing target (``File
    exists``), the POSIX one replaces it as ``mv`` does; the depth limit holds either way."""
    if not replace and dst and tree.stat_or_none(dst) is not None:
        raise FsError(EEXIST)
    tree.rename(src, dst)
