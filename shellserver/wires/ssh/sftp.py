"""The ``sftp`` subsystem: conch's SFTP protocol over the user's sandboxed home.

conch's :class:`FileTransferServer` parses and answers the requests; the
answers come from :class:`HomeFiles` (``ISFTPServer``) and :class:`OpenFile`
(``ISFTPFile``), which do every piece of file work as a job of the files
layer (``files/handles.py`` over the home's ``Tree``) on the I/O pool: paths
walked without following links, the quota, the entry, depth and name limits,
one job per home at a time together with the shell's own file commands.

:class:`SFTPLink` sits between the session channel and the protocol and
bounds what one client can make the server hold: a request is at most
256 KiB, requests are worked on one at a time and answered in the order they
came (as OpenSSH's own sftp-server does: its clients, ``scp`` among them,
count on it), nothing more is taken from the client while its answers cannot
be sent (its window is full, its socket is full), and the channel's window is
given back only as requests are taken, so a client that sends faster than the
disk, or asks for a large file and reads slowly, meets backpressure instead
of filling the server's memory.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar, cast

from twisted.conch.interfaces import ISFTPFile, ISFTPServer
from twisted.conch.ssh import filetransfer
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.connection import EXTENDED_DATA_STDERR
from twisted.conch.ssh.filetransfer import (
    FX_BAD_MESSAGE,
    FX_EOF,
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_OP_UNSUPPORTED,
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
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from shellserver.files import handles
from shellserver.files.homefs import Home, Homes
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
from shellserver.shell import sessionstart
from shellserver.shell.login import UNAVAILABLE_TEXT
from shellserver.store.accounts import UNAVAILABLE, Account
from shellserver.text.sanitize import careful

log = Logger()
T = TypeVar("T")


def _warnings_only(event: dict[str, Any]) -> None:
    """conch's SFTP protocol logs every request at info level (paths, handles): only its
    warnings and errors (a bug of ours, with its trace) reach the log."""
    level = event.get("log_level")
    if level is not None and level >= LogLevel.warn:
        globalLogPublisher(event)


_conch_log = Logger(observer=cast(ILogObserver, _warnings_only))

#: A request's length at most (OpenSSH's own sftp-server takes 256 KiB): a longer one is a
#: protocol error, so one request never makes the server hold more.
MAX_MESSAGE = 256 * 1024 + 1024
#: The channel's window for SFTP: room for one largest request and the next on its way.
SFTP_WINDOW = 2 * MAX_MESSAGE
#: Requests taken in one turn of the event loop at most: those answered at once (realpath,
#: refusals, malformed ones) would otherwise keep it busy with a whole window of them.
PER_TURN = 64
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

#: What conch's packet parsers raise on a request that does not parse.
MALFORMED = (struct.error, AssertionError, ValueError, IndexError, KeyError, TypeError)

#: The requests a client may send (the rest are answers, never sent to a server).
REQUESTS = frozenset(
    {
        filetransfer.FXP_INIT,
        filetransfer.FXP_OPEN,
        filetransfer.FXP_CLOSE,
        filetransfer.FXP_READ,
        filetransfer.FXP_WRITE,
        filetransfer.FXP_LSTAT,
        filetransfer.FXP_FSTAT,
        filetransfer.FXP_SETSTAT,
        filetransfer.FXP_FSETSTAT,
        filetransfer.FXP_OPENDIR,
        filetransfer.FXP_READDIR,
        filetransfer.FXP_REMOVE,
        filetransfer.FXP_MKDIR,
        filetransfer.FXP_RMDIR,
        filetransfer.FXP_REALPATH,
        filetransfer.FXP_STAT,
        filetransfer.FXP_RENAME,
        filetransfer.FXP_READLINK,
        filetransfer.FXP_SYMLINK,
        filetransfer.FXP_EXTENDED,
    }
)
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
        metrics: Metrics | None,
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
        if self.metrics is not None:
            self.metrics.sftp_operation(op, result)

    def moved(self, direction: str, size: int) -> None:
        """File content in (uploads) or out (downloads), in the metrics."""
        if self.metrics is not None and size:
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


def _deferred(coro: Coroutine[Any, Any, T]) -> Deferred[T]:
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
        return _deferred(self._open(filename, flags))

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
        return _deferred(self._delete("remove", filename, handles.remove_file))

    def removeDirectory(self, path: bytes) -> Deferred[None]:
        """An empty directory (never the home); logged as the ``delete`` event."""
        return _deferred(self._delete("rmdir", path, Tree.rmdir))

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
        return _deferred(self.rename(oldpath, newpath, replace=False))

    async def rename(self, oldpath: bytes, newpath: bytes, replace: bool) -> None:
        """Move within the home, the depth limit checked as ``mv`` checks it."""
        s = self.session
        old, src = s.parts("rename", oldpath)
        _, dst = s.parts("rename", newpath)
        await s.run("rename", old, handles.rename, src, dst, replace)

    def makeDirectory(self, path: bytes, attrs: dict[str, Any]) -> Deferred[None]:
        """A new directory (0700 whatever mode is asked), within the depth, entry and quota
        limits."""
        return _deferred(self._mkdir(path))

    async def _mkdir(self, raw: bytes) -> None:
        s = self.session
        path, parts = s.parts("mkdir", raw)
        await s.run("mkdir", path, Tree.mkdir, parts)

    def openDirectory(self, path: bytes) -> Deferred[Directory]:
        """The directory's entries, read as one job when it is opened."""
        return _deferred(self._opendir(path))

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
        return _deferred(self._stat(path))

    async def _stat(self, raw: bytes) -> dict[str, int]:
        s = self.session
        path, parts = s.parts("stat", raw)
        return attributes(await s.run("stat", path, Tree.lstat, parts))

    def setAttrs(self, path: bytes, attrs: dict[str, Any]) -> Deferred[None]:
        """Times are set and a size truncates or extends (within the quota); owner and mode are
        ignored: every file is its user's, 0600 (directories 0700)."""
        return _deferred(self._setstat(path, attrs))

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
        return _deferred(self._no_links("readlink", path))

    def makeLink(self, linkPath: bytes, targetPath: bytes) -> Deferred[Any]:
        """Refused: no link is ever made in a home."""
        return _deferred(self._no_links("symlink", linkPath))

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
        return _deferred(self._using(lambda: self._read(offset, length)))

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
        return _deferred(self._using(lambda: self._write(offset, data)))

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
        return _deferred(self._using(self._fstat))

    async def _fstat(self) -> dict[str, int]:
        return attributes(await self.session.run("fstat", self.path, handles.status_of, self.fd))

    def setAttrs(self, attrs: dict[str, Any]) -> Deferred[None]:
        """As :meth:`HomeFiles.setAttrs`, on the open file (a truncate, a time)."""
        return _deferred(self._using(lambda: self._fsetstat(attrs)))

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
        return _deferred(self._close())

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
        return _deferred(self._batch())

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


