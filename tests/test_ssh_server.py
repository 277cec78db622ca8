"""The conch server side, reactor-free: refusals, session requests, realm, limits, timeout."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.error import ConchError
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import common, connection, transport, userauth
from twisted.conch.ssh.keys import Key
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from shellserver.ops.admission import (
    MADE_ROOM,
    MIN_STALL_AGE,
    TOO_MANY_FROM_YOU,
    TOO_MANY_UNAUTH,
    Admission,
)
from shellserver.ops.metrics import Metrics
from shellserver.ops.pacing import AccountPacing
from shellserver.ops.threads import inline_runner
from shellserver.ops.throttle import FailedLogins
from shellserver.store.accounts import ROLE_USER, Account, AccountDB, AccountStore
from shellserver.store.auth import StoreChecker
from shellserver.store.otp import OtpDB, OtpStore
from shellserver.store.passwords import hash_password
from shellserver.wires.ssh import authkeys
from shellserver.wires.ssh import server as server_module
from shellserver.wires.ssh.hostkeys import HostKeys
from shellserver.wires.ssh.server import (
    DROP_TIMEOUT,
    MAX_CHANNELS,
    MAX_KEY_QUERIES,
    Connection,
    MalformedPacket,
    PasswordChecker,
    SessionChannel,
    ShellAvatar,
    ShellRealm,
    ShellSSHFactory,
    UserAuth,
)
from shellserver.wires.ssh.session import Request

ALICE = Account("alice", ROLE_USER, False, 0.0)


def nobody() -> Portal:
    return Portal(ShellRealm(Lookup(succeed), Started()))


class Lookup:
    """Accounts for the realm, from a function."""

    def __init__(self, get: Any) -> None:
        self.get = get


class Started:
    """The session start the channel calls (in the server: the shared one, session.py)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Account, Request]] = []

    def __call__(self, channel: SessionChannel, account: Account, request: Request) -> None:
        self.calls.append((account, request))


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out
    return out[0]


# -- what an avatar refuses -------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", [b"direct-tcpip", b"forwarded-tcpip", b"x11", b"auth-agent@openssh.com"]
)
def test_forwarding_channels_are_administratively_prohibited(kind: bytes) -> None:
    avatar = ShellAvatar(ALICE, Started())
    with pytest.raises(ConchError) as e:
        avatar.lookupChannel(kind, 65536, 32768, b"")
    assert e.value.data == connection.OPEN_ADMINISTRATIVELY_PROHIBITED


def test_unknown_channels_are_unknown() -> None:
    with pytest.raises(ConchError) as e:
        ShellAvatar(ALICE, Started()).lookupChannel(b"mystery", 65536, 32768, b"")
    assert e.value.data == connection.OPEN_UNKNOWN_CHANNEL_TYPE


class Packets:
    """The transport side of an SSHConnection: records the packets it sends."""

    def __init__(self, avatar: ShellAvatar) -> None:
        self.avatar = avatar
        self.sent: list[tuple[Any, ...]] = []

    def sendPacket(self, kind: int, data: bytes) -> None:
        self.sent.append((kind, data))

    def sendDisconnect(self, code: int, text: bytes) -> None:
        self.sent.append(("disconnect", code))


def open_packet(kind: bytes, sender: int = 7) -> bytes:
    return common.NS(kind) + struct.pack(">3L", sender, 65536, 32768)


def test_the_connection_refuses_forwarding_quietly() -> None:
    avatar = ShellAvatar(ALICE, Started())
    conn = Connection()
    conn.transport = Packets(avatar)  # type: ignore[assignment]
    conn.serviceStarted()
    sent = conn.transport.sent  # type: ignore[attr-defined]
    conn.ssh_CHANNEL_OPEN(open_packet(b"direct-tcpip") + common.NS(b"10.0.0.1") + b"\0" * 4)
    assert sent.pop() == (
        connection.MSG_CHANNEL_OPEN_FAILURE,
        struct.pack(">2L", 7, connection.OPEN_ADMINISTRATIVELY_PROHIBITED)
        + common.NS(b"forwarding is disabled")
        + common.NS(b""),
    )
    conn.ssh_CHANNEL_OPEN(open_packet(b"session", 8))
    assert sent.pop()[0] == connection.MSG_CHANNEL_OPEN_CONFIRMATION
    conn.ssh_CHANNEL_OPEN(b"\x00\x00\x01\x00sess")
    assert sent.pop() == ("disconnect", 2)


