"""What each SFTP request does to the user's home: conch's ``ISFTPServer`` and ``ISFTPFile``.

:class:`HomeFiles` answers the path requests and :class:`OpenFile` and
:class:`Directory` the handle requests, each one a job of the files layer
(``files/handles.py`` over the home's ``Tree``) through the home's queue on
the I/O pool: paths walked without following links, the quota, the entry,
depth and name limits, in turn with the shell's own file commands. Errors
are SFTP statuses with coreutils' words; a refusal by the sandbox or a limit
is counted and logged as the ``refused`` event (rate-limited per channel).
The protocol and its bounds are ``sftp.py``'s.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from twisted.conch.interfaces import ISFTPFile, ISFTPServer
from twisted.conch.ssh.filetransfer import (
    FX_EOF,
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_PERMISSION_DENIED,
    FXF_APPEND,
    FXF_CREAT,
    FXF_EXCL,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    SFTPError,
)
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from shellserver.files import handles
from shellserver.files.homefs import Home
from shellserver.files.sandbox import (
    EACCES,
    EDQUOT,
    EINVAL,
    ENAMETOOLONG,
    ENOENT,
    ENOSPC,
    TOO_DEEP,
    FsError,
)
from shellserver.files.tree import Tree
from shellserver.ops.metrics import Metrics
from shellserver.ops.throttle import LogLimit
from shellserver.store.accounts import Account
from shellserver.text.sanitize import careful

log = Logger()
T = TypeVar("T")

#: A read answers at most this much (a client asking for more gets less, as SFTP allows).
MAX_READ = 64 * 1024
#: Files and directories one channel may hold open.
MAX_HANDLES = 64
#: Directories among them (each holds its names, up to ``handles.MAX_LISTED``).
MAX_DIRECTORIES = 8
#: Refusals logged at once per channel before the log line is limited to one a minute.
REFUSALS_LOGGED = 10
#: The largest offset a file can have (``off_t``); SFTP's are 64-bit unsigned.
MAX_OFFSET = 2**63 - 1
#: SFTP v3 times are 32-bit.
MAX_TIME = 2**32 - 1

#: Reasons that are the sandbox or a limit saying no (logged as ``refused``), not a plain
#: mistake such as a missing file.
REFUSED_REASONS = frozenset({EACCES, EDQUOT, ENAMETOOLONG, EINVAL, TOO_DEEP, ENOSPC})
TOO_MANY_HANDLES = "Too many open files"
NO_LINKS = "Permission denied"

#: OpenSSH's rename that replaces its target, offered to clients (``gotVersion``).
POSIX_RENAME = b"posix-rename@openssh.com"


def status_of(error: FsError) -> SFTPError:
    """A files-layer error as an SFTP status: the coreutils words as its message, with the two
    codes clients act on (no such file, permission denied) and ``SSH_FX_FAILURE`` for the
    rest (quota, limits, not a directory, …)."""
    code = {ENOENT: FX_NO_SUCH_FILE, EACCES: FX_PERMISSION_DENIED}.get(error.reason, FX_FAILURE)
    return SFTPError(code, error.reason)


def attributes(st: os.stat_result) -> dict[str, int]:
    """An entry's own status as SFTP attributes: size, type and mode, times. No owner: every
    file in a home is its user's, and the server's numeric ids mean nothing to the client."""
    return {
        "size": st.st_size,
        "permissions": st.st_mode,
        "atime": min(max(int(st.st_atime), 0), MAX_TIME),
        "mtime": min(max(int(st.st_mtime), 0), MAX_TIME),
    }


def _text(raw: bytes) -> str:
    """A client's path: UTF-8, with invalid bytes kept as lone surrogates the sandbox refuses."""
    return raw.decode("utf-8", "surrogateescape")


