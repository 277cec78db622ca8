"""The conch server side: transport with the pre-auth limits, authentication, refusals.

What happens once a user is authenticated and asks for a shell or a command
is handed to ``start`` (a :class:`SessionStart`): ``session.py`` makes the
channel a wire and enters the shared session start (``sessionstart.py``).
Everything SSH can do besides a session (port, agent and X11 forwarding,
subsystems such as sftp) is refused.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, cast

from twisted.conch.avatar import ConchUser
from twisted.conch.error import ConchError
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import common, connection, factory, transport, userauth
from twisted.conch.ssh.channel import SSHChannel
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

from shellserver.accounts import Account, AccountLocked
from shellserver.admission import MADE_ROOM, Admission, Stalled
from shellserver.auth import AccountRealm, Accounts
from shellserver.login import LOGGED_NAME
from shellserver.metrics import Metrics
from shellserver.output import cap_send_buffer
from shellserver.pacing import AccountPacing
from shellserver.sanitize import careful
from shellserver.throttle import FailedLogins
from shellserver.wires.ssh.hostkeys import HostKeys
from shellserver.wires.ssh.session import Channel, Request, SSHWire

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


#: Attaches an authenticated session channel to a session (``session.session_starter``),
#: called once per channel on ``shell`` or ``exec``.
SessionStart = Callable[[Channel, Account, Request], None]


# -- the session channel ------------------------------------------------------------------


class SessionChannel(SSHChannel):
    """One ``session`` channel: records pty/env/window requests, then starts shell or exec."""

    _log = _conch_log

    name = b"session"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.request = Request()
        self.started = False
        #: The session's wire once a shell or command has started (``session.py``).
        self.wire: SSHWire | None = None

    @property
    def user(self) -> ShellAvatar:
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
        term, rest = _string(data)
        if self.started:
            return 0
        self.request.pty = True
        self.request.term = _term(term)
        self.request.cols, self.request.rows = _parse_size(rest)
        return 1

    def request_window_change(self, data: bytes) -> int:
        cols, rows = _parse_size(data)
        self.request.cols, self.request.rows = cols, rows
        if self.wire is not None:
            self.wire.resize(cols, rows)
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
        return self._start(None)

    def request_exec(self, data: bytes) -> int:
        command, _ = _string(data)
        if len(command) > MAX_COMMAND:
            return 0
        return self._start(command.decode("utf-8", "replace"))

    # subsystem (sftp), x11-req and auth-agent-req have no handler: conch answers failure.

    def _start(self, command: str | None) -> int:
        if self.started:
            return 0
        self.started = True
        self.request.command = command
        self.user.start(self, self.user.account, self.request)
        return 1

    def dataReceived(self, data: bytes) -> None:
        if self.wire is not None:
            self.wire.data_received(data)

    def eofReceived(self) -> None:
        if self.wire is not None:
            self.wire.eof_received()

    def stopWriting(self) -> None:
        """The client's window is full: hold output as telnet does for a full socket."""
        if self.wire is not None:
            self.wire.pause()

    def startWriting(self) -> None:
        if self.wire is not None:
            self.wire.resume()

    def closed(self) -> None:
        if self.wire is not None:
            self.wire.connection_lost()

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

    def __init__(self, account: Account, start: SessionStart) -> None:
        super().__init__()
        self.account = account
        self.start = start
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
        refused = self.refusal(channelType)
        if refused is not None:
            raise ConchError(refused[1].decode(), refused[0])
        channel: SSHChannel = super().lookupChannel(channelType, windowSize, maxPacket, data)
        assert isinstance(channel, SessionChannel)
        self.channels.add(channel)
        closed = channel.closed

        def on_closed() -> None:
            self.channels.discard(channel)
            closed()

        channel.closed = on_closed  # type: ignore[method-assign]
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
    store: Accounts, start: SessionStart, checked: dict[str, Account] | None = None
) -> AccountRealm:
    """``auth.AccountRealm`` serving conch avatars: locked or deleted accounts get none, and
    the avatar's logout ends the sessions of the connection."""

    def avatar(account: Account) -> tuple[object, Callable[[], None]]:
        made = ShellAvatar(account, start)
        return made, made.logout

    return AccountRealm(store, checked, {IConchUser: avatar})