def test_global_requests_such_as_remote_forwarding_are_refused() -> None:
    avatar = ShellAvatar(ALICE, Started())
    forward = common.NS(b"0.0.0.0") + struct.pack(">L", 8080)
    assert avatar.gotGlobalRequest(b"tcpip-forward", forward) == 0
    assert avatar.gotGlobalRequest(b"streamlocal-forward@openssh.com", b"") == 0


def test_session_channels_per_connection_are_capped() -> None:
    avatar = ShellAvatar(ALICE, Started())
    channels = [avatar.lookupChannel(b"session", 65536, 32768, b"") for _ in range(MAX_CHANNELS)]
    with pytest.raises(ConchError) as e:
        avatar.lookupChannel(b"session", 65536, 32768, b"")
    assert e.value.data == connection.OPEN_RESOURCE_SHORTAGE
    channels[0].closed()
    assert isinstance(avatar.lookupChannel(b"session", 65536, 32768, b""), SessionChannel)


def test_channel_data_past_the_window_is_a_malformed_packet() -> None:
    avatar = ShellAvatar(ALICE, Started())
    conn = Connection()
    conn.transport = Packets(avatar)  # type: ignore[assignment]
    conn.serviceStarted()
    conn.ssh_CHANNEL_OPEN(open_packet(b"session"))
    (local,) = conn.channels
    window = conn.channels[local].localWindowLeft
    with pytest.raises(MalformedPacket):
        conn.ssh_CHANNEL_DATA(struct.pack(">L", local) + common.NS(b"x" * (window + 1)))
    with pytest.raises(MalformedPacket):
        conn.ssh_CHANNEL_EXTENDED_DATA(struct.pack(">2L", local, 1) + common.NS(b"x" * 40_000))
    conn.ssh_CHANNEL_DATA(struct.pack(">L", local) + common.NS(b"fine"))


# -- session requests ---------------------------------------------------------------------


def channel() -> tuple[SessionChannel, Started]:
    started = Started()
    avatar = ShellAvatar(ALICE, started)
    ch = avatar.lookupChannel(b"session", 65536, 32768, b"")
    assert isinstance(ch, SessionChannel)
    return ch, started


def pty_req(term: bytes, cols: int, rows: int) -> bytes:
    return common.NS(term) + struct.pack(">4L", cols, rows, 0, 0) + common.NS(b"")


def test_pty_env_and_window_change_reach_the_request() -> None:
    ch, started = channel()
    assert ch.requestReceived(b"pty-req", pty_req(b"xterm-256color", 132, 43)) == 1
    assert ch.requestReceived(b"env", common.NS(b"TERM") + common.NS(b"screen")) == 1
    assert ch.requestReceived(b"env", common.NS(b"LD_PRELOAD") + common.NS(b"/x.so")) == 0
    assert ch.requestReceived(b"shell", b"") == 1
    assert started.calls == [(ALICE, Request(True, "screen", 132, 43, None))]
    sizes: list[tuple[int, int]] = []

    class Wire:
        def resize(self, cols: int, rows: int) -> None:
            sizes.append((cols, rows))

    ch.wire = Wire()  # type: ignore[assignment]
    assert ch.requestReceived(b"window-change", struct.pack(">4L", 100, 30, 0, 0)) == 1
    assert sizes == [(100, 30)]


def test_exec_runs_one_command_once() -> None:
    ch, started = channel()
    assert ch.requestReceived(b"exec", common.NS(b"who")) == 1
    assert ch.requestReceived(b"exec", common.NS(b"wall hi")) == 0
    assert ch.requestReceived(b"shell", b"") == 0
    assert started.calls == [(ALICE, Request(False, "dumb", 80, 24, "who"))]


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        (b"subsystem", common.NS(b"sftp")),
        (b"x11-req", b"\x00" + common.NS(b"MIT-MAGIC-COOKIE-1") + common.NS(b"00") + b"\0" * 4),
        (b"auth-agent-req@openssh.com", b""),
        (b"pty-req", b"\x00\x00"),  # malformed
        (b"window-change", b"\x00"),  # malformed
        (b"exec", b"\x00\x00\x00\xff"),  # malformed
    ],
)
def test_subsystems_agent_x11_and_malformed_requests_are_refused(kind: bytes, data: bytes) -> None:
    ch, started = channel()
    assert ch.requestReceived(kind, data) == 0
    assert started.calls == []