class Session:
    """One SFTP channel's user, home and bookkeeping: metrics, log lines, open handles."""

    def __init__(
        self,
        account: Account,
        home: Home,
        peer: str,
        metrics: Metrics,
        clock: IReactorTime,
    ) -> None:
        self.user = account.name
        self.clock = clock
        self.home = home
        self.peer = peer
        self.metrics = metrics
        self.handles = 0
        self.directories = 0
        self._refusals = 0
        self._refusal_log = LogLimit(60.0)

    def counted(self, op: str, result: str) -> None:
        """One request's result in the metrics (``ok``, ``failed`` or ``refused``)."""
        self.metrics.sftp_operation(op, result)

    def moved(self, direction: str, size: int) -> None:
        """File content in (uploads) or out (downloads), in the metrics."""
        if size:
            self.metrics.sftp_bytes(direction, size)

    def refused(self, op: str, path: str, reason: str) -> None:
        """A refusal by the sandbox or a limit, logged as the ``refused`` event: the first few of
        a channel at once, then at most one line a minute with the count, so a client sending
        hostile paths in a loop cannot flood the log."""
        self._refusals += 1
        if self._refusals <= REFUSALS_LOGGED:
            count = 1
        else:
            count = self._refusal_log.due(self.clock.seconds())
            if not count:
                return
        log.info(
            "sftp {op} by {user} from {peer} refused: {path}: {reason}{more}",
            event="refused",
            wire="sftp",
            op=op,
            user=self.user,
            peer=self.peer,
            path=careful(path)[:200],
            reason=reason,
            more=f" ({count} refusals since the last line)" if count > 1 else "",
        )

    async def run(self, op: str, path: str, job: Callable[..., T], *args: Any) -> T:
        """``job(tree, *args)`` on the home's queue, its outcome counted and a refusal logged; a
        files-layer error becomes the SFTP status with its coreutils words."""
        try:
            result = await self.home.run(job, *args)
        except FsError as e:
            self.failed(op, path, e)
            raise status_of(e) from None
        self.counted(op, "ok")
        return result

    def failed(self, op: str, path: str, error: FsError) -> None:
        """Count (and when the sandbox or a limit said no, log) a request that failed."""
        if error.reason in REFUSED_REASONS:
            self.counted(op, "refused")
            self.refused(op, path, error.reason)
        else:
            self.counted(op, "failed")

    def shown(self, parts: list[str]) -> str:
        """The path as the shell's ``pwd`` and ``ls`` show it (``/home/USER/…``), whatever form
        the client sent: what the log and ``realpath`` say."""
        return "/".join(["/home", self.user, *parts])

    def parts(self, op: str, raw: bytes) -> tuple[str, list[str]]:
        """The client's path and the components below the home it names; a path the sandbox
        refuses (too long, a bad name) fails here, before any disk work."""
        path = _text(raw)
        try:
            return path, handles.client_parts(self.user, path)
        except FsError as e:
            self.failed(op, path, e)
            raise status_of(e) from None


def deferred(coro: Coroutine[Any, Any, T]) -> Deferred[T]:
    """A coroutine as the Deferred conch's protocol chains its answer on."""
    return ensureDeferred(coro)


