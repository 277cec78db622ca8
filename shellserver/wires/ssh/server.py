"""The conch server side: transport with the pre-auth limits, authentication, refusals.

What happens once a user is authenticated and asks for a shell or a command
is handed to ``start`` (a :class:`SessionStart`): ``session.py`` makes the
channel a wire and enters the shared session start (``sessionstart.py``).
The ``sftp`` subsystem is handed to ``sftp`` (``sftp.py``); everything else
SSH can do besides a session (port, agent and X11 forwarding, other
subsystems, legacy ``scp``) is refused.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, cast

from attrs import frozen
from twisted.conch.avatar import ConchUser
from twisted.conch.error import ConchError, IgnoreAuthentication, NotEnoughAuthentication
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import common, connection, factory, transport, userauth
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from shellserver.ops.admission import MADE_ROOM, Admission, Stalled
from shellserver.ops.metrics import Metrics
from shellserver.ops.pacing import AccountPacing
from shellserver.ops.sockets import tune
from shellserver.ops.throttle import FailedLogins, LogLimit
from shellserver.shell.login import LOGGED_NAME, STORE_DOWN_TEXT
from shellserver.shell.secondfactor import CODE_PROMPT
from shellserver.store.accounts import Account, AccountLocked, StoreUnavailable
from shellserver.store.auth import AccountRealm, Accounts
from shellserver.store.otp import OtpStore, Verdict
from shellserver.text.sanitize import careful
from shellserver.wires.ssh.hostkeys import HostKeyFiles, HostKeys, fingerprint
from shellserver.wires.ssh.session import Channel, ChannelSide, Request

log = Logger()


def _conch_events(event: dict[str, Any]) -> None:
    """What conch's own logging may pass on: warnings and worse, nothing routine.

    At debug and info level conch logs every packet kind, channel open and
    close, and a channel's *data* (what users type, passwords included), and a
    client that disconnects normally is logged as an error.
    """
    level = event.get("log_level")
    if level is None or level < LogLevel.warn:
        return
    if event.get("code") == transport.DISCONNECT_BY_APPLICATION:
        return
    globalLogPublisher(event)


#: The logger conch's classes use here instead of their own (``_log``).
_conch_log = Logger(observer=cast(ILogObserver, _conch_events))

#: Session channels one connection may have open at once (OpenSSH's MaxSessions is 10).
MAX_CHANNELS = 4
#: Authentication attempts before the connection is closed (OpenSSH's MaxAuthTries is 6).
MAX_AUTH_TRIES = 6
#: Pauses after the 1st, 2nd, 3rd and later failed passwords on a connection (telnet's login).
PASSWORD_DELAYS = (1.0, 2.0, 4.0)
MAX_TERM = 64
#: An exec request's command line, at most (the shell's own line limit is lower).
MAX_COMMAND = 64 * 1024
MAX_DIMENSION = 10_000
REFUSED_CHANNELS = frozenset(
    {b"direct-tcpip", b"forwarded-tcpip", b"x11", b"auth-agent@openssh.com"}
)
#: Public-key queries (keys offered without a signature) per connection. A query for a
#: listed key is answered "sign with it" and is no failure, so MaxAuthTries alone would let
#: one connection ask about the same key forever; a client offering its keys needs one
#: query per key, and OpenSSH closes after six failures anyway.
MAX_KEY_QUERIES = MAX_AUTH_TRIES
#: Key blob types conch parses; another type is refused like a key that is not listed.
KEY_BLOB_TYPES = frozenset(
    {
        b"ssh-rsa",
        b"ssh-dss",
        b"ssh-ed25519",
        b"ecdsa-sha2-nistp256",
        b"ecdsa-sha2-nistp384",
        b"ecdsa-sha2-nistp521",
        b"sk-ecdsa-sha2-nistp256@openssh.com",
        b"sk-ssh-ed25519@openssh.com",
    }
)
#: Seconds a connection dropped for a malformed packet may take to read our disconnect.
DROP_TIMEOUT = 5.0


class MalformedPacket(ValueError):
    """A packet that does not parse as what its message type says."""


#: What conch's parsers raise on packets that do not parse (found by fuzzing: ``getNS`` on a
#: short packet raises ``struct.error``, ``Key.fromString`` on a hostile blob any of these,
#: an unknown channel number a ``KeyError``). Caught per packet in
#: ``ShellTransport.dispatchMessage``: one log line, never a traceback.
MALFORMED = (
    MalformedPacket,
    struct.error,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    AssertionError,
    BadKeyError,
)


class PeerLogLimit:
    """A :class:`~shellserver.ops.throttle.LogLimit` per address, for at most ``most`` addresses
    (the first seen forgotten first), so a flood of addresses holds bounded memory."""

    def __init__(self, every: float = 60.0, most: int = 10_000) -> None:
        self.every = every
        self.most = most
        self._limits: dict[str, LogLimit] = {}

    def due(self, peer: str, now: float) -> int:
        """Count one occurrence from ``peer``; the number to report now, or 0."""
        limit = self._limits.get(peer)
        if limit is None:
            if len(self._limits) >= self.most:
                del self._limits[next(iter(self._limits))]
            limit = self._limits[peer] = LogLimit(self.every)
        return limit.due(now)


def key_problem(blob: bytes) -> str | None:
    """Why a key blob from a client cannot be used: ``"unsupported"`` for a type conch does
    not know (refused like an unlisted key), another text for a blob that does not parse
    (a malformed packet), None for a good key."""
    try:
        kind, _ = _string(blob)
    except ValueError:
        return "malformed key blob"
    if kind not in KEY_BLOB_TYPES:
        return "unsupported"
    try:
        Key.fromString(blob, type="blob")
    except Exception:  # conch's parsers raise assorted errors on hostile blobs
        return f"malformed {kind.decode()} key blob"
    return None


#: Attaches an authenticated session channel to a session (``session.session_starter``),
#: called once per channel on ``shell`` or ``exec``.
SessionStart = Callable[[Channel, Account, Request], None]
#: Attaches an authenticated session channel to the ``sftp`` subsystem (``sftp.sftp_starter``).
SubsystemStart = Callable[[Any, Account], None]
#: What ``scp -O`` (the legacy protocol: an exec of ``scp -t`` or ``scp -f``) is told.
LEGACY_SCP = "scp: legacy protocol not supported; use scp without -O\n"


# -- the session channel ------------------------------------------------------------------


class SessionChannel(SSHChannel):
    """One ``session`` channel: records pty/env/window requests, then starts shell or exec."""

    _log = _conch_log

    name = b"session"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.request = Request()
        self.started = False
        #: The session's wire once a shell or command has started (``session.py``), or the
        #: SFTP link (``sftp.py``).
        self.wire: ChannelSide | None = None
        #: Set by the SFTP link: it gives the window back itself, as it takes requests.
        self.manual_window = False

    @property
    def user(self) -> ShellAvatar:
        """The channel's avatar, typed: conch stores it untyped, and the channel needs its account
        and ``start``."""
        avatar: Any = self.avatar
        return avatar  # type: ignore[no-any-return]

    def requestReceived(self, requestType: bytes, data: bytes) -> int:
        """A malformed request is refused, never an error in the log."""
        try:
            answer: int = super().requestReceived(requestType, data)
        except (ValueError, IndexError, struct.error):
            return 0
        return answer

    def request_pty_req(self, data: bytes) -> int:
        """A pty means character mode; its terminal type and size are kept for the session. After
        the shell has started a pty request is refused: the mode is fixed by then."""
        term, rest = _string(data)
        if self.started:
            return 0
        self.request.pty = True
        self.request.term = _term(term)
        self.request.cols, self.request.rows = _parse_size(rest)
        return 1

    def request_window_change(self, data: bytes) -> int:
        """The client's window was resized: the size is kept and, once a session runs, its terminal
        lays out again to it (clamped there, as NAWS is for telnet)."""
        cols, rows = _parse_size(data)
        self.request.cols, self.request.rows = cols, rows
        if self.wire is not None:
            self._into_session(self.wire.resize, cols, rows)
        return 1

    def request_env(self, data: bytes) -> int:
        """Only TERM is taken (as OpenSSH's AcceptEnv would be configured for it)."""
        name, rest = _string(data)
        value, _ = _string(rest)
        if name != b"TERM" or self.started:
            return 0
        self.request.term = _term(value)
        return 1

    def request_shell(self, data: bytes) -> int:
        """``ssh host``: an interactive session (character mode with a pty, line mode without).
        Only the first shell or exec request of a channel starts anything."""
        return self._start(None)

    def request_exec(self, data: bytes) -> int:
        """``ssh host CMD``: one command, no prompt, then its exit status. The command line is
        bounded so a client cannot make us hold megabytes before the shell's own limit applies."""
        command, _ = _string(data)
        if len(command) > MAX_COMMAND:
            return 0
        if command.split(b" ", 1)[0] == b"scp" and not self.started:
            self.started = True
            conn: Any = self.conn
            conn.transport.factory.clock.callLater(0, self._refuse_legacy_scp)  # after the answer
            return 1
        return self._start(command.decode("utf-8", "replace"))

    def _refuse_legacy_scp(self) -> None:
        """``scp -O``: the message on stderr and exit status 1; OpenSSH's ``scp`` without ``-O``
        uses the ``sftp`` subsystem instead."""
        if self.localClosed:
            return
        self.writeExtended(connection.EXTENDED_DATA_STDERR, LEGACY_SCP.encode())
        self.exit(1)

    def request_subsystem(self, data: bytes) -> int:
        """``sftp`` (OpenSSH's ``sftp``, ``scp``, ``sshfs``) on the user's sandboxed home, when
        the server offers it; every other subsystem is refused."""
        name, _ = _string(data)
        start = self.user.sftp
        if name != b"sftp" or start is None or self.started:
            return 0
        self.started = True
        start(self, self.user.account)
        return 1

    # x11-req and auth-agent-req have no handler: conch answers failure.

    def _start(self, command: str | None) -> int:
        if self.started:
            return 0
        self.started = True
        self.request.command = command
        self.user.start(self, self.user.account, self.request)
        return 1

    def dataReceived(self, data: bytes) -> None:
        """Client input goes to the wire, guarded so a bug there is logged and drops the connection
        rather than being taken for a malformed packet."""
        if self.wire is not None:
            self._into_session(self.wire.data_received, data)

    def eofReceived(self) -> None:
        """The client closed its input (``ssh host CMD < file`` at end): the session sees end of
        input, as a command reading stdin would."""
        if self.wire is not None:
            self._into_session(self.wire.eof_received)

    def _into_session(self, call: Callable[..., None], *args: Any) -> None:
        """Hand the client's input to the session. An exception from there is our bug, not
        a malformed packet (``ShellTransport.dispatchMessage`` would log it as one): it is
        logged with its traceback and the connection dropped."""
        try:
            call(*args)
        except Exception:
            log.failure("SSH session failed on its input")
            if self.wire is not None:
                self.wire.abort()

    # -- output: never more than the window, never conch's ``buf += data`` -----------------
    #
    # conch's ``SSHChannel.write`` keeps what the client's window does not take in
    # ``self.buf`` and appends every later write to it (``buf += data``: quadratic), and it
    # writes everything else straight into the transport whatever the socket does: a
    # client advertising a 4 GiB window that never reads had the server queue hundreds of
    # megabytes. Here a write sends at most what the window allows, keeps the rest of
    # that one write (``_pending``, at most one write: the wire's ``Output`` stops writing
    # the moment we pause it) and the channel counts as paused while anything is pending,
    # the window is empty, or the whole connection is blocked (``ShellTransport.blocked``:
    # its socket is full or a key exchange holds packets back). The wire's ``Output`` then
    # holds and caps the output, and its stall timer runs, as for a telnet client.

    _pending: deque[memoryview] | None = None
    _paused = False

    def write(self, data: bytes) -> None:
        """Send at most what the client's window allows and hold only the rest of this one write;
        the wire is paused meanwhile, so output waits (capped) in :class:`Output` rather than
        growing conch's buffer without bound."""
        if not data:
            return
        size = len(data)
        if self._pending or self._connection_blocked():
            self._hold(memoryview(data))
        elif size <= self.remoteWindowLeft and size <= (self.remoteMaxPacket or 32768):
            conn: Any = self.conn  # the usual case (a line, a message): one packet, no copy
            conn.sendData(self, data)
            self.remoteWindowLeft -= size
            if self.remoteWindowLeft > 0 and not self._paused:
                return
        else:
            rest = self._send(memoryview(data))
            if rest:
                self._hold(rest)
        self._flow()

    def writeSequence(self, data: Iterable[bytes]) -> None:
        """One join, then :meth:`write`, so a message block is one window check and usually one
        packet."""
        self.write(b"".join(data))

    def _send(self, data: memoryview) -> memoryview | None:
        """Send what the window takes, in packets, until the connection blocks; the rest
        (a view: nothing copied) or None."""
        end = min(len(data), self.remoteWindowLeft)
        conn: Any = self.conn
        send, packet = conn.sendData, self.remoteMaxPacket or 32768
        sent = 0
        while sent < end:
            size = min(packet, end - sent)
            send(self, bytes(data[sent : sent + size]))
            sent += size
            if self._connection_blocked():
                break
        self.remoteWindowLeft -= sent
        return data[sent:] if sent < len(data) else None

    @property
    def pending_bytes(self) -> int:
        """The rest of a write the window did not take (at most one write)."""
        return sum(map(len, self._pending)) if self._pending else 0

    def _hold(self, data: memoryview) -> None:
        if self._pending is None:
            self._pending = deque()
        self._pending.append(data)

    def _connection_blocked(self) -> bool:
        transport = getattr(self.conn, "transport", None)
        return bool(getattr(transport, "blocked", False))

    _flushing = False

    def flush(self) -> None:
        """Send what is pending as far as the window and the connection allow."""
        if self._flushing:  # a send that blocked the connection calls back in here
            return
        self._flushing = True
        try:
            pending = self._pending
            while pending and self.remoteWindowLeft > 0 and not self._connection_blocked():
                rest = self._send(pending.popleft())
                if rest:
                    pending.appendleft(rest)
        finally:
            self._flushing = False
        if not self._pending:
            self._pending = None
            if self.closing:
                conn: Any = self.conn
                conn.sendClose(self)

    def _flow(self) -> None:
        """Pause or resume the wire's output as the window, the pending rest and the
        connection say."""
        if self.wire is None:
            return  # the wire's Output starts unpaused and its first write brings it in line
        paused = bool(self._pending) or self.remoteWindowLeft <= 0 or self._connection_blocked()
        if paused == self._paused:
            return
        self._paused = paused
        if paused:
            self.wire.pause()
        else:
            self.wire.resume()

    def addWindowBytes(self, data: int) -> None:
        """conch's window adjust: the client read some output, so pending bytes go out and the wire
        may resume. Overridden because conch's version would flush its own buffer, unused here."""
        self.remoteWindowLeft += data
        self.flow_changed()

    def flow_changed(self) -> None:
        """The window grew, or the connection was blocked or freed (``ShellTransport``)."""
        self.flush()
        self._flow()

    def loseConnection(self) -> None:
        """Close once what is pending has gone (``flush`` sends the close then)."""
        self.closing = 1
        if not self._pending:
            conn: Any = self.conn
            conn.sendClose(self)

    def closed(self) -> None:
        """conch's last call for the channel (both sides closed, or the connection went): the
        session ends now (once), and the avatar forgets the channel so it no longer counts towards
        :data:`MAX_CHANNELS`."""
        if self.wire is not None:
            self.wire.connection_lost()
        self._pending = None
        user = getattr(self, "avatar", None)
        if isinstance(user, ShellAvatar):
            user.channels.discard(self)

    def exit(self, status: int) -> None:
        """End the channel with an exit status, as ``ssh host CMD`` reports it."""
        conn: Any = self.conn
        conn.sendRequest(self, b"exit-status", status.to_bytes(4, "big"))
        self.loseConnection()


def _string(data: bytes) -> tuple[bytes, bytes]:
    """An SSH string and the rest; ``ValueError`` if it runs past the data (conch's does not)."""
    if len(data) < 4:
        raise ValueError("short string")
    (length,) = struct.unpack(">L", data[:4])
    if len(data) < 4 + length:
        raise ValueError("string runs past the packet")
    return data[4 : 4 + length], data[4 + length :]


def _term(raw: bytes) -> str:
    text = raw.decode("ascii", "replace")[:MAX_TERM]
    return "".join(c for c in text if c.isalnum() or c in "-_.+") or "dumb"


def _parse_size(data: bytes) -> tuple[int, int]:
    """Columns and rows from a pty-req/window-change; 0 (unknown) means the default."""
    if len(data) < 8:
        raise ValueError("short window size")
    cols, rows = struct.unpack(">II", data[:8])
    return (min(cols, MAX_DIMENSION) or 80), (min(rows, MAX_DIMENSION) or 24)


# -- the avatar and the realm ------------------------------------------------------------


class ShellAvatar(ConchUser):
    """An authenticated account over SSH: sessions only."""

    def __init__(
        self, account: Account, start: SessionStart, sftp: SubsystemStart | None = None
    ) -> None:
        super().__init__()
        self.account = account
        self.start = start
        #: Starts the ``sftp`` subsystem on a channel; None: refused.
        self.sftp = sftp
        self.channelLookup[b"session"] = SessionChannel
        #: Channels opened on this connection and not yet closed.
        self.channels: set[SessionChannel] = set()

    def refusal(self, channelType: bytes) -> tuple[int, bytes] | None:
        """Why a channel of this type may not be opened now (code, text), or None."""
        if channelType in REFUSED_CHANNELS:
            log.info(
                "SSH {user}: {kind} channel refused",
                user=self.account.name,
                kind=channelType.decode("ascii", "replace"),
            )
            return connection.OPEN_ADMINISTRATIVELY_PROHIBITED, b"forwarding is disabled"
        if channelType != b"session":
            return connection.OPEN_UNKNOWN_CHANNEL_TYPE, b"unknown channel type"
        if len(self.channels) >= MAX_CHANNELS:
            return connection.OPEN_RESOURCE_SHORTAGE, b"too many sessions"
        return None

    def lookupChannel(
        self, channelType: bytes, windowSize: int, maxPacket: int, data: bytes
    ) -> SSHChannel:
        """Only session channels, at most :data:`MAX_CHANNELS` per connection; each is tracked so
        the avatar's logout can end the sessions it still holds."""
        refused = self.refusal(channelType)
        if refused is not None:
            raise ConchError(refused[1].decode(), refused[0])
        channel: SSHChannel = super().lookupChannel(channelType, windowSize, maxPacket, data)
        assert isinstance(channel, SessionChannel)
        self.channels.add(channel)  # until its ``closed`` (no closure on it: no cycle)
        return channel

    def gotGlobalRequest(self, requestType: bytes, data: bytes) -> int:
        """``tcpip-forward`` (``ssh -R``) and every other global request: refused."""
        return 0

    def logout(self) -> None:
        """The SSH connection is gone: end every session it still holds (once each)."""
        for channel in list(self.channels):
            if channel.wire is not None:
                channel.wire.connection_lost()
        self.channels.clear()


def ShellRealm(
    store: Accounts,
    start: SessionStart,
    checked: dict[str, Account] | None = None,
    sftp: SubsystemStart | None = None,
) -> AccountRealm:
    """``auth.AccountRealm`` serving conch avatars: locked or deleted accounts get none, and
    the avatar's logout ends the sessions of the connection."""

    def avatar(account: Account) -> tuple[object, Callable[[], None]]:
        made = ShellAvatar(account, start, sftp)
        return made, made.logout

    return AccountRealm(store, checked, {IConchUser: avatar})


@implementer(ICredentialsChecker)
class PasswordChecker:
    """The store's password checker, with a locked account one more failed login."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, checker: ICredentialsChecker) -> None:
        self.checker = checker

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        """The store's check, with a locked account turned into an ordinary failed login so it is
        counted and delayed like a wrong password and says nothing about the account."""
        d: Deferred[Any] = self.checker.requestAvatarId(credentials)
        d.addErrback(_locked_is_unauthorized)
        return d


def _locked_is_unauthorized(failure: Failure) -> Failure:
    if failure.check(AccountLocked):
        return Failure(UnauthorizedLogin("account locked"))
    return failure


# -- transport, services, factory --------------------------------------------------------------


class Connection(connection.SSHConnection):
    """Refuses unwanted channels itself: conch would log a traceback for each refusal."""

    _log = _conch_log

    def ssh_CHANNEL_DATA(self, packet: bytes) -> None:
        """More than the window or a packet allows is a malformed packet (conch logs an error
        line for each and goes on reading)."""
        self._check_size(packet[:4], packet[4:8])
        (local,) = struct.unpack(">L", packet[:4])
        channel = self.channels[local]
        if getattr(channel, "manual_window", False):  # SFTP: the window comes back as it reads
            data, _ = _string(packet[4:])
            channel.localWindowLeft -= len(data)
            channel.dataReceived(data)
            return
        super().ssh_CHANNEL_DATA(packet)

    def ssh_CHANNEL_EXTENDED_DATA(self, packet: bytes) -> None:
        """The same window and packet size check as :meth:`ssh_CHANNEL_DATA`: extended data counts
        against the same window."""
        self._check_size(packet[:4], packet[8:12])
        super().ssh_CHANNEL_EXTENDED_DATA(packet)

    def _check_size(self, number: bytes, length: bytes) -> None:
        (local,) = struct.unpack(">L", number)
        (size,) = struct.unpack(">L", length)
        channel = self.channels[local]
        if size > channel.localWindowLeft or size > channel.localMaxPacket:
            raise MalformedPacket("channel data past the window")

    def ssh_CHANNEL_OPEN(self, packet: bytes) -> None:
        """Refusals (forwarding, unknown types, too many sessions) answered here with an open
        failure: conch would raise and log a traceback for each, and a malformed open is a protocol
        error, not an exception."""
        avatar = getattr(self.transport, "avatar", None)
        try:
            kind, rest = _string(packet)
            (sender,) = struct.unpack(">L", rest[:4])
        except (ValueError, struct.error):
            self.transport.sendDisconnect(  # type: ignore[union-attr]
                transport.DISCONNECT_PROTOCOL_ERROR, b"malformed channel open"
            )
            return
        refused = avatar.refusal(kind) if isinstance(avatar, ShellAvatar) else None
        if refused is not None:
            code, text = refused
            self.transport.sendPacket(  # type: ignore[union-attr]
                connection.MSG_CHANNEL_OPEN_FAILURE,
                struct.pack(">2L", sender, code) + common.NS(text) + common.NS(b""),
            )
            return
        super().ssh_CHANNEL_OPEN(packet)


@frozen
class HalfDone:
    """A right password whose account has a second factor: the portal's result (and the
    avatar in it) held until the code is right, let go otherwise."""

    user: bytes
    name: str
    result: tuple[Any, Any, Callable[[], None]]

    def logout(self) -> None:
        """The login will not complete: the avatar's logout, as conch would call it."""
        self.result[2]()