class FileTransfer(filetransfer.FileTransferServer):
    """conch's SFTP server protocol, fed whole requests by :class:`SFTPLink` (never its own
    unbounded ``dataReceived``), answering every request exactly once, a malformed one with
    ``SSH_FX_BAD_MESSAGE`` rather than a traceback."""

    _log = _conch_log

    def __init__(self, files: HomeFiles, link: SFTPLink) -> None:
        filetransfer.FileTransferBase.__init__(self)
        self.client = files
        self.files = files
        self.openFiles = {}
        self.openDirs = {}
        self.link = link

    def sendPacket(self, kind: int, data: bytes) -> None:
        """Every answer goes out through the link, which counts its request as done."""
        self.link.answer(kind, data)

    def request(self, packet: bytes) -> None:
        """One whole request (type, then its body)."""
        kind, data = packet[0], packet[1:]
        name = self.packetTypes.get(kind) if kind in REQUESTS else None
        handler = getattr(self, f"packet_{name}", None) if name else None
        key = data[:4] if kind != filetransfer.FXP_INIT else b""
        if handler is None:
            if len(key) == 4:
                self._sendStatus(key, FX_OP_UNSUPPORTED, b"unsupported request")
            else:
                self.link.answer(None, b"")
            return
        try:
            handler(data)
        except MALFORMED as e:
            self.link.malformed(kind, e)
            if len(key) == 4:
                self._sendStatus(key, FX_BAD_MESSAGE, b"malformed request")
            else:
                self.link.answer(None, b"")

    def packet_EXTENDED(self, data: bytes) -> None:
        """POSIX rename answers with a status (conch would answer every extension with data)."""
        request_id, rest = data[:4], data[4:]
        name, rest = getNS(rest)
        if name != POSIX_RENAME:
            super().packet_EXTENDED(data)
            return
        old, rest = getNS(rest)
        new, _ = getNS(rest)
        d = _deferred(self.files.rename(old, new, replace=True))
        d.addCallback(self._cbStatus, request_id, b"rename succeeded")
        d.addErrback(self._ebStatus, request_id, b"rename failed")

    def packet_READDIR(self, data: bytes) -> None:
        """The next batch of the directory's entries (conch's own readdir would take them all
        from an iterator on the reactor)."""
        request_id = data[:4]
        handle, rest = getNS(data[4:])
        if rest:
            raise ValueError("data after the handle")
        opened = self.openDirs.get(handle)
        if opened is None:
            self._sendStatus(request_id, FX_FAILURE, b"Invalid handle")
            return
        directory: Directory = opened[0]
        d = directory.batch()
        d.addCallback(self._cbSendDirectory, request_id)
        d.addErrback(self._ebStatus, request_id, b"scan directory failed")

    def _ebStatus(self, reason: Failure, requestId: bytes, msg: bytes = b"request failed") -> None:
        """A handle the client never had is a failure, not a logged traceback; our own errors
        are SFTP statuses already; anything else is a bug, logged by conch with its trace."""
        if reason.check(KeyError):
            self._sendStatus(requestId, FX_FAILURE, b"Invalid handle")
            return
        super()._ebStatus(reason, requestId, msg)

    _ebRead = _ebWrite = _ebStatus