@implementer(ISFTPServer)
class HomeFiles:
    """The home as an SFTP server sees it: every request one files-layer job on the home's
    queue (see the module's docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        #: conch's interface names the avatar; nothing here uses it.
        self.avatar = None

    def gotVersion(self, otherVersion: int, extData: dict[bytes, bytes]) -> dict[bytes, bytes]:
        """Offered: OpenSSH's POSIX rename (replaces the target, as ``mv`` does), which sshfs and
        ``sftp rename`` use when the server has it."""
        return {POSIX_RENAME: b"1"}

    def openFile(self, filename: bytes, flags: int, attrs: dict[str, Any]) -> Deferred[OpenFile]:
        """A file for reading or writing; the mode the client asks for is not applied (files in
        a home are always 0600)."""
        return deferred(self._open(filename, flags))

    async def _open(self, filename: bytes, flags: int) -> OpenFile:
        s = self.session
        path, parts = s.parts("open", filename)
        if s.handles >= MAX_HANDLES:
            s.counted("open", "refused")
            s.refused("open", path, TOO_MANY_HANDLES)
            raise SFTPError(FX_FAILURE, TOO_MANY_HANDLES)
        writing = bool(flags & (FXF_WRITE | FXF_APPEND))
        if writing:
            fd = await s.run(
                "open",
                path,
                handles.open_writing,
                parts,
                bool(flags & FXF_CREAT),
                bool(flags & FXF_TRUNC),
                bool(flags & FXF_EXCL),
                bool(flags & FXF_READ),
            )
        else:
            fd = await s.run("open", path, handles.open_reading, parts)
        return OpenFile(s, s.shown(parts), fd, writing, bool(flags & FXF_APPEND))

    def removeFile(self, filename: bytes) -> Deferred[None]:
        """A file or a planted link (never followed); logged as the ``delete`` event."""
        return deferred(self._delete("remove", filename, handles.remove_file))

    def removeDirectory(self, path: bytes) -> Deferred[None]:
        """An empty directory (never the home); logged as the ``delete`` event."""
        return deferred(self._delete("rmdir", path, Tree.rmdir))

    async def _delete(self, op: str, raw: bytes, job: Callable[[Tree, list[str]], None]) -> None:
        s = self.session
        path, parts = s.parts(op, raw)
        await s.run(op, path, job, parts)
        log.info(
            "sftp {op} by {user} from {peer}: {path}",
            event="delete",
            wire="sftp",
            op=op,
            user=s.user,
            peer=s.peer,
            path=careful(s.shown(parts))[:200],
        )

    def renameFile(self, oldpath: bytes, newpath: bytes) -> Deferred[None]:
        """SFTP's rename: an existing target is ``File exists`` (POSIX rename replaces it)."""
        return deferred(self.rename(oldpath, newpath, replace=False))

    async def rename(self, oldpath: bytes, newpath: bytes, replace: bool) -> None:
        """Move within the home, the depth limit checked as ``mv`` checks it."""
        s = self.session
        old, src = s.parts("rename", oldpath)
        _, dst = s.parts("rename", newpath)
        await s.run("rename", old, handles.rename, src, dst, replace)

    def makeDirectory(self, path: bytes, attrs: dict[str, Any]) -> Deferred[None]:
        """A new directory (0700 whatever mode is asked), within the depth, entry and quota
        limits."""
        return deferred(self._mkdir(path))

    async def _mkdir(self, raw: bytes) -> None:
        s = self.session
        path, parts = s.parts("mkdir", raw)
        await s.run("mkdir", path, Tree.mkdir, parts)

    def openDirectory(self, path: bytes) -> Deferred[Directory]:
        """The directory's entries, read as one job when it is opened."""
        return deferred(self._opendir(path))

    async def _opendir(self, raw: bytes) -> Directory:
        s = self.session
        path, parts = s.parts("opendir", raw)
        if s.handles >= MAX_HANDLES or s.directories >= MAX_DIRECTORIES:
            s.counted("opendir", "refused")
            s.refused("opendir", path, TOO_MANY_HANDLES)
            raise SFTPError(FX_FAILURE, TOO_MANY_HANDLES)
        names = await s.run("opendir", path, handles.directory_names, parts)
        return Directory(s, path, parts, names)

    def getAttrs(self, path: bytes, followLinks: bool) -> Deferred[dict[str, int]]:
        """The entry's own status whether the client asks to follow links or not: links are never
        followed, and one planted on the way is ``Permission denied``."""
        return deferred(self._stat(path))

    async def _stat(self, raw: bytes) -> dict[str, int]:
        s = self.session
        path, parts = s.parts("stat", raw)
        return attributes(await s.run("stat", path, Tree.lstat, parts))

    def setAttrs(self, path: bytes, attrs: dict[str, Any]) -> Deferred[None]:
        """Times are set and a size truncates or extends (within the quota); owner and mode are
        ignored: every file is its user's, 0600 (directories 0700)."""
        return deferred(self._setstat(path, attrs))

    async def _setstat(self, raw: bytes, attrs: dict[str, Any]) -> None:
        s = self.session
        path, parts = s.parts("setstat", raw)
        if "size" in attrs:
            await s.run("setstat", path, handles.resize_path, parts, attrs["size"])
        if "atime" in attrs and "mtime" in attrs:
            await s.run("setstat", path, handles.set_times, parts, attrs["atime"], attrs["mtime"])
        elif "size" not in attrs:
            s.counted("setstat", "ok")

    def readLink(self, path: bytes) -> Deferred[Any]:
        """Refused: a link planted in a home is never followed, and where it points is the
        server's business."""
        return deferred(self._no_links("readlink", path))

    def makeLink(self, linkPath: bytes, targetPath: bytes) -> Deferred[Any]:
        """Refused: no link is ever made in a home."""
        return deferred(self._no_links("symlink", linkPath))

    async def _no_links(self, op: str, raw: bytes) -> None:
        s = self.session
        s.counted(op, "refused")
        s.refused(op, _text(raw), NO_LINKS)
        raise SFTPError(FX_PERMISSION_DENIED, NO_LINKS)

    def realPath(self, path: bytes) -> bytes:
        """The path as the shell's ``pwd`` shows it (``/home/USER/…``), worked out from the words
        alone: nothing is looked up, and no link is followed."""
        s = self.session
        _, parts = s.parts("realpath", path)
        s.counted("realpath", "ok")
        return s.shown(parts).encode("utf-8", "surrogateescape")

    def extendedRequest(self, extendedName: bytes, extendedData: bytes) -> bytes:
        """No extension answers with data; POSIX rename answers with a status and is handled by
        the protocol (:meth:`FileTransfer.packet_EXTENDED`)."""
        self.session.counted("extended", "failed")
        raise NotImplementedError("unsupported request")


