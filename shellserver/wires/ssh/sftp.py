"""The ``sftp`` subsystem: conch's SFTP protocol over the user's sandboxed home.

conch's :class:`FileTransferServer` parses and answers the requests; the
answers come from ``sftpfiles.py`` (``ISFTPServer``, ``ISFTPFile``), which
does every piece of file work as a job of the files layer in the home's
queue, together with the shell's own file commands.

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

import struct
from collections.abc import Callable
from typing import Any, cast

from twisted.conch.ssh import filetransfer
from twisted.conch.ssh.common import getNS
from twisted.conch.ssh.connection import EXTENDED_DATA_STDERR
from twisted.conch.ssh.filetransfer import (
    FX_BAD_MESSAGE,
    FX_FAILURE,
    FX_OP_UNSUPPORTED,
)
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from shellserver.files.homefs import Homes
from shellserver.ops.metrics import Metrics
from shellserver.ops.throttle import LogLimit
from shellserver.shell import sessionstart
from shellserver.shell.locks import Locks
from shellserver.shell.login import UNAVAILABLE_TEXT
from shellserver.shell.transfers import Transfers
from shellserver.store.accounts import UNAVAILABLE, Account
from shellserver.text.sanitize import careful
from shellserver.wires.ssh.sftpfiles import (
    POSIX_RENAME,
    Directory,
    HomeFiles,
    Session,
    deferred,
)

log = Logger()


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
#: What a channel of a connection whose account was locked since it logged in is told.
LOCKED_TEXT = "Your account is locked; contact an administrator.\n"
#: Seconds a channel ended by a kick, lock, ban, idle timeout or shutdown may take to close
#: its connection before it is dropped (a client that does not read).
HANG_UP_TIMEOUT = 10.0
#: Requests taken in one turn of the event loop at most: those answered at once (realpath,
#: refusals, malformed ones) would otherwise keep it busy with a whole window of them.
PER_TURN = 64
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
        d = deferred(self.files.rename(old, new, replace=True))
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
    pauses and resumes it as its window and connection allow. Once let in, it is one of the
    node's file transfers (``shell/transfers.py``), which a kick, lock, ban, deletion, the idle
    timeout or the stop ends through :meth:`end`."""

    def __init__(
        self, channel: Any, session: Session, transfers: Transfers, key: str = ""
    ) -> None:
        self.channel = channel
        self.session = session
        #: Where this channel is known while it runs, so every path that ends sessions ends it.
        self.transfers = transfers
        #: The fingerprint of the key the connection logged in with, "" for a password.
        self.key = key
        #: When a request was last taken (the idle timeout counts from it).
        self.last_active = session.clock.seconds()
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
        #: Once :meth:`end` has closed the channel: the timer that drops a client that does
        #: not close it too.
        self._ended: IDelayedCall | None = None

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
                if not taken:
                    self.last_active = self.session.clock.seconds()
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
        self.last_active = s.clock.seconds()
        self.transfers.add(self)
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

    # -- one of the node's file transfers ------------------------------------------------

    @property
    def user(self) -> str:
        """The account the channel logged in as (``Transfer``)."""
        return self.session.user

    @property
    def peer(self) -> str:
        """The client's address (``Transfer``: address and network bans)."""
        return self.session.peer

    def end(self, text: str, why: str) -> None:
        """A kick, lock, ban, deletion, the idle timeout or the stop: the client is told
        ``text`` on stderr (OpenSSH's ``sftp`` prints it), the channel ends with exit status 1
        and no further request is taken. Once the client has closed the channel too (so it has
        printed the text), the connection is closed when no other channel of it is in use; a
        client that has not closed it :data:`HANG_UP_TIMEOUT` seconds later is dropped."""
        if self._lost:
            return
        s = self.session
        log.info(
            "sftp by {user} from {peer} ended: {why}",
            event="sftp_end",
            wire="sftp",
            user=s.user,
            peer=s.peer,
            why=why,
        )
        channel = self.channel
        if text:
            channel.writeExtended(EXTENDED_DATA_STDERR, text.encode("utf-8", "replace"))
        channel.exit(1)
        self._ended = s.clock.callLater(HANG_UP_TIMEOUT, self._not_closed)
        self._stop()

    def _not_closed(self) -> None:
        """The client never closed the ended channel: its whole connection is dropped."""
        self._ended = None
        self.abort()

    def _closed_after_end(self) -> None:
        """The ended channel is closed on both sides: the connection goes too when no other
        channel of it is in use (a shell session of the same connection keeps it)."""
        ended, self._ended = self._ended, None
        if ended is None:
            return
        if ended.active():
            ended.cancel()
        channel = self.channel
        conn = channel.conn
        others = [
            c
            for c in getattr(conn, "channels", {}).values()
            if c is not channel and getattr(c, "wire", None) is not None
        ]
        if not others:
            hang_up(conn.transport, self.session.clock)

    def connection_lost(self) -> None:
        """The channel or connection is gone: open files are closed once their requests end."""
        self._closed_after_end()
        self._stop()
        if self.channel.wire is self:
            self.channel.wire = None

    def _stop(self) -> None:
        """No request is taken from now on; open files are closed once their requests end."""
        self.transfers.discard(self)
        if self._lost and not self.protocol.connected:
            return
        self._lost = True
        self._in.clear()
        if self._later is not None and self._later.active():
            self._later.cancel()
        self._later = None
        if self.protocol.connected:
            self.protocol.connectionLost(Failure(ConnectionError("sftp channel closed")))