class SFTPLink:
    """Between a session channel and the protocol: whole requests in, answers out, both bounded
    (see the module's docstring). It stands where a shell session's wire would, so the channel
    pauses and resumes it as its window and connection allow."""

    def __init__(self, channel: Any, session: Session) -> None:
        self.channel = channel
        self.session = session
        self.protocol = FileTransfer(HomeFiles(session), self)
        self._in = bytearray()
        #: A request is being worked on; the next waits for its answer.
        self._busy = False
        self._paused = False
        self._pumping = False
        self._eof = False
        self._lost = False
        self._malformed_log = LogLimit(60.0)
        #: The next turn's share of requests answered at once, when one is scheduled.
        self._later: IDelayedCall | None = None
        #: Until the login's refusals are checked (``sftp_starter``'s gate), nothing is taken.
        self._held = True

    def start(self) -> None:
        """Widen the channel's window to :data:`SFTP_WINDOW` (a request up to 256 KiB must fit)
        and take over giving it back (``manual_window``): only as requests are taken."""
        channel = self.channel
        channel.manual_window = True
        grow = SFTP_WINDOW - channel.localWindowSize
        if grow > 0:
            channel.localWindowSize = SFTP_WINDOW
            channel.conn.adjustWindow(channel, grow)
        self.protocol.makeConnection(self)

    # -- the transport conch's protocol writes to ---------------------------------------

    def write(self, data: bytes) -> None:
        """Not used: answers go through :meth:`answer`."""
        self.channel.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        """Part of the transport shape conch's protocol expects."""
        self.channel.write(b"".join(data))

    def loseConnection(self) -> None:
        """Close the channel once its answers have gone."""
        self.channel.loseConnection()

    def getPeer(self) -> Any:
        """The client's address, for conch's protocol."""
        return self.session.peer

    def getHost(self) -> Any:
        """Part of the transport shape; nothing of ours."""
        return None

    # -- requests in ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Bytes from the client: at most the window we gave, taken as requests as room allows."""
        if self._lost:
            return
        self._in += data
        self._pump()

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        taken = count = 0
        try:
            buf = self._in
            while (
                not self._lost
                and not self._held
                and not self._paused
                and not self._busy
                and len(buf) >= 4
            ):
                if count == PER_TURN:  # answered at once (realpath, refusals): let others run
                    if self._later is None:
                        self._later = self.session.clock.callLater(0, self._next_turn)
                    break
                (length,) = struct.unpack(">L", buf[:4])
                if length < 5 or length > MAX_MESSAGE:
                    self._protocol_error(f"request length {length}")
                    return
                if len(buf) < 4 + length:
                    break
                packet = bytes(buf[4 : 4 + length])
                del buf[: 4 + length]
                taken += 4 + length
                count += 1
                self._busy = True
                self.protocol.request(packet)
        finally:
            self._pumping = False
            if taken and not self._lost:
                self.channel.conn.adjustWindow(self.channel, taken)
        if self._eof and not self._in and not self._busy and not self._lost:
            self._lost = True
            self.channel.exit(0)

    def admitted(self, refusal: str | None) -> None:
        """The gate's answer: requests are taken from now on, or the client is told why not
        (stderr, exit status 1), as ``ssh host CMD`` would be."""
        if refusal is None:
            self.admit()
            return
        s = self.session
        log.info(
            "sftp by {user} from {peer} refused: {reason}",
            event="refused",
            wire="sftp",
            op="start",
            user=s.user,
            peer=s.peer,
            path="",
            reason=refusal.strip(),
        )
        if not self._lost:
            self._lost = True
            self._in.clear()
            self.channel.writeExtended(EXTENDED_DATA_STDERR, refusal.encode())
            self.channel.exit(1)

    def gate_failed(self, failure: Failure) -> None:
        """The gate could not answer: refused as a login is when the store is down (one log
        line), any other failure logged with its trace."""
        if failure.check(*UNAVAILABLE):
            log.warn(
                "sftp: the store could not check {user}'s login: {error}",
                user=self.session.user,
                error=str(failure.value),
            )
        else:
            log.failure("sftp: could not check {user}'s login", failure, user=self.session.user)
        self.admitted(UNAVAILABLE_TEXT)

    def admit(self) -> None:
        """Let the account in: as a login does, the home is measured again first (files an
        operator or ``addkey`` put there count), as the first job on the home's queue ahead of
        this channel's requests."""
        s = self.session
        self._held = False
        s.home.homes.measure_again(s.user)
        log.info(
            "sftp started by {user} from {peer}",
            event="sftp_start",
            wire="sftp",
            user=s.user,
            peer=s.peer,
        )
        self._pump()

    def _next_turn(self) -> None:
        self._later = None
        self._pump()

    def answer(self, kind: int | None, data: bytes) -> None:
        """The request worked on is answered (``kind`` None: dropped unanswered): sent, and the
        next request taken."""
        self._busy = False
        if kind is not None and not self._lost:
            self.channel.write(struct.pack(">LB", len(data) + 1, kind) + data)
        if not self._pumping:
            self._pump()

    def malformed(self, kind: int, error: BaseException) -> None:
        """A request that does not parse: one log line a minute per channel, never a trace."""
        count = self._malformed_log.due(self.session.clock.seconds())
        if count:
            log.warn(
                "sftp malformed request from {user} at {peer} (type {kind}: {error}){more}",
                event="sftp_malformed",
                user=self.session.user,
                peer=self.session.peer,
                kind=kind,
                error=careful(str(error) or type(error).__name__)[:200],
                more=f"; {count} since the last line" if count > 1 else "",
            )

    def _protocol_error(self, what: str) -> None:
        log.warn(
            "sftp protocol error from {user} at {peer} ({what}): channel closed",
            event="sftp_malformed",
            user=self.session.user,
            peer=self.session.peer,
            what=what,
        )
        self._in.clear()
        self._lost = True
        self.channel.loseConnection()

    def eof_received(self) -> None:
        """The client is done: the channel closes once the requests it sent are answered."""
        self._eof = True
        self._pump()

    # -- flow control, as for a shell's wire --------------------------------------------

    def pause(self) -> None:
        """Answers cannot go out now: take no more requests (the client's window fills)."""
        self._paused = True

    def resume(self) -> None:
        """Answers go out again: take the requests that waited."""
        self._paused = False
        self._pump()

    def resize(self, cols: int, rows: int) -> None:
        """A window size means nothing to file transfer."""

    def abort(self) -> None:
        """Drop the whole connection (a bug on our side, logged by the channel)."""
        transport = getattr(getattr(self.channel.conn, "transport", None), "transport", None)
        if transport is not None:
            transport.abortConnection()

    def connection_lost(self) -> None:
        """The channel or connection is gone: open files are closed once their requests end."""
        if self._lost and not self.protocol.connected:
            return
        self._lost = True
        self._in.clear()
        if self._later is not None and self._later.active():
            self._later.cancel()
        self._later = None
        if self.channel.wire is self:
            self.channel.wire = None
        if self.protocol.connected:
            self.protocol.connectionLost(Failure(ConnectionError("sftp channel closed")))