def test_the_sftp_subsystem_starts_once_when_the_server_offers_it() -> None:
    calls: list[tuple[object, Account]] = []
    avatar = ShellAvatar(ALICE, Started(), lambda ch, account: calls.append((ch, account)))
    ch = avatar.lookupChannel(b"session", 65536, 32768, b"")
    assert ch.requestReceived(b"subsystem", common.NS(b"netconf")) == 0
    assert ch.requestReceived(b"subsystem", common.NS(b"sftp")) == 1
    assert calls == [(ch, ALICE)]
    assert ch.requestReceived(b"subsystem", common.NS(b"sftp")) == 0
    assert ch.requestReceived(b"shell", b"") == 0


def test_a_hostile_term_and_size_are_tamed() -> None:
    ch, started = channel()
    ch.requestReceived(b"pty-req", pty_req(b"\x1b]0;owned\x07" + b"x" * 500, 0, 2**31))
    ch.requestReceived(b"shell", b"")
    request = started.calls[0][1]
    assert request.term.isascii() and len(request.term) <= 64 and "\x1b" not in request.term
    assert (request.cols, request.rows) == (80, 10_000)


# -- realm and password checker -----------------------------------------------------------


def test_realm_serves_accounts_and_refuses_locked_or_missing() -> None:
    accounts = {"alice": ALICE, "bob": Account("bob", ROLE_USER, True, 0.0)}
    realm = ShellRealm(Lookup(lambda name: succeed(accounts.get(name))), Started())
    interface, avatar, logout = result(realm.requestAvatar(b"alice", None, IConchUser))
    assert interface is IConchUser and isinstance(avatar, ShellAvatar)
    assert avatar.account == ALICE and callable(logout)
    for name in (b"bob", b"carol"):
        failure = result(realm.requestAvatar(name, None, IConchUser))
        assert isinstance(failure, Failure) and failure.check(UnauthorizedLogin)


def test_password_checker_uses_the_store_and_counts_locked_as_a_failure(tmp_path: Path) -> None:
    db = AccountDB.open(str(tmp_path / "accounts.sqlite3"))
    try:
        store = AccountStore(db, inline_runner, inline_runner, 4)
        db.create("alice", hash_password("alicepass1", 4), ROLE_USER)
        db.create("bob", hash_password("bobpass123", 4), ROLE_USER)
        db.set_locked("bob", True)
        checker = PasswordChecker(StoreChecker(store))
        assert result(checker.requestAvatarId(UsernamePassword(b"alice", b"alicepass1"))) == (
            b"alice"
        )
        for name, password in ((b"alice", b"wrong"), (b"bob", b"bobpass123"), (b"x", b"y")):
            failure = result(checker.requestAvatarId(UsernamePassword(name, password)))
            assert isinstance(failure, Failure) and failure.check(UnauthorizedLogin)
    finally:
        db.close()


# -- the transport: pre-auth limits and the login timeout ---------------------------------------


@pytest.fixture(scope="module")
def keys() -> HostKeys:
    return HostKeys((Key(ed25519.Ed25519PrivateKey.generate()),))


@pytest.fixture(scope="module")
def otp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtpStore]:
    """The second factor's records, over a store of their own: nobody here has one."""
    db = AccountDB.open(str(tmp_path_factory.mktemp("otp") / "accounts.sqlite3"))
    try:
        yield OtpStore(OtpDB(db), inline_runner, inline_runner, 4)
    finally:
        db.close()


def ssh_factory(
    keys: HostKeys,
    portal: Portal,
    clock: Clock,
    otp: OtpStore,
    admission: Admission | None = None,
    failed: FailedLogins | None = None,
    pacing: AccountPacing | None = None,
) -> ShellSSHFactory:
    """A factory with every part the service gives one: fresh real ones but those a test
    watches."""
    return ShellSSHFactory(
        keys,
        portal,
        clock,
        60,
        Admission() if admission is None else admission,
        FailedLogins() if failed is None else failed,
        AccountPacing(clock) if pacing is None else pacing,
        Metrics(),
        otp,
    )


def connect(factory: ShellSSHFactory, host: str = "192.0.2.7") -> tuple[Any, StringTransport]:
    proto = factory.buildProtocol(IPv4Address("TCP", host, 5555))
    wire = StringTransport(peerAddress=IPv4Address("TCP", host, 5555))
    proto.makeConnection(wire)
    return proto, wire


