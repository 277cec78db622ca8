"""SSH's second factor at the userauth service, without sockets: a right password of an
account with a second factor is a partial success naming keyboard-interactive, whose one
prompt takes the code (OpenSSH's ``AuthenticationMethods password,keyboard-interactive``)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from test_ssh_server import AuthTransport, Started, password_request
from twisted.conch.ssh import common, userauth
from twisted.conch.ssh.keys import Key
from twisted.cred.portal import Portal
from twisted.internet.task import Clock

from shellserver.ops.admission import Admission
from shellserver.ops.metrics import Metrics
from shellserver.ops.pacing import AccountPacing
from shellserver.ops.threads import inline_runner
from shellserver.ops.throttle import FailedLogins
from shellserver.store.accounts import ROLE_USER, AccountDB, AccountStore
from shellserver.store.auth import StoreChecker
from shellserver.store.otp import OtpDB, OtpStore, time_step
from shellserver.store.passwords import hash_password
from shellserver.wires.ssh.hostkeys import HostKeys
from shellserver.wires.ssh.server import PasswordChecker, ShellRealm, ShellSSHFactory, UserAuth

T0 = 1_800_000_000.0
SECRET = pyotp.random_base32()


class Recorded(AuthTransport):
    """Also keeps each packet's payload."""

    def __init__(self, factory: ShellSSHFactory, peer: str) -> None:
        super().__init__(factory, peer)
        self.packets: list[tuple[int, bytes]] = []

    def sendPacket(self, kind: int, data: bytes) -> None:
        super().sendPacket(kind, data)
        self.packets.append((kind, data))


class Setup:
    def __init__(self, tmp_path: Path) -> None:
        self.db = AccountDB.open(str(tmp_path / "accounts.sqlite3"))
        store = AccountStore(self.db, inline_runner, inline_runner, 4)
        for name in ("alice", "bob"):
            self.db.create(name, hash_password("alicepass1", 4), ROLE_USER)
        self.otp = OtpStore(OtpDB(self.db), inline_runner, inline_runner, 4)
        self.otp.enable("alice", SECRET, time_step(T0) - 10, [], T0)
        self.clock = Clock()
        self.clock.advance(T0)
        self.failed = FailedLogins()
        self.pacing = AccountPacing(self.clock)
        self.started = Started()
        portal = Portal(ShellRealm(store, self.started), [PasswordChecker(StoreChecker(store))])
        keys = HostKeys((Key(ed25519.Ed25519PrivateKey.generate()),))
        self.factory = ShellSSHFactory(
            keys,
            portal,
            self.clock,
            60,
            Admission(),
            self.failed,
            self.pacing,
            Metrics(),
            self.otp,
        )

    def connection(self, peer: str = "192.0.2.9") -> tuple[UserAuth, Recorded]:
        auth = UserAuth()
        wire = Recorded(self.factory, peer)
        auth.transport = wire  # type: ignore[assignment]
        auth.serviceStarted()
        return auth, wire


@pytest.fixture
def ssh(tmp_path: Path) -> Iterator[Setup]:
    setup = Setup(tmp_path)
    try:
        yield setup
    finally:
        setup.db.close()


def kbd_request(user: bytes) -> bytes:
    return (
        common.NS(user)
        + common.NS(b"ssh-connection")
        + common.NS(b"keyboard-interactive")
        + common.NS(b"")
        + common.NS(b"")
    )


def info_response(*answers: bytes) -> bytes:
    return struct.pack(">L", len(answers)) + b"".join(common.NS(a) for a in answers)


def code(offset: int = 0) -> bytes:
    return pyotp.TOTP(SECRET).at(T0, counter_offset=offset).encode()


def to_code_prompt(ssh: Setup, peer: str = "192.0.2.9") -> tuple[UserAuth, Recorded]:
    auth, wire = ssh.connection(peer)
    auth.ssh_USERAUTH_REQUEST(password_request(b"alice", b"alicepass1"))
    assert wire.packets == [
        (userauth.MSG_USERAUTH_FAILURE, common.NS(b"keyboard-interactive") + b"\xff")
    ]
    wire.packets.clear()
    auth.ssh_USERAUTH_REQUEST(kbd_request(b"alice"))
    (sent,) = wire.packets
    assert sent[0] == userauth.MSG_USERAUTH_INFO_REQUEST
    name, instruction, language, rest = common.getNS(sent[1], 3)
    assert (name, instruction, language) == (b"", b"", b"")
    assert struct.unpack(">L", rest[:4]) == (1,)
    prompt, echo = common.getNS(rest[4:])
    assert (prompt, echo) == (b"Verification code: ", b"\x00")  # echo off
    wire.packets.clear()
    wire.sent.clear()
    return auth, wire


