"""What a user publishes: a file below ``<home>/public_html``, opened without following any link.

The personal pages listener (``--pages``) names a file by the user and the
path below their ``public_html``. :func:`components` checks that path
lexically (no ``..``, no ``.``, no empty or hostile name, within the path
and depth limits the homes keep), and :func:`open_published` opens it one
component at a time, each relative to the descriptor of the directory
before it, with ``O_NOFOLLOW``: a symlink anywhere (the home, ``public_html``
or any directory or file below it) is not found, never followed, so nothing
outside the home can be served, whatever a user or an operator put there.
Only regular files are served: a directory answers with its ``index.html``,
anything else (a FIFO, a device, a socket) is not found. Files are opened
``O_NONBLOCK`` so a FIFO planted in a home can never stall the caller.

Every way of not finding a file raises the same :class:`NotPublished`, so the
caller cannot answer a missing user differently from a missing file.

Each call costs one ``open`` per component and one ``fstat`` per open, with
at most :data:`MAX_COMPONENTS` components: no directory is ever read or walked.
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from attrs import frozen

from shellserver.files.sandbox import MAX_DEPTH, MAX_PATH, bad_name

#: The folder of a home that is published.
PUBLIC = "public_html"
#: What a directory answers with.
INDEX = "index.html"
#: Components below ``public_html``: the homes' own depth limit, plus the file itself.
MAX_COMPONENTS = MAX_DEPTH + 1

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotPublished(Exception):
    """No such user, no such file, a link, a hostile path: all one answer, so none can be told
    from another by a visitor (no user enumeration)."""


@frozen
class Published:
    """A regular file opened for serving, with the ``fstat`` taken on its descriptor (so the size
    and time are those of the file being sent, never of whatever a path names a moment later)."""

    file: BinaryIO
    size: int
    mtime: float
    #: The name its content type comes from (``index.html`` for a directory).
    name: str


@frozen
class Directory:
    """The path names a directory but did not end with ``/``: the caller redirects, so the
    relative links of its ``index.html`` resolve below it."""


def components(segments: list[str]) -> list[str]:
    """The names below ``public_html`` that URL path segments (already unquoted) name.

    A last empty segment (a trailing ``/``) is dropped: the caller knows it
    asked for a directory. Any other empty segment, ``.``, ``..``, a name
    holding ``/`` (an encoded ``%2F``), a NUL or control character, a name over
    255 bytes, a path over 4096 bytes or deeper than :data:`MAX_COMPONENTS`
    raises :class:`NotPublished`: a path that would leave (or try to leave)
    the folder is not resolved at all, only refused.
    """
    if segments and segments[-1] == "":
        segments = segments[:-1]
    if len(segments) > MAX_COMPONENTS:
        raise NotPublished
    if sum(len(s.encode("utf-8", "surrogateescape")) + 1 for s in segments) > MAX_PATH:
        raise NotPublished
    for name in segments:
        if name in ("", ".", "..") or "/" in name or "\x00" in name:
            raise NotPublished
        if bad_name(name) is not None:
            raise NotPublished
    return segments


def open_published(homes: str, user: str, names: list[str], slash: bool) -> Published | Directory:
    """The file ``names`` (from :func:`components`) below ``user``'s ``public_html`` under the
    homes folder ``homes``, opened for reading; ``slash``: the path ended with ``/``.

    Blocking (a few ``open``/``fstat`` system calls, no reads of any
    directory). Raises :class:`NotPublished` for anything that is not served.
    """
    try:
        fd = os.open(homes, _DIR_FLAGS & ~os.O_NOFOLLOW)  # the operator's --homes may be a link
    except OSError:
        raise NotPublished from None
    try:
        for name in [user, PUBLIC, *names[:-1]]:
            fd = _descend(fd, name)
        last = names[-1] if names else None
        if last is None:  # /~user/: public_html itself
            if not slash:
                return Directory()
            return _index(fd)
        child = _open_at(fd, last)
        st = _fstat(child)
        if stat.S_ISDIR(st.st_mode):
            os.close(fd)
            fd = child
            if not slash:
                return Directory()
            return _index(fd)
        if slash or not stat.S_ISREG(st.st_mode):
            os.close(child)
            raise NotPublished
        return _published(child, st, last)
    finally:
        os.close(fd)


def _descend(fd: int, name: str) -> int:
    """The directory ``name`` in ``fd``, replacing ``fd`` (closed); a link or a file is refused."""
    try:
        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
    except OSError:
        raise NotPublished from None
    os.close(fd)
    return child


def _open_at(fd: int, name: str) -> int:
    try:
        return os.open(name, _FILE_FLAGS, dir_fd=fd)
    except OSError:  # ELOOP for a link (O_NOFOLLOW), ENOENT, EACCES, ...
        raise NotPublished from None


def _fstat(fd: int) -> os.stat_result:
    try:
        return os.fstat(fd)
    except OSError:
        os.close(fd)
        raise NotPublished from None


def _index(fd: int) -> Published:
    """A directory's ``index.html``: a regular file, not a link, or nothing."""
    child = _open_at(fd, INDEX)
    st = _fstat(child)
    if not stat.S_ISREG(st.st_mode):
        os.close(child)
        raise NotPublished
    return _published(child, st, INDEX)


def _published(fd: int, st: os.stat_result, name: str) -> Published:
    os.set_blocking(fd, True)  # a regular file: reads never wait anyway; plain from here on
    return Published(os.fdopen(fd, "rb"), st.st_size, st.st_mtime, name)