class UserAuth(userauth.SSHUserAuthServer):
    """Password failures pause and count toward the per-address lockout, as telnet's do.

    A blocked address is refused every method while the block lasts. Offered
    keys that are not listed are not counted (clients try every key they hold).
    """

    attemptsBeforeDisconnect = MAX_AUTH_TRIES
    _log = _conch_log

    def serviceStarted(self) -> None:
        """Per-connection counters (failed passwords for the delays, unsigned key queries for their
        cap) start when the auth service does, with the factory's clock so tests can use a fake
        one."""
        factory: ShellSSHFactory = self.transport.factory  # type: ignore[union-attr]
        self.clock = factory.clock
        self.password_failures = 0
        self.key_queries = 0
        #: A right password of an account with a second factor, waiting for its code.
        self.half: HalfDone | None = None
        #: The client's answer to our code prompt, while we wait for it.
        self.answer: Deferred[bytes] | None = None
        super().serviceStarted()

    def serviceStopped(self) -> None:
        """The connection went during a login: a code prompt still waiting is abandoned and
        the avatar of a half-done login let go."""
        self._abandon()
        super().serviceStopped()

    def _abandon(self) -> None:
        """Forget a half-done login (its avatar let go) and a code prompt waiting for its
        answer (answered silently: the client moved on, or left)."""
        half, self.half = self.half, None
        if half is not None:
            half.logout()
        answer, self.answer = self.answer, None
        if answer is not None:
            answer.errback(IgnoreAuthentication())

    def _shell_transport(self) -> ShellTransport:
        wire: Any = self.transport
        return wire  # type: ignore[no-any-return]

    def tryAuth(self, kind: bytes, user: bytes, data: bytes) -> Deferred[Any]:
        """An address blocked after failed logins is refused every method (but ``none``, which
        clients send first to list methods) without checking anything, as telnet's login."""
        t = self._shell_transport()
        failed = t.factory.failed_logins
        if kind != b"none" and failed.blocked(t.peer, self.clock.seconds()):
            log.info("SSH login refused: {peer} is blocked after failed logins", peer=t.peer)
            return fail(UnauthorizedLogin("address blocked"))
        if self.answer is not None or (self.half is not None and kind != b"keyboard-interactive"):
            self._abandon()  # another request: the code prompt and the half-done login lapse
        if kind == b"keyboard-interactive":
            return self.auth_keyboard_interactive(user)
        d: Deferred[Any] = super().tryAuth(kind, user, data)
        return d

    def auth_password(self, packet: bytes) -> Deferred[Any]:
        """A password login through the portal, counted, paced and delayed like telnet's, so SSH is
        no faster way to guess; a malformed request is a failure, not an exception."""
        try:
            password, _ = _string(packet[1:])
            user: bytes = self.user or b""
        except ValueError:
            return fail(UnauthorizedLogin("malformed password request"))
        creds = UsernamePassword(user, password)
        return Deferred.fromCoroutine(
            self._counted(user, lambda: Deferred.fromCoroutine(self._password(user, creds)))
        )

    async def _password(self, user: bytes, creds: UsernamePassword) -> Any:
        """The password through the portal; for an account with a second factor it is only
        half the login: held, and answered with partial success naming keyboard-interactive,
        the method the code is then asked through (OpenSSH's ``AuthenticationMethods
        password,keyboard-interactive``)."""
        result = await self.portal.login(creds, None, IConchUser)
        otp = self._shell_transport().factory.otp
        avatar = result[1]
        if isinstance(avatar, ShellAvatar) and await otp.enabled(avatar.account.name):
            self.half = HalfDone(user, avatar.account.name, result)
            raise NotEnoughAuthentication()
        return result

    def _ebMaybeBadAuth(self, reason: Failure) -> None:
        """Partial success: the password was right and a code must follow, so the only method
        named is keyboard-interactive."""
        reason.trap(NotEnoughAuthentication)
        t = self._shell_transport()
        t.sendPacket(userauth.MSG_USERAUTH_FAILURE, common.NS(b"keyboard-interactive") + b"\xff")

    def auth_keyboard_interactive(self, user: bytes) -> Deferred[Any]:
        """The verification code, asked once the password was right (the only use of
        keyboard-interactive here: without a right password first it fails at once)."""
        half = self.half
        if half is None or half.user != user:
            return fail(UnauthorizedLogin("keyboard-interactive without a password first"))
        self.half = None
        return Deferred.fromCoroutine(self._code(half))

    async def _code(self, half: HalfDone) -> Any:
        answer: Deferred[bytes] = Deferred()
        self.answer = answer
        prompt = common.NS(CODE_PROMPT.encode()) + b"\x00"  # echo off
        self._shell_transport().sendPacket(
            userauth.MSG_USERAUTH_INFO_REQUEST,
            common.NS(b"") + common.NS(b"") + common.NS(b"") + struct.pack(">L", 1) + prompt,
        )
        try:
            typed = await answer
        except BaseException:
            half.logout()
            raise
        return await self._counted(
            half.user, lambda: Deferred.fromCoroutine(self._check_code(half, typed))
        )

    async def _check_code(self, half: HalfDone, typed: bytes) -> Any:
        otp = self._shell_transport().factory.otp
        code = typed.decode("utf-8", "replace")
        verdict = await otp.verify(half.name, code, self.clock.seconds())
        if verdict.accepted or verdict is Verdict.NOT_ENABLED:
            if verdict is Verdict.RECOVERY:
                log.info("{user} used a recovery code", event="otp_recovery_used", user=half.name)
            return half.result
        half.logout()
        raise UnauthorizedLogin(f"verification code {verdict.value}")

    def ssh_USERAUTH_INFO_RESPONSE(self, packet: bytes) -> None:
        """The client's answer to the code prompt: one string (a client answering another
        number of prompts gives a wrong code). Unasked for, it is ignored."""
        answer, self.answer = self.answer, None
        if answer is None:
            return
        try:
            (count,) = struct.unpack(">L", packet[:4])
            typed, _ = _string(packet[4:])
        except (ValueError, struct.error):
            count, typed = 0, b""
        answer.callback(typed if count == 1 else b"")

    def auth_publickey(self, packet: bytes) -> Deferred[Any]:
        """A signed key that fails counts as a failed login; a query (no signature) does not,
        but a connection gets :data:`MAX_KEY_QUERIES` of them. The blob is parsed here first:
        conch would raise from its parser (a traceback) or log an error per bad blob."""
        try:
            signed = packet[0]
            _, rest = _string(packet[1:])
            blob, _ = _string(rest)
        except (IndexError, ValueError):
            raise MalformedPacket("short publickey request") from None
        problem = key_problem(blob)
        if problem == "unsupported":
            return fail(UnauthorizedLogin("unsupported key type"))
        if problem is not None:
            raise MalformedPacket(problem)
        if not signed:
            self.key_queries += 1
            if self.key_queries > MAX_KEY_QUERIES:
                t = self._shell_transport()
                log.info(
                    "SSH connection from {peer} closed after {n} public key queries",
                    peer=t.peer,
                    n=MAX_KEY_QUERIES,
                )
                t.drop(
                    transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE,
                    b"too many public key queries",
                )
                return fail(IgnoreAuthentication())
            d: Deferred[Any] = super().auth_publickey(packet)
            return d
        user: bytes = self.user or b""
        d = Deferred.fromCoroutine(
            self._counted(user, lambda: super(UserAuth, self).auth_publickey(packet))
        )
        return d.addCallback(self._key_used, blob)

    def _key_used(self, result: Any, blob: bytes) -> Any:
        """The key a login succeeded with is remembered on the connection (its fingerprint),
        so its sessions can be checked against, and ended by, a ban of that key."""
        self._shell_transport().key_fingerprint = fingerprint(Key.fromString(blob, type="blob"))
        return result

    async def _counted(self, user: bytes, check: Callable[[], Deferred[Any]]) -> Any:
        """telnet's rule: a check slot per address, the answer timed from the arrival; a
        password (never a key) waits for its account's turn when the account is paced."""
        t = self._shell_transport()
        failed, metrics = t.factory.failed_logins, t.factory.metrics
        pacing = t.factory.account_pacing
        name = user.decode("utf-8", "replace")
        method = self.method  # another request on the connection may change it meanwhile
        password = method in (b"password", b"keyboard-interactive")
        arrived = self.clock.seconds()
        if not await failed.attempt(t.peer, arrived):
            raise UnauthorizedLogin("address blocked")
        if password:
            if not await pacing.turn(name, t.peer, lambda: not t.gone):
                failed.finished(t.peer, self.clock.seconds(), failed=False)
                raise UnauthorizedLogin("connection gone")
            arrived = self.clock.seconds()
        wrong = False
        try:
            result = await check()
        except StoreUnavailable:
            # The store cannot be reached: said as telnet's login says it, and the connection
            # closes (the client prints the reason); the outage is logged by the store's check.
            t.drop(transport.DISCONNECT_SERVICE_NOT_AVAILABLE, STORE_DOWN_TEXT.strip().encode())
            raise IgnoreAuthentication() from None
        except UnauthorizedLogin as e:
            wrong = True
            metrics.login(False)
            log.info(
                "failed login for {user} from {peer}: {reason}",
                event="login_failed",
                user=careful(user.decode("utf-8", "replace")[:LOGGED_NAME]),
                peer=t.peer,
                reason=(
                    "locked"
                    if str(e) == "account locked"
                    else str(e)
                    if str(e).startswith("verification code")
                    else "incorrect"
                ),
                wire="ssh",
                method=method.decode("ascii", "replace"),
            )
            raise
        finally:
            failed.finished(t.peer, self.clock.seconds(), failed=wrong)
            if password:
                pacing.finished(name, failed=wrong)
            if wrong:
                delay = PASSWORD_DELAYS[min(self.password_failures, len(PASSWORD_DELAYS) - 1)]
                self.password_failures += 1
                wait = arrived + delay - self.clock.seconds()
                if wait > 0:
                    await deferLater(self.clock, wait)
        metrics.login(True)
        pacing.succeeded(name, t.peer)
        return result