@implementer(ICredentialsChecker)
class PasswordChecker:
    """The store's password checker, with a locked account one more failed login."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, checker: ICredentialsChecker) -> None:
        self.checker = checker

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
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

    def ssh_CHANNEL_OPEN(self, packet: bytes) -> None:
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


class UserAuth(userauth.SSHUserAuthServer):
    """Password failures pause and count toward the per-address lockout, as telnet's do.

    A blocked address is refused every method while the block lasts. Offered
    keys that are not listed are not counted (clients try every key they hold).
    """

    attemptsBeforeDisconnect = MAX_AUTH_TRIES
    _log = _conch_log

    def serviceStarted(self) -> None:
        factory: ShellSSHFactory = self.transport.factory  # type: ignore[union-attr]
        self.clock = factory.clock
        self.password_failures = 0
        super().serviceStarted()

    def _shell_transport(self) -> ShellTransport:
        wire: Any = self.transport
        return wire  # type: ignore[no-any-return]

    def tryAuth(self, kind: bytes, user: bytes, data: bytes) -> Deferred[Any]:
        t = self._shell_transport()
        failed = t.factory.failed_logins
        if kind != b"none" and failed is not None and failed.blocked(t.peer, self.clock.seconds()):
            log.info("SSH login refused: {peer} is blocked after failed logins", peer=t.peer)
            return fail(UnauthorizedLogin("address blocked"))
        d: Deferred[Any] = super().tryAuth(kind, user, data)
        return d

    def auth_password(self, packet: bytes) -> Deferred[Any]:
        try:
            password, _ = _string(packet[1:])
            user: bytes = self.user or b""
        except ValueError:
            return fail(UnauthorizedLogin("malformed password request"))
        creds = UsernamePassword(user, password)
        return Deferred.fromCoroutine(
            self._counted(user, lambda: self.portal.login(creds, None, IConchUser))
        )

    def auth_publickey(self, packet: bytes) -> Deferred[Any]:
        """A signed key that fails counts as a failed login; a query (no signature) does not."""
        if packet[:1] in (b"", b"\x00"):
            d: Deferred[Any] = super().auth_publickey(packet)
            return d
        user: bytes = self.user or b""
        return Deferred.fromCoroutine(
            self._counted(user, lambda: super(UserAuth, self).auth_publickey(packet))
        )

    async def _counted(self, user: bytes, check: Callable[[], Deferred[Any]]) -> Any:
        """telnet's rule: a check slot per address, the answer timed from the arrival; a
        password (never a key) waits for its account's turn when the account is paced."""
        t = self._shell_transport()
        failed, metrics = t.factory.failed_logins, t.factory.metrics
        pacing = t.factory.account_pacing
        name = user.decode("utf-8", "replace")
        method = self.method  # another request on the connection may change it meanwhile
        password = method == b"password"
        arrived = self.clock.seconds()
        if failed is not None and not await failed.attempt(t.peer, arrived):
            raise UnauthorizedLogin("address blocked")
        if password and pacing is not None:
            if not await pacing.turn(name, t.peer, lambda: not t.gone):
                if failed is not None:
                    failed.finished(t.peer, self.clock.seconds(), failed=False)
                raise UnauthorizedLogin("connection gone")
            arrived = self.clock.seconds()
        wrong = False
        try:
            result = await check()
        except UnauthorizedLogin as e:
            wrong = True
            if metrics is not None:
                metrics.login(False)
            log.info(
                "failed login for {user} from {peer}: {reason}",
                event="login_failed",
                user=careful(user.decode("utf-8", "replace")[:LOGGED_NAME]),
                peer=t.peer,
                reason="locked" if str(e) == "account locked" else "incorrect",
                wire="ssh",
                method=method.decode("ascii", "replace"),
            )
            raise
        finally:
            if failed is not None:
                failed.finished(t.peer, self.clock.seconds(), failed=wrong)
            if password and pacing is not None:
                pacing.finished(name, failed=wrong)
            if wrong:
                delay = PASSWORD_DELAYS[min(self.password_failures, len(PASSWORD_DELAYS) - 1)]
                self.password_failures += 1
                wait = arrived + delay - self.clock.seconds()
                if wait > 0:
                    await deferLater(self.clock, wait)
        if metrics is not None:
            metrics.login(True)
        if pacing is not None:
            pacing.succeeded(name, t.peer)
        return result