@implementer(ISFTPFile)
class OpenFile:
    """A file a client holds open. Every read and write is a job on the home's queue (each write
    charged against the quota), in turn with the shell's file commands. Closing waits for the
    requests still working on the descriptor, so its number is never reused under them."""

    def __init__(self, session: Session, path: str, fd: int, writing: bool, append: bool) -> None:
        self.session = session
        self.path = path
        self.fd = fd
        self.writing = writing
        self.append = append
        self.written = 0
        self._busy = 0
        self._idle: list[Deferred[None]] = []
        self._closed = False
        session.handles += 1

    async def _using(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if self._closed:
            raise SFTPError(FX_FAILURE, "Bad file descriptor")
        self._busy += 1
        try:
            return await work()
        finally:
            self._busy -= 1
            if not self._busy:
                waiting, self._idle = self._idle, []
                for d in waiting:
                    d.callback(None)

    def readChunk(self, offset: int, length: int) -> Deferred[bytes]:
        """At most :data:`MAX_READ` bytes at ``offset``; end of file is conch's empty answer
        (``SSH_FX_EOF``)."""
        return deferred(self._using(lambda: self._read(offset, length)))

    async def _read(self, offset: int, length: int) -> bytes:
        s = self.session
        if offset > MAX_OFFSET:  # past any file there can be (pread would overflow)
            s.counted("read", "ok")
            raise SFTPError(FX_EOF, "End of file")
        data = await s.run(
            "read", self.path, handles.read_at, self.fd, min(length, MAX_READ), offset
        )
        if not data:
            raise SFTPError(FX_EOF, "End of file")
        s.moved("out", len(data))
        return data

    def writeChunk(self, offset: int, data: bytes) -> Deferred[None]:
        """Write at ``offset`` as one job on the home's queue: over the quota nothing of it is
        stored and the answer is ``Disk quota exceeded``."""
        return deferred(self._using(lambda: self._write(offset, data)))

    async def _write(self, offset: int, data: bytes) -> None:
        s = self.session
        if not self.writing:
            s.counted("write", "failed")
            raise SFTPError(FX_PERMISSION_DENIED, "Bad file descriptor")
        await s.run("write", self.path, handles.write_at, self.fd, offset, data, self.append)
        self.written += len(data)
        s.moved("in", len(data))

    def getAttrs(self) -> Deferred[dict[str, int]]:
        """The open file's status (``fstat``)."""
        return deferred(self._using(self._fstat))

    async def _fstat(self) -> dict[str, int]:
        return attributes(await self.session.run("fstat", self.path, handles.status_of, self.fd))

    def setAttrs(self, attrs: dict[str, Any]) -> Deferred[None]:
        """As :meth:`HomeFiles.setAttrs`, on the open file (a truncate, a time)."""
        return deferred(self._using(lambda: self._fsetstat(attrs)))

    async def _fsetstat(self, attrs: dict[str, Any]) -> None:
        s = self.session
        if "size" in attrs:
            if not self.writing:
                s.counted("fsetstat", "failed")
                raise SFTPError(FX_PERMISSION_DENIED, "Bad file descriptor")
            await s.run("fsetstat", self.path, handles.resize, self.fd, attrs["size"])
        if "atime" in attrs and "mtime" in attrs:
            await s.run(
                "fsetstat", self.path, handles.set_times_open, self.fd, attrs["atime"],
                attrs["mtime"],
            )  # fmt: skip
        elif "size" not in attrs:
            s.counted("fsetstat", "ok")

    def close(self) -> Deferred[None]:
        """Once the requests on the descriptor are done, close it (on the pool); an upload is
        logged as the ``upload`` event."""
        return deferred(self._close())

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while self._busy:
            idle: Deferred[None] = Deferred()
            self._idle.append(idle)
            await idle
        s = self.session
        s.handles -= 1
        with contextlib.suppress(OSError):
            await s.home.io(os.close, self.fd)
        if self.writing:
            log.info(
                "sftp upload by {user} from {peer}: {path} ({size} bytes)",
                event="upload",
                wire="sftp",
                user=s.user,
                peer=s.peer,
                path=careful(self.path)[:200],
                size=self.written,
            )


class Directory:
    """An open directory: its names, read when it was opened; each readdir looks up the status
    of the next batch of them as one job on the home's queue."""

    def __init__(self, session: Session, path: str, parts: list[str], names: list[str]) -> None:
        self.session = session
        self.path = path
        self.parts = parts
        self.names = names
        self._next = 0
        self._closed = False
        session.handles += 1
        session.directories += 1

    def __iter__(self) -> Iterator[tuple[bytes, bytes, dict[str, int]]]:
        """conch's interface asks for one; readdir is answered by :meth:`batch` instead."""
        return iter(())

    def batch(self) -> Deferred[list[tuple[bytes, bytes, dict[str, int]]]]:
        """The next entries for one readdir answer; ``EOFError`` (``SSH_FX_EOF``) at the end."""
        return deferred(self._batch())

    async def _batch(self) -> list[tuple[bytes, bytes, dict[str, int]]]:
        while self._next < len(self.names):
            names = self.names[self._next : self._next + handles.BATCH]
            self._next += len(names)
            s = self.session
            entries = await s.run("readdir", self.path, handles.list_entries, self.parts, names)
            if entries:
                return [
                    (
                        e.name.encode("utf-8", "surrogateescape"),
                        e.longname.encode("utf-8", "surrogateescape"),
                        attributes(e.st),
                    )
                    for e in entries
                ]
        raise EOFError()

    def close(self) -> None:
        """Forget the names and free the handle."""
        if not self._closed:
            self._closed = True
            self.session.handles -= 1
            self.session.directories -= 1
            self.names = []