class ShellTransport(transport.SSHServerTransport):
    """Counts itself in the pre-auth limits and ends unauthenticated after the login grace
    (shortened under pressure as telnet's); stalled until its key exchange completes.

    It is also the push producer of its TCP connection: when the socket's buffer fills
    (the client does not read, whatever window it advertised) or a key exchange holds
    packets back, the connection is :attr:`blocked`, every session channel pauses its
    wire's ``Output`` (which caps and times out what is held) and reading from the client
    pauses too, as telnet does, so its requests cannot pile up answers meanwhile.
    """

    ourVersionString = b"SSH-2.0-shellserver"
    _log = _conch_log

    factory: ShellSSHFactory
    _timer: IDelayedCall | None = None
    _drop_call: IDelayedCall | None = None
    #: Admitted: conch's transport was started.
    _admitted = False
    #: Holding an admission slot (given back at once when timed out or closed for room).
    _counted = False
    _logged_in = False
    _stalled: Stalled | None = None
    #: The connection is lost (a password waiting for its account's turn is then dropped).
    gone = False
    #: The fingerprint of the key the login succeeded with ("" for a password).
    key_fingerprint = ""
    _tcp_paused = False
    _dropped = False

    def connectionMade(self) -> None:
        """Admission first: a connection over the pre-auth limits gets one line and is closed
        before any key exchange (the cheap refusal). An admitted one registers as its TCP
        connection's push producer, so a client that stops reading pauses us, and gets its login
        grace timer."""
        f = self.factory
        wire: Any = self.transport
        self.peer = getattr(wire.getPeer(), "host", "?")
        now = f.clock.seconds()
        refusal = f.admission.admit(self.peer, now)
        if refusal is not None:
            count = f.admission.refusals_to_log(f.clock.seconds())
            if count:
                log.warn(
                    "refused {count} connection(s) over the limits; latest from {peer}: {why}",
                    count=count,
                    peer=self.peer,
                    why=refusal,
                )
            wire.write(refusal.encode() + b"\r\n")
            wire.loseConnection()
            return
        self._admitted = self._counted = True
        tune(wire)  # the pause comes at a known point, and no Nagle delay (output.py)
        wire.registerProducer(self, True)
        self._stalled = f.admission.stalled(self.peer, now, self._make_room)
        grace = f.admission.login_grace(f.login_timeout)
        self._timer = f.clock.callLater(grace, self._timed_out)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        """Nothing is parsed for a refused connection or one being dropped, so a client cannot keep
        our CPU busy after we have said no."""
        if self._admitted and not self._dropped:
            super().dataReceived(data)

    def _newKeys(self) -> None:
        """The key exchange is complete: progress, no longer among the stalled."""
        super()._newKeys()
        self._progressed()
        self._flow_changed()

    def _progressed(self) -> None:
        self.factory.admission.progressed(self._stalled)
        self._stalled = None

    def _give_back(self) -> None:
        """The admission slot is free now, not only when the close completes."""
        self._progressed()
        if self._counted:
            self._counted = False
            self.factory.admission.gone(self.peer, self._logged_in)

    # -- flow control: the socket and key exchanges -------------------------------------

    @property
    def blocked(self) -> bool:
        """Channel data would only queue in memory now: the socket is full, or a key
        exchange holds every other packet back (conch's ``_blockedByKeyExchange``)."""
        return self._tcp_paused or self._keyExchangeState != self._KEY_EXCHANGE_NONE

    def pauseProducing(self) -> None:
        """The TCP transport's buffer is full: the client is not reading."""
        if not self._tcp_paused:
            self._tcp_paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]
            self._flow_changed()

    def resumeProducing(self) -> None:
        """The client reads again: resume reading it (unless the connection is closing) and let the
        channels flush and resume their wires."""
        if self._tcp_paused:
            self._tcp_paused = False
            wire: Any = self.transport
            if wire.connected and not wire.disconnecting:
                wire.resumeProducing()
            self._flow_changed()

    def stopProducing(self) -> None:
        """Nothing to do: ``connectionLost`` follows and does the cleanup."""
        pass  # connectionLost follows

    def sendKexInit(self) -> None:
        """A key exchange (ours or a rekey) holds channel data back: the channels pause their wires
        until ``_newKeys`` frees them, so output waits capped in :class:`Output`."""
        super().sendKexInit()
        self._flow_changed()

    def _flow_changed(self) -> None:
        channels = getattr(self.service, "channels", None)
        if channels:
            for channel in list(channels.values()):
                if isinstance(channel, SessionChannel):
                    channel.flow_changed()

    # -- malformed packets: one line, rate limited, and the connection dropped ----------

    def receiveUnimplemented(self, seqnum: int) -> None:
        """conch logs a warning for each; a client could send them without end."""

    def dispatchMessage(self, messageNum: int, payload: bytes) -> None:
        """Each packet goes to conch, but a parse error from a hostile packet becomes one
        rate-limited log line and a dropped connection instead of a traceback; packets after a
        drop are ignored."""
        if self._dropped:
            return
        try:
            super().dispatchMessage(messageNum, payload)
        except MALFORMED as e:
            self.malformed(messageNum, e)

    def malformed(self, kind: int, error: BaseException) -> None:
        """A packet conch could not parse: a log line (rate limited per address) and the
        connection dropped, instead of a traceback per packet."""
        count = self.factory.malformed_log.due(self.peer, self.factory.clock.seconds())
        if count:
            log.warn(
                "SSH malformed packet from {peer} (message {kind}: {error}), connection dropped"
                "{more}",
                event="ssh_malformed",
                peer=self.peer,
                kind=kind,
                error=careful(str(error) or type(error).__name__)[:200],
                more=f"; {count} from this address since the last line" if count > 1 else "",
            )
        self.drop(transport.DISCONNECT_PROTOCOL_ERROR, b"malformed packet")

    def drop(self, code: int, text: bytes) -> None:
        """Disconnect, looking at nothing more the client sent."""
        self._dropped = True
        self.buf = b""  # the packets after it in this read are not looked at
        self.sendDisconnect(code, text)
        # A client that does not read would keep its disconnect in our buffer forever.
        if self._drop_call is None:
            self._drop_call = self.factory.clock.callLater(DROP_TIMEOUT, self._abort)

    def _abort(self) -> None:
        self._drop_call = None
        wire: Any = self.transport
        if wire is not None and getattr(wire, "connected", False):
            wire.abortConnection()

    def _timed_out(self) -> None:
        self._timer = None
        if self._counted:
            self.factory.admission.timed_out(self.peer, self.factory.clock.seconds())
        self._give_back()
        self.sendDisconnect(transport.DISCONNECT_PROTOCOL_ERROR, b"login timed out")

    def _make_room(self) -> None:
        """Admission closes this stalled connection for a newcomer (and took its slot back)."""
        self._stalled = None
        self._counted = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.sendDisconnect(transport.DISCONNECT_TOO_MANY_CONNECTIONS, MADE_ROOM.encode())

    def setService(self, service: Any) -> None:
        """The switch to ``ssh-connection`` marks a successful login: it is logged, the login timer
        stops and admission counts the connection as logged in. An authentication that finished
        after the connection was lost starts nothing and lets the avatar go."""
        if self.gone:
            # An authentication answered after the connection was lost (a password checked
            # on the hashing pool meanwhile): start nothing, and let the avatar go.
            logout = self.__dict__.pop("logoutFunction", None)
            self.__dict__.pop("avatar", None)
            if logout is not None:
                logout()
            return
        if service.name == b"ssh-connection" and not self._logged_in:
            self._logged_in = True
            avatar = getattr(self, "avatar", None)
            log.info(
                "SSH {user} authenticated from {peer} ({method})",
                user=avatar.account.name if isinstance(avatar, ShellAvatar) else "?",
                peer=self.peer,
                method=getattr(self.service, "method", b"?").decode("ascii", "replace"),
            )
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            self._progressed()
            if self._counted:
                self.factory.admission.logged_in(self.peer)
        super().setService(service)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Timers cancelled, the admission slot given back, then conch's own cleanup; the
        references between conch's objects are cut so the connection is freed by reference counting
        at once rather than kept by the collector."""
        self.gone = True
        for call in (self._timer, self._drop_call):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._drop_call = None
        self._give_back()
        if self._admitted:
            self._admitted = False
            super().connectionLost(reason)
        # conch's objects point at each other (transport and service, avatar and
        # connection): cut the ties so reference counting frees the connection now, with
        # whatever it held. Left to the collector, a connection that lived through a full
        # collection is frozen (gcpolicy.py) and kept until the hourly rescan.
        self.service = None
        self.__dict__.pop("avatar", None)
        self.__dict__.pop("logoutFunction", None)


class ShellSSHFactory(factory.SSHFactory):
    """The ``--ssh`` listener's factory.

    Its host keys are either loaded already (:class:`HostKeys`: tests, tools) or the
    data dir's key files (:class:`HostKeyFiles`), which the service loads after binding
    the listener and before the reactor runs: conch reads ``publicKeys`` and
    ``privateKeys`` at each handshake, so both are asked of the keys then.
    """

    protocol = ShellTransport
    noisy = False
    services = {  # noqa: RUF012 (conch's own class attribute)
        b"ssh-userauth": UserAuth,
        b"ssh-connection": Connection,
    }

    def __init__(
        self,
        keys: HostKeys | HostKeyFiles,
        portal: Portal,
        clock: Any,
        login_timeout: float,
        admission: Admission,
        failed_logins: FailedLogins,
        account_pacing: AccountPacing,
        metrics: Metrics,
        otp: OtpStore,
    ) -> None:
        #: The second factor's records: a password login of an account with one then asks
        #: for a code through keyboard-interactive.
        self.otp = otp
        self.failed_logins = failed_logins
        self.account_pacing = account_pacing
        self.keys = keys
        self.portal = portal
        self.clock = clock
        self.login_timeout = login_timeout
        self.admission = admission
        self.primes = None
        #: Malformed-packet log lines, at most one a minute per address.
        self.malformed_log = PeerLogLimit()
        #: Login counters (ok and failed, as telnet's are counted).
        self.metrics = metrics

    @property
    def publicKeys(self) -> dict[bytes, Key]:
        """What conch offers and signs with, asked of the keys at each handshake."""
        return self.keys.public_keys()

    @property
    def privateKeys(self) -> dict[bytes, Key]:
        """As :attr:`publicKeys`."""
        return self.keys.private_keys()

    def startFactory(self) -> None:
        """Conch's start reads the host keys here, when the port is bound; ours are read
        after every port is bound (a port in use must stop the start having created
        nothing), and a start whose keys cannot be read stops there, before the reactor
        runs. There is no moduli file (``primes`` is None), so nothing else is read."""

    def buildProtocol(self, addr: Any) -> ShellTransport:
        """No moduli file, so no group exchange (curve25519, ECDH and group14/16 remain)."""
        t = ShellTransport()
        t.factory = self
        t.supportedPublicKeys = [
            algorithm
            for key in self.privateKeys.values()
            for algorithm in key.supportedSignatureAlgorithms()
        ]
        t.supportedKeyExchanges = [
            kex for kex in t.supportedKeyExchanges if b"group-exchange" not in kex
        ]
        # No zlib: conch decompresses a packet whole, before authentication, so one 1 MiB
        # packet of a client's choosing would become up to a gigabyte here.
        t.supportedCompressions = [b"none"]
        return t


def make_factory(
    keys: HostKeys | HostKeyFiles,
    checkers: list[ICredentialsChecker],
    realm: IRealm,
    clock: Any,
    login_timeout: float,
    admission: Admission,
    failed_logins: FailedLogins,
    account_pacing: AccountPacing,
    metrics: Metrics,
    otp: OtpStore,
) -> ShellSSHFactory:
    """The ``--ssh`` factory from its parts, with a portal over the given checkers and realm, so
    the assembly need not know conch's cred plumbing."""
    portal = Portal(realm, checkers)
    return ShellSSHFactory(
        keys, portal, clock, login_timeout, admission, failed_logins, account_pacing, metrics, otp
    )
