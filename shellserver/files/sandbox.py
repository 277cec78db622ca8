"""Typed paths to components below the home, lexically, before anything touches the disk.

``..`` stops at the home (as under chroot); ``/home/<user>`` and ``~`` name
the home; any other absolute path or ``~other`` is refused. Names with
control characters or invalid UTF-8 are refused, and the limits (255-byte
names, 4096-byte paths) hold before any system call is made, so a hostile
path costs no disk work and always gets coreutils' error.
"""

from __future__ import annotations

import errno

ENOENT = "No such file or directory"
ENOTDIR = "Not a directory"
EISDIR = "Is a directory"
EACCES = "Permission denied"
EEXIST = "File exists"
ENOTEMPTY = "Directory not empty"
EDQUOT = "Disk quota exceeded"
ENOSPC = "No space left on device"
ENAMETOOLONG = "File name too long"
EINVAL = "Invalid argument"
E2BIG = "Argument list too long"
TOO_DEEP = "Too many levels of directories (at most 64)"

MAX_NAME = 255
MAX_PATH = 4096
#: Directory levels below the home that mkdir and mv will make: a bound users meet as a clear
#: error, so no home holds a tree too deep for its paths to be typed.
MAX_DEPTH = 64
#: Files and directories one home may hold (inode quota).
MAX_ENTRIES = 10_000

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
    errno.ENOSPC: ENOSPC,
    errno.ENAMETOOLONG: ENAMETOOLONG,
    errno.EINVAL: EINVAL,
}


class FsError(Exception):
    """A reason in strerror words (``No such file or directory``), shown after the path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Refusal(Exception):
    """A whole message in coreutils' words, shown after ``cmd: `` as it is
    (``'b' and 'b' are the same file``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def from_os(e: OSError) -> FsError:
    """An OSError as the user should read it: coreutils' words for the errors a command can meet (a
    loop or a permission problem is ``Permission denied``), never a traceback."""
    return FsError(_STRERROR.get(e.errno or 0, e.strerror or "Input/output error"))


def bad_name(name: str) -> str | None:
    """Why a component may not be used, or None. Control characters (C0, DEL, C1) and lone
    surrogates (invalid UTF-8 from the client) are refused so a file name never carries an escape
    sequence into a listing; over 255 bytes is refused before the kernel sees it."""
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or 0xD800 <= ord(c) <= 0xDFFF for c in name):
        return EINVAL
    if len(name.encode("utf-8")) > MAX_NAME:
        return ENAMETOOLONG
    return None


def resolve(user: str, cwd: str, typed: str) -> list[str]:
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
        if other != user:
            raise FsError(EACCES)
        base, rest = [], typed[1 + len(other) :]
    elif typed.startswith("/"):
        mine = f"/home/{user}"
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
        problem = bad_name(name)
        if problem is not None:
            raise FsError(problem)
        parts.append(name)
    return parts


def shown(user: str, parts: list[str]) -> str:
    """The path as users see it (``/home/<user>/…``), never the real path under the data dir, which
    would reveal the server's layout."""
    return "/".join(["/home", user, *parts])