#: Asks whether an account may use the subsystem from an address (with a key fingerprint, ""
#: for a password): None, or the refusal to show (``login_gate``).
Gate = Callable[[Account, str, str], Deferred[str | None]]


def login_gate(start: sessionstart.SessionStart) -> Gate:
    """The login's own refusals for file transfer: a ban (of the address, the user, or the key
    the connection logged in with), a shutdown about to happen (admins still come in), and,
    under ``--require-otp``, an account that has not enabled its second factor yet (it needs a
    terminal for that, as ``ssh host CMD`` is told)."""

    async def check(account: Account, peer: str, key: str) -> str | None:
        refusal = start.login_refusal(account, peer, key)
        if refusal:
            return refusal + "\n"
        if await start.second_factor.must_enrol(account):
            return sessionstart.ENROL_FIRST
        return None

    def gate(account: Account, peer: str, key: str) -> Deferred[str | None]:
        return ensureDeferred(check(account, peer, key))

    return gate


def sftp_starter(
    homes: Homes, metrics: Metrics | None, clock: IReactorTime, gate: Gate | None = None
) -> Callable[[Any, Account], None]:
    """The SSH avatar's ``sftp`` subsystem: the channel gets a link to the user's own home (the
    logged-in name, never a path, decides whose files are reached), taking no request until
    ``gate`` lets the account in; refused, the client is told why on stderr, exit status 1."""

    def start(channel: Any, account: Account) -> None:
        transport = channel.conn.transport
        peer = getattr(transport, "peer", "?")
        session = Session(account, homes.home(account.name), peer, metrics, clock)
        link = SFTPLink(channel, session)
        channel.wire = link
        link.start()
        if gate is None:
            link.admit()
            return
        d = gate(account, peer, getattr(transport, "key_fingerprint", ""))
        d.addCallback(link.admitted)
        d.addErrback(link.gate_failed)

    return start