class ShellTransport(transport.SSHServerTransport):
    """Counts itself in the pre-auth limits and ends unauthenticated after the login grace
    (shortened under pressure as telnet's); stalled until its key exchange completes."""

    ourVersionString = b"SSH-2.0-shellserver"
    _log = _conch_log

    factory: ShellSSHFactory
    _timer: IDelayedCall | None = None
    #: Admitted: conch's transport was started.
    _admitted = False
    #: Holding an admission slot (given back at once when timed out or closed for room).
    _counted = False
    _logged_in = False
    _stalled: Stalled | None = None
    #: The connection is lost (a password waiting for its account's turn is then dropped).
    gone = False

    def connectionMade(self) -> None:
        f = self.factory
        wire: Any = self.transport
        self.peer = getattr(wire.getPeer(), "host", "?")
        now = f.clock.seconds()
        refusal = f.admission.admit(self.peer, now) if f.admission is not None else None
        if refusal is not None:
            count = f.admission.refusals_to_log(f.clock.seconds()) if f.admission else 0
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
        cap_send_buffer(wire)  # the pause comes at a known point, as for telnet (output.py)
        grace = f.login_timeout
        if f.admission is not None:
            self._stalled = f.admission.stalled(self.peer, now, self._make_room)
            grace = f.admission.login_grace(grace)
        self._timer = f.clock.callLater(grace, self._timed_out)
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self._admitted:
            super().dataReceived(data)

    def _newKeys(self) -> None:
        """The key exchange is complete: progress, no longer among the stalled."""
        super()._newKeys()
        self._progressed()

    def _progressed(self) -> None:
        if self.factory.admission is not None:
            self.factory.admission.progressed(self._stalled)
        self._stalled = None

    def _give_back(self) -> None:
        """The admission slot is free now, not only when the close completes."""
        self._progressed()
        if self._counted:
            self._counted = False
            if self.factory.admission is not None:
                self.factory.admission.gone(self.peer, self._logged_in)

    def _timed_out(self) -> None:
        self._timer = None
        if self.factory.admission is not None and self._counted:
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
            if self.factory.admission is not None and self._counted:
                self.factory.admission.logged_in(self.peer)
        super().setService(service)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.gone = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._give_back()
        if self._admitted:
            self._admitted = False
            super().connectionLost(reason)


class ShellSSHFactory(factory.SSHFactory):
    """The ``--ssh`` listener's factory."""

    protocol = ShellTransport
    noisy = False
    services = {  # noqa: RUF012 (conch's own class attribute)
        b"ssh-userauth": UserAuth,
        b"ssh-connection": Connection,
    }

    def __init__(
        self,
        keys: HostKeys,
        portal: Portal,
        clock: Any,
        login_timeout: float,
        admission: Admission | None = None,
        failed_logins: FailedLogins | None = None,
        account_pacing: AccountPacing | None = None,
    ) -> None:
        self.failed_logins = failed_logins
        self.account_pacing = account_pacing
        self.publicKeys = keys.public_keys()
        self.privateKeys = keys.private_keys()
        self.portal = portal
        self.clock = clock
        self.login_timeout = login_timeout
        self.admission = admission
        self.primes = None
        #: Login counters (SPEC §12), when the service provides them.
        self.metrics: Metrics | None = None

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
        return t


def make_factory(
    keys: HostKeys,
    checkers: list[ICredentialsChecker],
    realm: IRealm,
    clock: Any,
    login_timeout: float,
    admission: Admission | None = None,
    failed_logins: FailedLogins | None = None,
    account_pacing: AccountPacing | None = None,
) -> ShellSSHFactory:
    portal = Portal(realm, checkers)
    return ShellSSHFactory(
        keys, portal, clock, login_timeout, admission, failed_logins, account_pacing
    )