def hang_up(transport: Any, clock: IReactorTime) -> None:
    """Close an SSH connection (a disconnect message, then the socket once written), and drop
    it if it is still there :data:`HANG_UP_TIMEOUT` seconds later."""
    socket = getattr(transport, "transport", None)
    if socket is None or getattr(socket, "disconnected", False):
        return  # gone already
    transport.loseConnection()

    def drop() -> None:
        if not getattr(socket, "disconnected", True):
            socket.abortConnection()

    clock.callLater(HANG_UP_TIMEOUT, drop)


#: Asks whether an account may use the subsystem from an address (with a key fingerprint, ""
#: for a password): None, or the refusal to show (``login_gate``).
Gate = Callable[[Account, str, str], Deferred[str | None]]


def login_gate(start: sessionstart.SessionStart, locks: Locks | None = None) -> Gate:
    """The login's own refusals for file transfer: a ban (of the address, the user, or the key
    the connection logged in with), a shutdown about to happen (admins still come in), an
    account locked since the connection logged in (``locks``, in memory), and, under
    ``--require-otp``, an account that has not enabled its second factor yet (it needs a
    terminal for that, as ``ssh host CMD`` is told)."""

    async def check(account: Account, peer: str, key: str) -> str | None:
        if locks is not None and account.name in locks:
            return LOCKED_TEXT
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
    homes: Homes,
    metrics: Metrics,
    clock: IReactorTime,
    gate: Gate,
    transfers: Transfers,
) -> Callable[[Any, Account], None]:
    """The SSH avatar's ``sftp`` subsystem: the channel gets a link to the user's own home (the
    logged-in name, never a path, decides whose files are reached), taking no request until
    ``gate`` lets the account in; refused, the client is told why on stderr, exit status 1.
    Let in, it is one of ``transfers`` until its channel closes."""

    def start(channel: Any, account: Account) -> None:
        transport = channel.conn.transport
        peer = getattr(transport, "peer", "?")
        key = getattr(transport, "key_fingerprint", "")
        session = Session(account, homes.home(account.name), peer, metrics, clock)
        link = SFTPLink(channel, session, transfers, key)
        channel.wire = link
        link.start()
        d = gate(account, peer, key)
        d.addCallback(link.admitted)
        d.addErrback(link.gate_failed)

    return start
