"""The SFTP subsystem without a network: the files-layer jobs (paths, quota) and the link's
bounds (one request at a time, the window given back as requests are taken, malformed input)."""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path
from typing import Any

import pytest
from twisted.conch.ssh import common
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.filepath import FilePath

from shellserver.files import handles
from shellserver.files.homefs import Homes
from shellserver.files.sandbox import EACCES, EDQUOT, ENAMETOOLONG, FsError
from shellserver.files.tree import Tree
from shellserver.ops.metrics import Metrics
from shellserver.ops.threads import inline_runner
from shellserver.shell.transfers import Transfers
from shellserver.store.accounts import ROLE_USER, Account
from shellserver.wires.ssh.sftp import MAX_MESSAGE, SFTP_WINDOW, SFTPLink, sftp_starter

QUOTA = 100_000
CLOCK = Clock()


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    homes = Homes(FilePath(str(tmp_path / "data" / "home")), QUOTA, inline_runner)
    t = homes.home("alice").tree
    t.open_home()
    return t


# -- paths as a client names them ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("", []),
        (".", []),
        ("/", []),
        ("..", []),
        ("../../..", []),
        ("/home/alice", []),
        ("/home/alice/a/b", ["a", "b"]),
        ("/home/alice/../../etc/passwd", ["etc", "passwd"]),
        ("/etc/passwd", ["etc", "passwd"]),
        ("/home/bob/secret", ["home", "bob", "secret"]),
        ("~bob/x", ["~bob", "x"]),
        ("a/./b/../c", ["a", "c"]),
    ],
)
def test_client_paths_name_only_the_home(path: str, parts: list[str]) -> None:
    assert handles.client_parts("alice", path) == parts


def test_client_paths_over_the_limits_are_refused_before_any_disk_work() -> None:
    with pytest.raises(FsError) as e:
        handles.client_parts("alice", "x" * 5000)
    assert e.value.reason == ENAMETOOLONG
    with pytest.raises(FsError) as e:
        handles.client_parts("alice", "a/" * 2100)
    assert e.value.reason == ENAMETOOLONG


# -- writing at offsets within the quota ---------------------------------------------------------


def test_a_write_that_would_pass_the_quota_stores_nothing(tree: Tree) -> None:
    fd = handles.open_writing(tree, ["f"], create=True, truncate=True, exclusive=False)
    try:
        handles.write_at(tree, fd, 0, b"a" * 60_000, append=False)
        with pytest.raises(FsError) as e:
            handles.write_at(tree, fd, 60_000, b"b" * 60_000, append=False)
        assert e.value.reason == EDQUOT
        handles.write_at(tree, fd, 0, b"c" * 60_000, append=False)  # overwriting costs nothing
        with pytest.raises(FsError):  # a hole far out is charged as the size it makes
            handles.write_at(tree, fd, 10**9, b"x", append=False)
        handles.write_at(tree, fd, 0, b"d", append=True)
    finally:
        os.close(fd)
    assert os.path.getsize(tree.path(["f"])) == 60_001
    assert tree.used().bytes == 60_001 and tree.used().entries == 1


def test_truncating_opens_and_resizes_keep_the_usage(tree: Tree) -> None:
    tree.write(["f"], b"x" * 50_000)
    fd = handles.open_writing(tree, ["f"], create=False, truncate=True, exclusive=False)
    try:
        assert tree.used().bytes == 0
        handles.resize(tree, fd, 30_000)
        assert tree.used().bytes == 30_000
        with pytest.raises(FsError):
            handles.resize(tree, fd, QUOTA + 1)
    finally:
        os.close(fd)
    with pytest.raises(FsError) as e:
        handles.open_writing(tree, ["f"], create=True, truncate=False, exclusive=True)
    assert e.value.reason == "File exists"


def test_a_file_removed_while_open_is_no_longer_charged(tree: Tree) -> None:
    fd = handles.open_writing(tree, ["f"], create=True, truncate=True, exclusive=False)
    try:
        handles.write_at(tree, fd, 0, b"x" * 1000, append=False)
        tree.remove(["f"], recursive=False)
        handles.write_at(tree, fd, 1000, b"x" * 1000, append=False)
    finally:
        os.close(fd)
    assert tree.used().bytes == 0 and tree.used().entries == 0