def test_password_then_code_logs_in(ssh: Setup) -> None:
    auth, wire = to_code_prompt(ssh)
    assert ssh.started.calls == [] and wire.sent == []
    auth.ssh_USERAUTH_INFO_RESPONSE(info_response(code()))
    assert wire.sent == [userauth.MSG_USERAUTH_SUCCESS, ("service", b"ssh-connection")]


def test_a_wrong_code_fails_after_the_delay_and_counts(ssh: Setup) -> None:
    auth, wire = to_code_prompt(ssh)
    auth.ssh_USERAUTH_INFO_RESPONSE(info_response(b"12345x"))
    ssh.clock.advance(0.99)
    assert wire.sent == []
    ssh.clock.advance(0.01)
    assert wire.sent == [userauth.MSG_USERAUTH_FAILURE]
    assert wire.packets[0][1] == common.NS(b"password") + b"\x00"  # start over
    assert ssh.failed._failures.count("192.0.2.9", ssh.clock.seconds()) == 1
    assert ssh.pacing._failures.count("alice", ssh.clock.seconds()) == 1
    # The code prompt is not offered again without the password.
    wire.sent.clear()
    auth.ssh_USERAUTH_REQUEST(kbd_request(b"alice"))
    ssh.clock.advance(5)
    assert wire.sent == [userauth.MSG_USERAUTH_FAILURE]


def test_a_code_is_not_accepted_twice(ssh: Setup) -> None:
    auth, wire = to_code_prompt(ssh)
    auth.ssh_USERAUTH_INFO_RESPONSE(info_response(code()))
    assert wire.sent[0] == userauth.MSG_USERAUTH_SUCCESS
    auth, wire = to_code_prompt(ssh, "192.0.2.10")
    auth.ssh_USERAUTH_INFO_RESPONSE(info_response(code()))
    ssh.clock.advance(1)
    assert wire.sent == [userauth.MSG_USERAUTH_FAILURE]


def test_keyboard_interactive_without_a_password_first_is_refused(ssh: Setup) -> None:
    auth, wire = ssh.connection()
    auth.ssh_USERAUTH_REQUEST(kbd_request(b"alice"))
    assert [kind for kind, _ in wire.packets] == [userauth.MSG_USERAUTH_FAILURE]
    # Nor for another user than the one whose password was right.
    auth.ssh_USERAUTH_REQUEST(password_request(b"alice", b"alicepass1"))
    wire.packets.clear()
    auth.ssh_USERAUTH_REQUEST(kbd_request(b"bob"))
    assert [kind for kind, _ in wire.packets] == [userauth.MSG_USERAUTH_FAILURE]


def test_an_account_without_a_second_factor_logs_in_with_the_password(ssh: Setup) -> None:
    auth, wire = ssh.connection()
    auth.ssh_USERAUTH_REQUEST(password_request(b"bob", b"alicepass1"))
    assert wire.sent == [userauth.MSG_USERAUTH_SUCCESS, ("service", b"ssh-connection")]


def test_an_answer_unasked_for_is_ignored_and_a_hang_up_while_asked_is_quiet(
    ssh: Setup,
) -> None:
    auth, wire = ssh.connection()
    auth.ssh_USERAUTH_INFO_RESPONSE(info_response(code()))
    assert wire.sent == []
    auth, wire = to_code_prompt(ssh)
    auth.ssh_USERAUTH_INFO_RESPONSE(b"\x00")  # malformed: a wrong code, not an error
    ssh.clock.advance(5)
    assert wire.sent == [userauth.MSG_USERAUTH_FAILURE]
    auth, wire = to_code_prompt(ssh)
    auth.serviceStopped()  # the connection went while the prompt was out
    assert wire.sent == []


def test_another_request_while_asked_abandons_the_prompt(ssh: Setup) -> None:
    auth, wire = to_code_prompt(ssh)
    auth.ssh_USERAUTH_REQUEST(password_request(b"bob", b"alicepass1"))
    assert wire.sent == [userauth.MSG_USERAUTH_SUCCESS, ("service", b"ssh-connection")]
    assert auth.half is None and auth.answer is None