def test_pre_auth_limits_count_ssh_connections(keys: HostKeys, otp: OtpStore) -> None:
    admission = Admission(max_unauth_per_addr=1)
    factory = ssh_factory(keys, nobody(), Clock(), otp, admission)
    first, first_wire = connect(factory)
    assert first_wire.value().startswith(b"SSH-2.0-shellserver\r\n")
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        _, second_wire = connect(factory)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert second_wire.value() == TOO_MANY_FROM_YOU.encode() + b"\r\n"
    assert [(e["count"], e["peer"]) for e in seen if "count" in e] == [(1, "192.0.2.7")]
    assert second_wire.disconnecting
    other, _ = connect(factory, "198.51.100.1")
    assert admission.unauth == 2
    first.setService(connection.SSHConnection())  # authenticated
    assert (admission.unauth, admission.connections) == (1, 2)
    first.connectionLost(Failure(ConnectionError()))
    other.connectionLost(Failure(ConnectionError()))
    assert (admission.unauth, admission.connections) == (0, 0)


def test_unauthenticated_connections_end_at_the_login_timeout(
    keys: HostKeys, otp: OtpStore
) -> None:
    clock = Clock()
    factory = ssh_factory(keys, nobody(), clock, otp)
    slow, slow_wire = connect(factory)
    quick, quick_wire = connect(factory)
    quick.setService(connection.SSHConnection())
    clock.advance(59)
    assert not slow_wire.disconnecting
    clock.advance(1)
    assert slow_wire.disconnecting and b"login timed out" in slow_wire.value()
    assert not quick_wire.disconnecting
    slow.connectionLost(Failure(ConnectionError()))
    assert clock.getDelayedCalls() == []