def test_planted_links_are_neither_opened_nor_listed_through(tree: Tree, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("no")
    os.symlink(secret, tree.path([], True) + "/link")
    for call in (
        lambda: handles.open_reading(tree, ["link"]),
        lambda: handles.open_writing(tree, ["link"], True, True, False),
        lambda: handles.list_directory(tree, ["link"]),
        lambda: handles.set_times(tree, ["link", "x"], 0, 0),
    ):
        with pytest.raises(FsError) as e:
            call()
        assert e.value.reason == EACCES
    listed = {e.name: e.longname for e in handles.list_directory(tree, [])}
    assert listed["link"].startswith("lrwxrwxrwx")
    assert secret.read_text() == "no"


def test_rename_refuses_an_existing_target_unless_asked_to_replace(tree: Tree) -> None:
    tree.write(["a"], b"1")
    tree.write(["b"], b"22")
    with pytest.raises(FsError) as e:
        handles.rename(tree, ["a"], ["b"], replace=False)
    assert e.value.reason == "File exists"
    handles.rename(tree, ["a"], ["b"], replace=True)
    assert tree.used().bytes == 1 and tree.used().entries == 1


# -- the link: bounded input, answers in order ---------------------------------------------------


class Conn:
    def __init__(self) -> None:
        self.adjusted = 0
        self.transport = type("T", (), {"peer": "192.0.2.9"})()

    def adjustWindow(self, channel: Any, n: int) -> None:
        self.adjusted += n
        channel.localWindowLeft += n


class FakeChannel:
    def __init__(self) -> None:
        self.conn = Conn()
        self.localWindowSize = self.localWindowLeft = 131072
        self.wire: Any = None
        self.out = b""
        self.err = b""
        self.closed = False
        self.status: int | None = None

    def write(self, data: bytes) -> None:
        self.out += data

    def writeExtended(self, kind: int, data: bytes) -> None:
        self.err += data

    def loseConnection(self) -> None:
        self.closed = True

    def exit(self, status: int) -> None:
        self.status = status
        self.closed = True

    def answers(self) -> list[tuple[int, bytes]]:
        found, data = [], self.out
        while data:
            (length,) = struct.unpack(">L", data[:4])
            found.append((data[4], data[5 : 4 + length]))
            data = data[4 + length :]
        self.out = b""
        return found


def packet(kind: int, body: bytes) -> bytes:
    return struct.pack(">LB", len(body) + 1, kind) + body


def let_in(account: Account, peer: str, key: str) -> Deferred[str | None]:
    """The gate's answer for an account nothing refuses: these tests are about the files."""
    return succeed(None)


@pytest.fixture
def link(tmp_path: Path) -> tuple[SFTPLink, FakeChannel, Metrics]:
    homes = Homes(FilePath(str(tmp_path / "data" / "home")), QUOTA, inline_runner)
    channel = FakeChannel()
    metrics = Metrics()
    start = sftp_starter(homes, metrics, CLOCK, let_in, Transfers())
    start(channel, Account("alice", ROLE_USER, False, 0.0))
    assert isinstance(channel.wire, SFTPLink)
    channel.wire.data_received(packet(1, struct.pack(">L", 3)))
    assert channel.answers()[0][0] == 2  # VERSION
    return channel.wire, channel, metrics


def test_the_window_grows_for_sftp_and_comes_back_only_as_requests_are_taken(
    link: tuple[SFTPLink, FakeChannel, Metrics],
) -> None:
    sftp, channel, _ = link
    assert channel.localWindowSize == SFTP_WINDOW
    given = channel.conn.adjusted
    sftp.pause()
    stat = packet(17, struct.pack(">L", 7) + common.NS(b"."))
    sftp.data_received(stat * 3)
    assert channel.answers() == [] and channel.conn.adjusted == given
    sftp.resume()
    answers = channel.answers()
    assert [kind for kind, _ in answers] == [105, 105, 105]  # ATTRS, in order
    assert channel.conn.adjusted == given + 3 * len(stat)


def test_malformed_and_oversized_requests_are_answered_or_closed_without_a_trace(
    link: tuple[SFTPLink, FakeChannel, Metrics],
) -> None:
    sftp, channel, _ = link
    sftp.data_received(packet(3, struct.pack(">L", 9) + b"\x00\x00"))  # OPEN cut short
    sftp.data_received(packet(99, struct.pack(">L", 10)))  # no such request
    (bad, data1), (unknown, data2) = channel.answers()
    assert bad == 101 and struct.unpack(">LL", data1[:8]) == (9, 5)  # SSH_FX_BAD_MESSAGE
    assert unknown == 101 and struct.unpack(">LL", data2[:8]) == (10, 8)  # OP_UNSUPPORTED
    sftp.data_received(struct.pack(">L", MAX_MESSAGE + 1) + b"\x06")
    assert channel.closed


def test_symlinks_are_refused_and_counted(link: tuple[SFTPLink, FakeChannel, Metrics]) -> None:
    sftp, channel, metrics = link
    sftp.data_received(packet(20, struct.pack(">L", 4) + common.NS(b"l") + common.NS(b"/etc")))
    ((kind, data),) = channel.answers()
    assert kind == 101 and struct.unpack(">LL", data[:8]) == (4, 3)
    assert common.getNS(data[8:])[0] == b"Permission denied"
    refused = metrics.registry.get_sample_value(
        "shellserver_sftp_operations_total", {"op": "symlink", "result": "refused"}
    )
    assert refused == 1.0


def test_an_upload_over_the_quota_answers_disk_quota_exceeded(
    link: tuple[SFTPLink, FakeChannel, Metrics],
) -> None:
    sftp, channel, metrics = link
    flags = struct.pack(">LL", 2 | 8 | 16, 0)
    sftp.data_received(packet(3, struct.pack(">L", 1) + common.NS(b"up") + flags))
    ((kind, data),) = channel.answers()
    assert kind == 102
    handle = common.getNS(data[4:])[0]
    for n in range(4):
        chunk = b"z" * 32768
        body = struct.pack(">L", 10 + n) + common.NS(handle) + struct.pack(">Q", n * 32768)
        sftp.data_received(packet(6, body + common.NS(chunk)))
    codes = [struct.unpack(">LL", d[:8]) for _, d in channel.answers()]
    assert codes == [(10, 0), (11, 0), (12, 0), (13, 4)]
    sftp.data_received(packet(4, struct.pack(">L", 20) + common.NS(handle)))
    assert channel.answers()[0][0] == 101
    home = sftp.session.home.tree
    assert os.path.getsize(home.path(["up"])) == 3 * 32768 == home.used().bytes
    moved = metrics.registry.get_sample_value("shellserver_sftp_bytes_total", {"direction": "in"})
    assert moved == 3 * 32768


def test_a_directory_is_read_a_batch_at_a_time(
    link: tuple[SFTPLink, FakeChannel, Metrics],
) -> None:
    sftp, channel, _ = link
    tree = sftp.session.home.tree
    for n in range(230):
        tree.touch([f"f{n:03}"])
    sftp.data_received(packet(11, struct.pack(">L", 1) + common.NS(b"/")))
    ((kind, data),) = channel.answers()
    assert kind == 102
    handle = common.getNS(data[4:])[0]
    counts, names = [], []
    for n in range(5):
        sftp.data_received(packet(12, struct.pack(">L", 2 + n) + common.NS(handle)))
        ((kind, data),) = channel.answers()
        if kind == 101:
            assert struct.unpack(">LL", data[:8])[1] == 1  # SSH_FX_EOF
            break
        (count,) = struct.unpack(">L", data[4:8])
        counts.append(count)
        rest = data[8:]
        for _ in range(count):
            name, rest = common.getNS(rest)
            longname, rest = common.getNS(rest)
            assert longname.endswith(name)
            names.append(name)
            (flags,) = struct.unpack(">L", rest[:4])
            rest = rest[4 + 8 + 4 + 8 :]  # size, permissions, times
            assert flags == 1 | 4 | 8
    assert counts == [100, 100, 32]
    assert names[:3] == [b".", b"..", b"f000"] and names[-1] == b"f229"


def test_a_channel_holds_at_most_64_open_files(
    link: tuple[SFTPLink, FakeChannel, Metrics],
) -> None:
    sftp, channel, _ = link
    sftp.session.home.tree.write(["f"], b"x")
    flags = struct.pack(">LL", 1, 0)
    for n in range(65):
        sftp.data_received(packet(3, struct.pack(">L", n) + common.NS(b"f") + flags))
    answers = channel.answers()
    assert [kind for kind, _ in answers] == [102] * 64 + [101]
    assert common.getNS(answers[-1][1][8:])[0] == b"Too many open files"
    handle = common.getNS(answers[0][1][4:])[0]
    sftp.data_received(packet(4, struct.pack(">L", 99) + common.NS(handle)))
    sftp.data_received(packet(3, struct.pack(">L", 100) + common.NS(b"f") + flags))
    assert [kind for kind, _ in channel.answers()] == [101, 102]


def test_refusals_are_logged_ten_at_once_then_once_a_minute(
    link: tuple[SFTPLink, FakeChannel, Metrics],
) -> None:
    sftp, channel, _ = link
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        for n in range(30):
            if n == 20:
                CLOCK.advance(60)
            body = struct.pack(">L", n) + common.NS(b"l%d" % n) + common.NS(b"/etc")
            sftp.data_received(packet(20, body))
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert len(channel.answers()) == 30
    refused = [e for e in seen if e.get("event") == "refused"]
    assert [e["path"] for e in refused] == [*(f"l{n}" for n in range(11)), "l20"]
    assert refused[-1]["more"] == " (10 refusals since the last line)"


def test_offsets_past_any_file_are_answered_not_raised(
    link: tuple[SFTPLink, FakeChannel, Metrics],
) -> None:
    sftp, channel, _ = link
    flags = struct.pack(">LL", 1 | 2 | 8, 0)
    sftp.data_received(packet(3, struct.pack(">L", 1) + common.NS(b"f") + flags))
    handle = common.getNS(channel.answers()[0][1][4:])[0]
    far = struct.pack(">Q", 2**64 - 1)
    sftp.data_received(packet(5, struct.pack(">L", 2) + common.NS(handle) + far + b"\0\0\x80\0"))
    sftp.data_received(packet(6, struct.pack(">L", 3) + common.NS(handle) + far + common.NS(b"x")))
    codes = [struct.unpack(">LL", d[:8]) for _, d in channel.answers()]
    assert codes == [(2, 1), (3, 4)]  # end of file; Invalid argument


def test_garbage_requests_are_each_answered_and_never_raise(
    link: tuple[SFTPLink, FakeChannel, Metrics],
) -> None:
    sftp, channel, _ = link
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    rng = random.Random(7)
    try:
        for n in range(600):
            kind = rng.choice([*range(3, 21), 200, 101, 0, 255])
            body = struct.pack(">L", n) + rng.randbytes(rng.randrange(0, 40))
            if rng.random() < 0.5:  # a plausible string first, as real requests have
                body = struct.pack(">L", n) + common.NS(rng.choice([b".", b"f", b"\xff", b""]))
                body += rng.randbytes(rng.randrange(0, 30))
            sftp.data_received(packet(kind, body))
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert len(channel.answers()) == 600
    assert not [e for e in seen if "log_failure" in e]
    assert not channel.closed


def test_requests_answered_at_once_are_taken_64_a_turn(
    link: tuple[SFTPLink, FakeChannel, Metrics],
) -> None:
    sftp, channel, _ = link
    sftp.data_received(
        b"".join(packet(16, struct.pack(">L", n) + common.NS(b".")) for n in range(150))
    )
    assert len(channel.answers()) == 64  # the rest in later turns (Clock runs them all at once)
    CLOCK.advance(0)
    assert len(channel.answers()) == 86


def test_requests_wait_their_turn_in_the_homes_queue_with_the_shells_jobs(
    link: tuple[SFTPLink, FakeChannel, Metrics],
) -> None:
    sftp, channel, _ = link
    home = sftp.session.home
    held = home.lock.acquire()  # a shell command's job, running
    assert held.called
    sftp.data_received(packet(17, struct.pack(">L", 1) + common.NS(b".")))
    assert channel.answers() == []
    home.lock.release()
    assert [kind for kind, _ in channel.answers()] == [105]


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (succeed("Login refused: banned until Thu Dec 10 14:02 (spam)\n"), b"Login refused"),
        (fail(OSError("disk I/O error")), b"Service temporarily unavailable\n"),
    ],
)
def test_a_login_the_gate_refuses_takes_no_request(
    tmp_path: Path, answer: Deferred[str | None], said: bytes
) -> None:
    homes = Homes(FilePath(str(tmp_path / "data" / "home")), QUOTA, inline_runner)
    channel = FakeChannel()
    asked: list[tuple[str, str, str]] = []
    waiting: Deferred[str | None] = Deferred()

    def gate(account: Account, peer: str, key: str) -> Deferred[str | None]:
        asked.append((account.name, peer, key))
        return waiting

    start = sftp_starter(homes, Metrics(), CLOCK, gate, Transfers())
    start(channel, Account("alice", ROLE_USER, False, 0.0))
    assert asked == [("alice", "192.0.2.9", "")]
    channel.wire.data_received(packet(1, struct.pack(">L", 3)))
    assert channel.out == b""  # held until the gate answers
    answer.chainDeferred(waiting)
    assert channel.out == b"" and said in channel.err
    assert channel.status == 1 and channel.closed
    assert not os.path.exists(tmp_path / "data" / "home" / "alice")
