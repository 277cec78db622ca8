"""File transfers end with the sessions: the registry, the SFTP channel's end, and the whole
server (harness) ending a user's SFTP channels on kick, lock, userdel, bans, another node's
announcement, the idle timeout; and the locked accounts the personal pages withhold."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from harness import make_server_with, online
from twisted.internet.task import Clock

from shellserver.app.assembly import Assembly
from shellserver.ops.bans import BanList, make_ban
from shellserver.shell.locks import LOCKED, Locks, pages_hidden
from shellserver.shell.people import USER_DELETED
from shellserver.shell.transfers import END_TRANSFERS, Transfers
from shellserver.wires.ssh.sftp import HANG_UP_TIMEOUT, SFTPLink, login_gate, sftp_starter

KEY_FP = "SHA256:" + "B" * 43


class Socket:
    def __init__(self) -> None:
        self.disconnected = False
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = self.disconnected = True


class Transport:
    def __init__(self, peer: str, key: str) -> None:
        self.peer = peer
        self.key_fingerprint = key
        self.transport = Socket()
        self.lost = False

    def loseConnection(self) -> None:
        self.lost = True


class Conn:
    def __init__(self, peer: str, key: str) -> None:
        self.transport = Transport(peer, key)
        self.channels: dict[int, Any] = {}

    def adjustWindow(self, channel: Any, n: int) -> None:
        channel.localWindowLeft += n


class Channel:
    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        conn.channels[len(conn.channels)] = self
        self.localWindowSize = self.localWindowLeft = 131072
        self.wire: Any = None
        self.out = b""
        self.err = b""
        self.status: int | None = None
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def writeExtended(self, kind: int, data: bytes) -> None:
        self.err += data

    def loseConnection(self) -> None:
        self.closed = True

    def exit(self, status: int) -> None:
        self.status = status
        self.closed = True


def packet(kind: int, body: bytes) -> bytes:
    return struct.pack(">LB", len(body) + 1, kind) + body


def sftp(
    server: Assembly, user: str, peer: str = "10.0.0.1", key: str = "", conn: Conn | None = None
) -> Channel:
    """An SFTP channel of ``user`` on the harness server, let in and initialised."""
    channel = Channel(conn or Conn(peer, key))
    start = sftp_starter(
        server.homes,
        server.metrics,
        server.clock,
        login_gate(server.start, server.locks),
        server.transfers,
    )
    account = server.store.db.get(user)
    assert account is not None
    start(channel, account)
    assert isinstance(channel.wire, SFTPLink)
    channel.wire.data_received(packet(1, struct.pack(">L", 3)))
    assert channel.out[4] == 2  # VERSION
    channel.out = b""
    return channel


def ended(channel: Channel, text: str) -> bool:
    """The channel was told ``text`` on stderr, closed with status 1 and takes no request."""
    link = channel.wire
    if not (text in channel.err.decode() and channel.status == 1 and channel.closed):
        return False
    channel.out = b""
    link.data_received(packet(17, struct.pack(">L", 8) + struct.pack(">L", 1) + b"."))
    return channel.out == b"" and link not in link.transfers


@pytest.fixture
def server(tmp_path: Path) -> Assembly:
    return make_server_with(tmp_path, ("bob", "carl", "dora"))


# -- the registry ---------------------------------------------------------------------------


class Fake:
    def __init__(self, user: str, peer: str = "10.0.0.1", key: str = "", active: float = 0.0):
        self.user, self.peer, self.key, self.last_active = user, peer, key, active
        self.ended: list[tuple[str, str]] = []

    def end(self, text: str, why: str) -> None:
        self.ended.append((text, why))


def test_the_registry_ends_by_user_ban_idleness_and_all() -> None:
    t = Transfers()
    bob1, bob2 = Fake("bob", "10.0.0.5"), Fake("bob", "10.0.1.5", active=50.0)
    carl, dora = Fake("carl", "192.0.2.7", KEY_FP), Fake("dora", "192.0.2.8")
    for x in (bob1, bob2, carl, dora):
        t.add(x)
    assert len(t) == 4
    assert t.end_banned(make_ban("10.0.0.0/24", None, "", "root", 0.0), "gone\n") == 1
    assert bob1.ended == [("gone\n", "banned (10.0.0.0/24)")] and not bob2.ended
    assert t.end_banned(make_ban(KEY_FP, None, "", "root", 0.0), "key\n") == 1
    assert carl.ended and len(t) == 2
    assert t.end_idle(60.0, 30.0, lambda: "idle\n") == 1  # dora: 60 s; bob2 only 10 s
    assert dora.ended == [("idle\n", "idle")] and not bob2.ended
    assert t.end_idle(1e9, 0, lambda: "off\n") == 0  # --idle-timeout 0: never
    assert t.end_user("bob", "kicked\n", "kick") == 1 and len(t) == 0
    t.add(bob1)
    t.discard(bob1)
    t.discard(bob1)  # twice is harmless
    t.add(dora)
    assert t.end_all("down\n", "stop") == 1 and dora.ended[-1] == ("down\n", "stop")


def test_another_nodes_announcement_ends_the_users_transfers_here() -> None:
    t = Transfers()
    bob = Fake("bob")
    t.add(bob)
    t.heard("mute", {"user": "bob"})  # not ours
    t.heard(END_TRANSFERS, {"user": "bob"})  # malformed: logged, ignored
    assert not bob.ended
    t.heard(END_TRANSFERS, {"user": "bob", "text": "bye\n", "why": "kicked by root"})
    assert bob.ended == [("bye\n", "kicked by root")] and len(t) == 0


# -- the SFTP channel's end -------------------------------------------------------------------


def test_an_ended_channel_closes_its_connection_when_it_was_the_only_one(
    server: Assembly,
) -> None:
    channel = sftp(server, "bob")
    assert len(server.transfers) == 1
    channel.wire.end("You have been logged out by root1: spam\n", "kicked")
    assert ended(channel, "You have been logged out by root1: spam\n")
    assert len(server.transfers) == 0
    transport = channel.conn.transport
    assert not transport.lost  # the client has not closed its side yet: it prints the text
    channel.wire.connection_lost()  # it has
    assert transport.lost and not transport.transport.aborted and channel.wire is None
    server.clock.advance(HANG_UP_TIMEOUT)  # the client never let go of the connection: dropped
    assert transport.transport.aborted


def test_an_ended_channel_the_client_does_not_close_is_dropped(server: Assembly) -> None:
    channel = sftp(server, "bob")
    channel.wire.end("bye\n", "kicked")
    server.clock.advance(HANG_UP_TIMEOUT)
    assert channel.conn.transport.transport.aborted


def test_an_ended_channel_leaves_the_connections_other_channels_alone(
    server: Assembly,
) -> None:
    conn = Conn("10.0.0.1", "")
    other = Channel(conn)
    other.wire = object()  # a shell session still running on the same connection
    channel = sftp(server, "bob", conn=conn)
    channel.wire.end("bye\n", "kicked")
    assert ended(channel, "bye\n")
    channel.wire.connection_lost()
    assert not conn.transport.lost


def test_a_closed_channel_leaves_the_registry(server: Assembly) -> None:
    channel = sftp(server, "bob")
    channel.wire.connection_lost()
    assert len(server.transfers) == 0


# -- the whole server ----------------------------------------------------------------------


def test_kick_ends_the_users_sftp_channels_and_counts_them(server: Assembly) -> None:
    admin = online(server, "root1", peer="192.0.2.1")
    bob, carl = sftp(server, "bob"), sftp(server, "carl")
    assert admin.run("kick bob spam") == "kick: ended 1 session of bob\nroot1@testhost:~$ "
    assert ended(bob, "You have been logged out by root1: spam\n")
    assert carl.wire is not None and not carl.closed


def test_lock_and_userdel_end_the_users_sftp_channels(server: Assembly) -> None:
    admin = online(server, "root1", peer="192.0.2.1")
    bob, dora = sftp(server, "bob"), sftp(server, "dora")
    admin.run("lock bob")
    assert ended(bob, "Your account has been locked by root1.\n")
    assert "bob" in server.locks
    admin.run("unlock bob")
    assert "bob" not in server.locks
    admin.run("userdel dora")
    assert ended(dora, "Your account has been deleted by root1.\n")


def test_a_channel_opened_on_a_connection_made_before_the_lock_is_refused(
    server: Assembly,
) -> None:
    account = server.store.db.get("bob")
    assert account is not None
    admin = online(server, "root1", peer="192.0.2.1")
    admin.run("lock bob")
    channel = Channel(Conn("10.0.0.1", ""))
    start = sftp_starter(
        server.homes,
        server.metrics,
        server.clock,
        login_gate(server.start, server.locks),
        server.transfers,
    )
    start(channel, account)  # the connection authenticated while bob was not locked
    assert channel.err == b"Your account is locked; contact an administrator.\n"
    assert channel.status == 1 and len(server.transfers) == 0


def test_bans_end_the_sftp_channels_they_cover(server: Assembly) -> None:
    admin = online(server, "root1", peer="192.0.2.1")
    bob = sftp(server, "bob", peer="10.0.0.5")
    carl = sftp(server, "carl", peer="10.0.1.5", key=KEY_FP)
    dora = sftp(server, "dora", peer="192.0.2.9")
    admin.run("ban 10.0.0.0/24 1h spam")
    assert ended(bob, "You have been logged out by root1: banned 10.0.0.0/24 until")
    assert carl.wire is not None and dora.wire is not None
    admin.run(f"ban {KEY_FP} stolen")
    assert ended(carl, f"banned {KEY_FP} permanently (stolen)")
    answer = admin.run("ban dora troll")
    assert answer.startswith("banned dora permanently (troll)\n")
    assert ended(dora, "You have been logged out by root1: banned dora permanently (troll)")
    assert len(server.transfers) == 0


def test_a_ban_heard_from_another_node_ends_sftp_channels_here(server: Assembly) -> None:
    bob = sftp(server, "bob", peer="10.9.0.5")
    ban = make_ban("10.9.0.0/16", "1h", "far away", "boss", 0.0)
    server.bans.heard("ban", ban.to_fields())
    assert ended(bob, "You have been logged out by boss: banned 10.9.0.0/16 until")


def test_kick_and_lock_are_announced_to_the_other_nodes(server: Assembly) -> None:
    told: list[tuple[str, dict[str, Any]]] = []
    server.hub.announce = lambda kind, fields: told.append((kind, fields))  # type: ignore[method-assign]
    admin = online(server, "root1", peer="192.0.2.1")
    admin.run("kick carl spam")
    admin.run("lock carl")
    assert (END_TRANSFERS, {
        "user": "carl",
        "text": "You have been logged out by root1: spam\n",
        "why": "kicked by root1",
    }) in told  # fmt: skip
    assert (LOCKED, {"user": "carl", "locked": True}) in told
    assert any(k == END_TRANSFERS and f["why"] == "account locked by root1" for k, f in told)


def test_an_idle_sftp_channel_is_closed_by_the_services_scan(server: Assembly) -> None:
    bob, carl = sftp(server, "bob"), sftp(server, "carl")
    server.clock.advance(50)
    carl.wire.data_received(packet(17, struct.pack(">L", 7) + struct.pack(">L", 1) + b"."))
    server.clock.advance(20)
    notice = "Idle for 1 minute; logging you out.\n"
    assert server.transfers.end_idle(server.clock.seconds(), 60.0, lambda: notice) == 1
    assert ended(bob, notice) and carl.wire is not None


# -- the locked accounts and the pages ------------------------------------------------------


def test_locks_are_loaded_refreshed_and_heard(server: Assembly) -> None:
    server.store.db.set_locked("bob", True)
    locks: Locks = server.locks
    locks.load_now(server.store.db)
    assert "bob" in locks and "carl" not in locks
    server.store.db.set_locked("carl", True)  # another node, its announcement lost
    locks.refresh()
    assert "carl" in locks
    locks.heard(LOCKED, {"user": "carl", "locked": False})
    locks.heard(USER_DELETED, {"user": "bob"})
    locks.heard(LOCKED, {"locked": True})  # malformed: ignored
    assert "carl" not in locks and "bob" not in locks


def test_pages_are_hidden_for_locked_and_user_banned_accounts_only() -> None:
    clock = Clock()
    bans = BanList()
    locks = Locks(store=None)  # type: ignore[arg-type]
    hidden = pages_hidden(locks, bans, clock)
    locks.set("bob", True)
    bans.add(make_ban("carl", "1h", "", "root", 0.0))
    bans.add(make_ban("10.0.0.0/8", None, "", "root", 0.0))
    bans.add(make_ban(KEY_FP, None, "", "root", 0.0))
    assert hidden("bob") and hidden("carl") and not hidden("dora")
    clock.advance(3600)  # the ban has ended
    assert not hidden("carl")