def test_ssh_connections_without_a_key_exchange_are_closed_first_to_make_room(
    keys: HostKeys, otp: OtpStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    admission = Admission(0, 4, 0)
    admission.random = NeverDrop()  # type: ignore[assignment]
    factory = ssh_factory(keys, nobody(), clock, otp, admission)
    keyed = [connect(factory, "198.51.100.5") for _ in range(2)]  # the oldest
    # conch's own switch to the new keys stands aside: only our hook on it runs here.
    monkeypatch.setattr(transport.SSHTransportBase, "_newKeys", lambda self: None)
    for proto, _ in keyed:
        proto._newKeys()  # the key exchange completed
    banner_only = [connect(factory, f"203.0.113.{i}") for i in range(2)]  # one an address
    assert connect(factory, "192.0.2.1")[1].value() == TOO_MANY_UNAUTH.encode() + b"\r\n"
    clock.advance(MIN_STALL_AGE)
    newcomer, newcomer_wire = connect(factory, "192.0.2.1")
    assert newcomer_wire.value().startswith(b"SSH-2.0-shellserver")
    first_wire = banner_only[0][1]
    assert first_wire.disconnecting and MADE_ROOM.encode() in first_wire.value()
    assert not any(wire.disconnecting for _, wire in keyed)
    assert admission.unauth == 4 and admission.penalties.left("203.0.113.0", clock.seconds()) > 0
    banner_only[0][0].connectionLost(Failure(ConnectionError()))
    assert admission.unauth == 4  # its slot was given back when it was closed, once
    # Under pressure the login grace is short for SSH too: 10 s for one let in at a full house.
    last = banner_only[1][1]
    clock.advance(9.9 - MIN_STALL_AGE)
    assert not last.disconnecting
    clock.advance(0.1)
    assert last.disconnecting and b"login timed out" in last.value()
    assert not any(wire.disconnecting for _, wire in keyed)  # let in with 60 s
    for proto in [banner_only[1][0], keyed[0][0], keyed[1][0], newcomer]:
        proto.connectionLost(Failure(ConnectionError()))
    assert (admission.unauth, admission.connections) == (0, 0)


class NeverDrop:
    def random(self) -> float:
        return 1.0


def test_no_group_exchange_without_moduli(keys: HostKeys, otp: OtpStore) -> None:
    factory = ssh_factory(keys, nobody(), Clock(), otp)
    proto, _ = connect(factory)
    assert proto.supportedKeyExchanges
    assert not [k for k in proto.supportedKeyExchanges if b"group-exchange" in k]
    assert proto.supportedPublicKeys == [b"ssh-ed25519"]


def test_no_compression_is_offered(keys: HostKeys, otp: OtpStore) -> None:
    """conch inflates a zlib packet whole, before authentication: 1 MiB in, ~1 GB out."""
    factory = ssh_factory(keys, nobody(), Clock(), otp)
    proto, _ = connect(factory)
    assert proto.supportedCompressions == [b"none"]


# -- password failures: growing pauses, the per-address lockout ----------------------------------


class AuthTransport:
    """What the userauth service sees of its transport: records what it sends."""

    def __init__(self, factory: ShellSSHFactory, peer: str) -> None:
        self.factory = factory
        self.peer = peer
        self.sent: list[Any] = []
        self.gone = False

    def isEncrypted(self, direction: str) -> bool:
        return True

    def sendPacket(self, kind: int, data: bytes) -> None:
        self.sent.append(kind)

    def sendDisconnect(self, code: int, reason: bytes) -> None:
        self.sent.append(("disconnect", code))

    def setService(self, service: Any) -> None:
        self.sent.append(("service", service.name))

    def drop(self, code: int, reason: bytes) -> None:
        self.sent.append(("drop", code))


def password_request(user: bytes, password: bytes) -> bytes:
    return (
        common.NS(user)
        + common.NS(b"ssh-connection")
        + common.NS(b"password")
        + b"\x00"
        + common.NS(password)
    )


def test_password_failures_pause_and_count_toward_the_lockout(
    keys: HostKeys, tmp_path: Path
) -> None:
    db = AccountDB.open(str(tmp_path / "accounts.sqlite3"))
    try:
        store = AccountStore(db, inline_runner, inline_runner, 4)
        db.create("alice", hash_password("alicepass1", 4), ROLE_USER)
        clock, failed = Clock(), FailedLogins()
        portal = Portal(ShellRealm(store, Started()), [PasswordChecker(StoreChecker(store))])
        otp = OtpStore(OtpDB(db), inline_runner, inline_runner, 4)
        factory = ssh_factory(keys, portal, clock, otp, failed=failed)

        def connection(peer: str = "192.0.2.9") -> tuple[UserAuth, AuthTransport]:
            auth = UserAuth()
            wire = AuthTransport(factory, peer)
            auth.transport = wire  # type: ignore[assignment]
            auth.serviceStarted()
            return auth, wire

        auth, wire = connection()
        for delay in (1.0, 2.0, 4.0, 4.0):
            auth.ssh_USERAUTH_REQUEST(password_request(b"alice", b"wrong"))
            clock.advance(delay - 0.01)
            assert wire.sent == []
            clock.advance(0.01)
            assert wire.sent == [userauth.MSG_USERAUTH_FAILURE]
            wire.sent.clear()
        auth.serviceStopped()
        for _ in range(6):  # ten failures from one address in all
            auth, wire = connection()
            auth.ssh_USERAUTH_REQUEST(password_request(b"nobody", b"x"))
            clock.advance(1)
            auth.serviceStopped()
        assert failed.blocked("192.0.2.9", clock.seconds())
        auth, wire = connection()
        auth.ssh_USERAUTH_REQUEST(password_request(b"alice", b"alicepass1"))
        assert wire.sent == [userauth.MSG_USERAUTH_FAILURE]  # blocked: the right password too
        auth.serviceStopped()
        auth, wire = connection("198.51.100.3")
        auth.ssh_USERAUTH_REQUEST(password_request(b"alice", b"alicepass1"))
        assert wire.sent == [userauth.MSG_USERAUTH_SUCCESS, ("service", b"ssh-connection")]
        clock.advance(300)
        auth, wire = connection()
        auth.ssh_USERAUTH_REQUEST(password_request(b"alice", b"alicepass1"))
        assert wire.sent[0] == userauth.MSG_USERAUTH_SUCCESS  # the block has ended
    finally:
        db.close()


def test_ssh_passwords_on_a_paced_account_wait_their_turn(keys: HostKeys, tmp_path: Path) -> None:
    """Distributed guessing over SSH meets the same per-account pace as telnet's."""
    db = AccountDB.open(str(tmp_path / "accounts.sqlite3"))
    try:
        store = AccountStore(db, inline_runner, inline_runner, 4)
        db.create("alice", hash_password("alicepass1", 4), ROLE_USER)
        clock = Clock()
        pacing = AccountPacing(clock)
        portal = Portal(ShellRealm(store, Started()), [PasswordChecker(StoreChecker(store))])
        otp = OtpStore(OtpDB(db), inline_runner, inline_runner, 4)
        factory = ssh_factory(keys, portal, clock, otp, pacing=pacing)

        def attempt(peer: str, password: bytes) -> AuthTransport:
            auth = UserAuth()
            wire = AuthTransport(factory, peer)
            auth.transport = wire  # type: ignore[assignment]
            auth.serviceStarted()
            auth.ssh_USERAUTH_REQUEST(password_request(b"alice", password))
            return wire

        attempt("192.0.2.50", b"alicepass1")  # the owner's address, from before
        for i in range(10):  # ten addresses, one guess each
            attempt(f"203.0.113.{i}", b"wrong")
            clock.advance(1)
        assert pacing.paced("alice")
        first, second, third = (attempt(f"198.51.100.{i}", b"wrong") for i in range(3))
        clock.advance(1)
        assert first.sent == [userauth.MSG_USERAUTH_FAILURE] and second.sent == []
        third.gone = True  # hangs up while waiting: never checked
        clock.advance(9)  # t = 20: the second's turn, answered 1 s later as always
        assert second.sent == []
        clock.advance(1)
        assert second.sent == [userauth.MSG_USERAUTH_FAILURE] and third.sent == []
        owner = attempt("192.0.2.50", b"alicepass1")  # not slowed
        assert owner.sent == [userauth.MSG_USERAUTH_SUCCESS, ("service", b"ssh-connection")]
        late = attempt("198.51.100.9", b"alicepass1")  # a fresh address: the next turn
        clock.advance(8.9)
        assert late.sent == []
        clock.advance(0.1)  # t = 30: the third's turn, but it is gone: the late one's then
        assert late.sent[0] == userauth.MSG_USERAUTH_SUCCESS
    finally:
        db.close()


def test_conch_routine_logging_is_kept_out_of_the_log() -> None:
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        conch_log = server_module._conch_log
        conch_log.debug("got data {data}", data=b"hunter2\r")
        conch_log.info("channel open")
        conch_log.error("Got remote error, code {code}", code=11)
        conch_log.error("Got remote error, code {code}", code=2)
        conch_log.warn("something odd")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert [(e["log_format"], e.get("code")) for e in seen] == [
        ("Got remote error, code {code}", 2),
        ("something odd", None),
    ]


def test_the_realm_takes_the_account_the_password_checker_read(tmp_path: Path) -> None:
    """One store read per SSH password login, and nothing left behind in ``checked``."""
    db = AccountDB.open(str(tmp_path / "accounts.sqlite3"))
    try:
        store = AccountStore(db, inline_runner, inline_runner, 4)
        db.create("alice", hash_password("alicepass1", 4), ROLE_USER)
        checked: dict[str, Account] = {}
        portal = Portal(
            ShellRealm(store, Started(), checked), [PasswordChecker(StoreChecker(store, checked))]
        )
        interface, avatar, logout = result(
            portal.login(UsernamePassword(b"alice", b"alicepass1"), None, IConchUser)
        )
        assert interface is IConchUser and isinstance(avatar, ShellAvatar)
        assert avatar.account.name == "alice" and checked == {}
        logout()
    finally:
        db.close()


# -- public-key queries and malformed packets ---------------------------------------------------


def publickey_request(user: bytes, blob: bytes, kind: bytes = b"ssh-ed25519") -> bytes:
    return (
        common.NS(user) + common.NS(b"ssh-connection") + common.NS(b"publickey")
        + b"\x00" + common.NS(kind) + common.NS(blob)
    )  # fmt: skip


def key_auth(keys: HostKeys, otp: OtpStore, listed: bytes) -> tuple[UserAuth, AuthTransport]:
    line = Key.fromString(listed).toString("openssh")
    stamp = authkeys.Stamp(1, 1, len(line), 0, 0)
    checker = authkeys.AuthorizedKeysChecker(lambda user, known: succeed((stamp, line)))
    portal = Portal(ShellRealm(Lookup(succeed), Started()), [checker])
    factory = ssh_factory(keys, portal, Clock(), otp)
    auth = UserAuth()
    wire = AuthTransport(factory, "192.0.2.9")
    auth.transport = wire  # type: ignore[assignment]
    auth.serviceStarted()
    return auth, wire


def test_a_connection_gets_six_public_key_queries(keys: HostKeys, otp: OtpStore) -> None:
    """Queries for a listed key are answered "sign with it" and are no failure: without a
    cap one connection could ask forever (each a read of the file)."""
    blob = Key(ed25519.Ed25519PrivateKey.generate()).public().blob()
    auth, wire = key_auth(keys, otp, blob)
    for _ in range(MAX_KEY_QUERIES):
        auth.ssh_USERAUTH_REQUEST(publickey_request(b"alice", blob))
    assert wire.sent == [userauth.MSG_USERAUTH_PK_OK] * MAX_KEY_QUERIES
    wire.sent.clear()
    auth.ssh_USERAUTH_REQUEST(publickey_request(b"alice", blob))
    assert wire.sent == [("drop", transport.DISCONNECT_NO_MORE_AUTH_METHODS_AVAILABLE)]


def test_a_malformed_key_blob_is_a_malformed_packet_and_an_unknown_type_a_refusal(
    keys: HostKeys, otp: OtpStore
) -> None:
    blob = Key(ed25519.Ed25519PrivateKey.generate()).public().blob()
    auth, wire = key_auth(keys, otp, blob)
    for bad in (common.NS(b"ssh-ed25519") + common.NS(b"x" * 7), b"\x00\x00", blob[:-3]):
        with pytest.raises(MalformedPacket):
            auth.ssh_USERAUTH_REQUEST(publickey_request(b"alice", bad))
    with pytest.raises(MalformedPacket):
        auth.ssh_USERAUTH_REQUEST(common.NS(b"alice") + common.NS(b"ssh-connection")
                                  + common.NS(b"publickey") + b"\x00")  # fmt: skip
    auth.ssh_USERAUTH_REQUEST(
        publickey_request(b"alice", common.NS(b"ssh-ed25519-cert-v01@openssh.com") + b"x")
    )
    assert wire.sent == [userauth.MSG_USERAUTH_FAILURE]  # refused like an unlisted key


def test_malformed_packets_are_one_line_a_minute_per_address_and_drop_the_connection(
    keys: HostKeys, otp: OtpStore
) -> None:
    clock = Clock()
    factory = ssh_factory(keys, nobody(), clock, otp)
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        wires = []
        for host in ("192.0.2.7", "192.0.2.7", "192.0.2.7", "198.51.100.1"):
            proto, wire = connect(factory, host)
            proto.dataReceived(b"SSH-2.0-x\r\n")
            proto.dispatchMessage(transport.MSG_KEXINIT, b"not a kexinit")  # struct.error
            proto.dispatchMessage(transport.MSG_KEXINIT, b"again: not looked at")
            wires.append(wire)
        clock.advance(60)
        proto, wire = connect(factory, "192.0.2.7")
        proto.dataReceived(b"SSH-2.0-x\r\n")
        proto.dispatchMessage(transport.MSG_KEXINIT, b"")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    lines = [e for e in seen if e.get("event") == "ssh_malformed"]
    assert [(e["peer"], e["more"]) for e in lines] == [
        ("192.0.2.7", ""),
        ("198.51.100.1", ""),
        ("192.0.2.7", "; 3 from this address since the last line"),
    ]
    assert not [e for e in seen if e.get("log_failure") is not None]  # no traceback
    for w in wires:
        assert w.disconnecting  # the disconnect sent, the connection closing
    clock.advance(DROP_TIMEOUT)


def test_an_authentication_answered_after_the_connection_is_gone_starts_nothing(
    keys: HostKeys, otp: OtpStore
) -> None:
    factory = ssh_factory(keys, nobody(), Clock(), otp)
    proto, _ = connect(factory)
    proto.connectionLost(None)
    logged_out: list[bool] = []
    proto.avatar = ShellAvatar(ALICE, Started())
    proto.logoutFunction = lambda: logged_out.append(True)
    proto.setService(Connection())
    assert proto.service is None and logged_out == [True]
    assert not hasattr(proto, "avatar")


def test_a_failure_in_the_session_is_our_bug_with_its_traceback_not_a_malformed_packet(
    logged_errors: Any,
) -> None:
    ch, _ = channel()
    aborted: list[bool] = []

    class Broken:
        def data_received(self, data: bytes) -> None:
            raise KeyError("a bug of ours")

        def abort(self) -> None:
            aborted.append(True)

    ch.wire = Broken()  # type: ignore[assignment]
    ch.dataReceived(b"x")  # no exception reaches conch (nor dispatchMessage's catch)
    assert aborted == [True]
    (failure,) = logged_errors.flush(KeyError)
    assert failure["log_format"] == "SSH session failed on its input"
