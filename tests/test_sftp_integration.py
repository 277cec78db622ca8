"""Files over SSH with the real OpenSSH clients (sftp, scp, ssh -s sftp) and sshfs, against the
real server: one server for the module, one account per test."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from realserver import RealServer
from test_ssh_integration import cli, ssh_args, ssh_port, user_key

from shellserver.shell.commands.files import human

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        any(shutil.which(p) is None for p in ("ssh", "sftp", "scp", "ssh-keygen")),
        reason="the OpenSSH clients (ssh, sftp, scp) are not installed (apt install "
        "openssh-client)",
    ),
]
QUOTA = 4 * 1024 * 1024
#: The module's accounts, one per test, made at once with ``newusers``.
USERS = (
    "alice", "frank", "gail", "carol", "dave", "erin", "bob", "hana", "ivan",
    "kate", "liam", "mona", "nina",
)  # fmt: skip

# SFTP v3 packet types and status codes (draft-ietf-secsh-filexfer-02).
INIT, VERSION, OPEN, CLOSE, READ, WRITE = 1, 2, 3, 4, 5, 6
OPENDIR, REALPATH, STAT, SYMLINK, READLINK = 11, 16, 17, 20, 19
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
FX_OK, FX_EOF, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_FAILURE = 0, 1, 2, 3, 4
FXF_READ, FXF_WRITE, FXF_CREAT, FXF_TRUNC = 1, 2, 8, 16


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    work = tmp_path_factory.mktemp("sftp")
    server = RealServer(
        work,
        "--ssh", "tcp:0:interface=127.0.0.1",
        "--quota", str(QUOTA),
        "--metrics", "tcp:0:interface=127.0.0.1",
        runner="twist-json",
    ).start()  # fmt: skip
    try:
        lines = "".join(f"{name}:{name}pass123\n" for name in USERS)
        made = cli(server.data, "newusers", "--hash-cost", "4", stdin=lines.encode())
        assert made.returncode == 0, made.stderr
        yield server
    finally:
        server.stop()
    assert not [e for e in server.events() if "log_failure" in e]  # no traceback, ever


def account(srv: RealServer, name: str) -> Path:
    """One of the module's users, its key put in its home as an operator would; the home."""
    assert name in USERS
    home = srv.data / "home" / name
    (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
    (home / ".ssh" / "authorized_keys").write_bytes(
        user_key(srv, "id_files").with_suffix(".pub").read_bytes()
    )
    return home


def client_options(srv: RealServer) -> list[str]:
    key = user_key(srv, "id_files")
    return [
        "-F", "/dev/null",
        "-o", f"UserKnownHostsFile={srv.workdir / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=accept-new", "-o", "LogLevel=ERROR",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(key),
    ]  # fmt: skip


def sftp(
    srv: RealServer, user: str, commands: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    batch = srv.workdir / f"batch-{user}-{threading.get_ident()}"
    batch.write_text(commands)
    return subprocess.run(
        ["sftp", *client_options(srv), "-P", str(ssh_port(srv)), "-b", str(batch),
         f"{user}@127.0.0.1"],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def scp(srv: RealServer, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["scp", *client_options(srv), "-P", str(ssh_port(srv)), *args],
        capture_output=True,
        timeout=120,
    )


def shell(srv: RealServer, user: str, command: str) -> str:
    key = user_key(srv, "id_files")
    done = subprocess.run(
        ssh_args(srv, f"{user}@127.0.0.1", command, key=key), capture_output=True, timeout=60
    )
    return done.stdout.decode()


def disk_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in home.rglob("*") if p.is_file() and not p.is_symlink())


def json_events(srv: RealServer, event: str, user: str) -> list[dict[str, object]]:
    """The log's ``event`` records of ``user``, as a log shipper reads them."""
    return [e for e in srv.events() if e.get("event") == event and e.get("user") == user]


class RawSFTP:
    """SFTP packets by hand over the real ``ssh -s host sftp``: what a hostile or a slow client
    can send that OpenSSH's sftp never would."""

    def __init__(self, srv: RealServer, user: str) -> None:
        self.proc = subprocess.Popen(
            [*ssh_args(srv, "-s", key=user_key(srv, "id_files")), f"{user}@127.0.0.1", "sftp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.next_id = 0
        self.send(INIT, struct.pack(">L", 3))
        kind, _ = self.receive()
        assert kind == VERSION

    def send(self, kind: int, body: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(struct.pack(">LB", len(body) + 1, kind) + body)
        self.proc.stdin.flush()

    def request(self, kind: int, body: bytes) -> int:
        self.next_id += 1
        self.send(kind, struct.pack(">L", self.next_id) + body)
        return self.next_id

    def receive(self) -> tuple[int, bytes]:
        assert self.proc.stdout is not None
        head = self.proc.stdout.read(5)
        assert len(head) == 5, "the server closed the channel"
        length, kind = struct.unpack(">LB", head)
        return kind, self.proc.stdout.read(length - 1)

    def call(self, kind: int, body: bytes) -> tuple[int, bytes]:
        sent = self.request(kind, body)
        answer, data = self.receive()
        assert struct.unpack(">L", data[:4])[0] == sent
        return answer, data[4:]

    def status(self, kind: int, body: bytes) -> tuple[int, str]:
        answer, data = self.call(kind, body)
        assert answer == STATUS, (answer, data)
        code = struct.unpack(">L", data[:4])[0]
        (n,) = struct.unpack(">L", data[4:8])
        return code, data[8 : 8 + n].decode()

    def open(self, path: bytes, flags: int) -> bytes:
        answer, data = self.call(OPEN, ns(path) + struct.pack(">LL", flags, 0))
        assert answer == HANDLE, data
        return data[4:]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def ns(data: bytes) -> bytes:
    return struct.pack(">L", len(data)) + data


# -- the tests -------------------------------------------------------------------------------


def test_sftp_batch_put_get_ls_rename_rm_mkdir_rmdir(srv: RealServer, tmp_path: Path) -> None:
    home = account(srv, "alice")
    payload = os.urandom(300_000) + bytes(range(256))
    (tmp_path / "up.bin").write_bytes(payload)
    done = sftp(
        srv,
        "alice",
        "pwd\nput up.bin\nls -l\nmkdir d\nrename up.bin d/x.bin\nls -l d\n"
        "get d/x.bin back.bin\nchmod 777 d/x.bin\nrm d/x.bin\nrmdir d\nls -la\ncd /\npwd\n"
        "cd ../..\npwd\n",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Remote working directory: /home/alice\n" in out
    assert re.search(rf"^-rw------- +{len(payload)} \w{{3}} \d\d \d\d:\d\d up\.bin$", out, re.M)
    assert re.search(rf"^-rw------- +{len(payload)} .* x\.bin$", out, re.M), out
    assert (tmp_path / "back.bin").read_bytes() == payload
    assert re.search(r"^drwx------ .* \.ssh$", out, re.M)  # ls -la lists the dot files too
    assert out.count("Remote working directory: /home/alice\n") == 3  # / and .. stay home
    assert sorted(p.name for p in home.iterdir()) == [".ssh"]
    (upload,) = json_events(srv, "upload", "alice")
    assert upload["path"] == "/home/alice/up.bin" and upload["size"] == len(payload)
    assert upload["wire"] == "sftp" and upload["peer"] == "127.0.0.1"
    deletes = json_events(srv, "delete", "alice")
    assert [(e["op"], e["path"]) for e in deletes] == [
        ("remove", "/home/alice/d/x.bin"),
        ("rmdir", "/home/alice/d"),
    ]
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics").read()
    moved_in = re.search(rb'^shellserver_sftp_bytes_total\{direction="in"\} (\S+)$', metrics, re.M)
    assert moved_in and float(moved_in.group(1)) >= len(payload)
    assert re.search(rb'shellserver_sftp_operations_total\{op="write",result="ok"\}', metrics)


def test_scp_both_ways_with_binary_and_non_ascii_names(srv: RealServer, tmp_path: Path) -> None:
    home = account(srv, "frank")
    name = "données ☃ 日本.bin"
    payload = bytes(range(256)) * 2000 + b"\x00\r\n\xff"
    (tmp_path / name).write_bytes(payload)
    up = scp(srv, str(tmp_path / name), f"frank@127.0.0.1:{name}")
    assert up.returncode == 0, up.stderr
    assert (home / name).read_bytes() == payload
    down = scp(srv, f"frank@127.0.0.1:/home/frank/{name}", str(tmp_path / "copy"))
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "copy").read_bytes() == payload
    assert name in shell(srv, "frank", "ls")


def test_scp_legacy_protocol_is_refused(srv: RealServer, tmp_path: Path) -> None:
    home = account(srv, "gail")
    (tmp_path / "f").write_bytes(b"x")
    legacy = scp(srv, "-O", str(tmp_path / "f"), "gail@127.0.0.1:f")
    assert legacy.returncode == 1
    assert b"scp: legacy protocol not supported; use scp without -O" in legacy.stderr
    assert not (home / "f").exists()
    direct = subprocess.run(
        ssh_args(srv, "gail@127.0.0.1", "scp -f f", key=user_key(srv, "id_files")),
        capture_output=True,
        timeout=30,
    )
    assert direct.returncode == 1
    assert direct.stderr == b"scp: legacy protocol not supported; use scp without -O\n"


def test_a_banned_user_gets_no_file_transfer(srv: RealServer, tmp_path: Path) -> None:
    home = account(srv, "ivan")
    banned = cli(srv.data, "ban", "ivan", "1h", "testing")
    assert banned.returncode == 0, banned.stderr
    (tmp_path / "f").write_bytes(b"x")
    done = sftp(srv, "ivan", "put f\n", cwd=tmp_path)
    assert done.returncode != 0
    assert "Login refused: banned until" in done.stderr and "(testing)" in done.stderr
    assert not (home / "f").exists()
    (refused,) = json_events(srv, "refused", "ivan")
    assert refused["op"] == "start" and refused["reason"].startswith("Login refused: banned")


def test_an_upload_over_the_quota_stores_nothing_past_it(srv: RealServer, tmp_path: Path) -> None:
    home = account(srv, "carol")
    (tmp_path / "big.bin").write_bytes(os.urandom(QUOTA + 512 * 1024))
    done = sftp(srv, "carol", "put big.bin\n", cwd=tmp_path)
    assert done.returncode != 0
    assert disk_bytes(home) <= QUOTA
    used = disk_bytes(home)
    assert used > QUOTA - 64 * 1024  # it stopped at the quota, not before
    assert f"Disk quota for carol: {human(used)} of {human(QUOTA)} used" in shell(
        srv, "carol", "quota"
    )
    # The status a client gets: SSH_FX_FAILURE with coreutils' words.
    raw = RawSFTP(srv, "carol")
    try:
        handle = raw.open(b"more.bin", FXF_WRITE | FXF_CREAT | FXF_TRUNC)
        code, message = raw.status(WRITE, ns(handle) + struct.pack(">Q", 0) + ns(b"y" * 32768))
        assert (code, message) == (FX_FAILURE, "Disk quota exceeded")
        assert raw.status(CLOSE, ns(handle))[0] == FX_OK
    finally:
        raw.close()
    assert (home / "more.bin").stat().st_size == 0
    assert disk_bytes(home) == used
    assert {"op": "write", "reason": "Disk quota exceeded", "wire": "sftp"}.items() <= (
        json_events(srv, "refused", "carol")[0].items()
    )


def test_hostile_paths_never_leave_the_home(srv: RealServer, tmp_path: Path) -> None:
    home = account(srv, "dave")
    home.mkdir(exist_ok=True)
    (home / "sys").symlink_to("/etc")
    (home / "pw").symlink_to("/etc/passwd")
    raw = RawSFTP(srv, "dave")
    try:
        for path in (b"..", b"../../..", b"/", b"/home/dave/../..", b"/home"):
            kind, data = raw.call(REALPATH, ns(path))
            assert kind == NAME
            assert data[8 : 8 + struct.unpack(">L", data[4:8])[0]].startswith(b"/home/dave")
        for path in (b"../../etc/passwd", b"/etc/passwd", b"/home/dave/../../etc/passwd",
                     b"/home/erin/.ssh/authorized_keys"):  # fmt: skip
            assert raw.status(OPEN, ns(path) + struct.pack(">LL", FXF_READ, 0)) == (
                FX_NO_SUCH_FILE,
                "No such file or directory",
            ), path
        denied = (FX_PERMISSION_DENIED, "Permission denied")
        assert raw.status(OPEN, ns(b"sys/passwd") + struct.pack(">LL", FXF_READ, 0)) == denied
        assert raw.status(OPEN, ns(b"pw") + struct.pack(">LL", FXF_READ, 0)) == denied
        assert raw.status(OPEN, ns(b"pw") + struct.pack(">LL", FXF_WRITE, 0)) == denied
        assert raw.status(OPENDIR, ns(b"sys")) == denied
        assert raw.status(STAT, ns(b"/home/dave/sys/passwd")) == denied
        assert raw.status(READLINK, ns(b"pw")) == denied
        assert raw.status(SYMLINK, ns(b"link") + ns(b"/etc/shadow")) == denied
        long_name = b"x" * 5000
        assert raw.status(OPEN, ns(long_name) + struct.pack(">LL", FXF_WRITE | FXF_CREAT, 0)) == (
            FX_FAILURE,
            "File name too long",
        )
        assert (
            raw.status(OPEN, ns(b"bad\x1bname") + struct.pack(">LL", FXF_WRITE | FXF_CREAT, 0))[0]
            == FX_FAILURE
        )
    finally:
        raw.close()
    assert not (home / "link").exists() and not (home / "link").is_symlink()
    assert sorted(p.name for p in home.iterdir()) == [".ssh", "pw", "sys"]
    got = sftp(srv, "dave", "get /etc/passwd\n", cwd=tmp_path)
    assert got.returncode != 0 and not (tmp_path / "passwd").exists()
    refused = {(e["op"], e["path"], e["reason"]) for e in json_events(srv, "refused", "dave")}
    assert ("symlink", "link", "Permission denied") in refused
    assert ("open", "sys/passwd", "Permission denied") in refused


def test_twelve_concurrent_uploads_under_one_quota(srv: RealServer, tmp_path: Path) -> None:
    home = account(srv, "erin")
    size = 512 * 1024
    for i in range(12):
        (tmp_path / f"f{i}.bin").write_bytes(os.urandom(size))
    with ThreadPoolExecutor(12) as pool:
        results = list(
            pool.map(lambda i: sftp(srv, "erin", f"put f{i}.bin\n", cwd=tmp_path), range(12))
        )
    # The uploads interleave, so which of them ends complete varies; the quota holds exactly.
    assert sum(r.returncode != 0 for r in results) >= 12 - QUOTA // size
    used = disk_bytes(home)
    assert QUOTA - 12 * 64 * 1024 < used <= QUOTA
    for i, r in enumerate(results):
        stored = (home / f"f{i}.bin").stat().st_size
        assert stored == size if r.returncode == 0 else stored < size
    assert f"Disk quota for erin: {human(used)} of {human(QUOTA)} used" in shell(
        srv, "erin", "quota"
    )


def test_a_slow_reader_of_a_large_download_holds_bounded_memory(srv: RealServer) -> None:
    home = account(srv, "bob")
    size = 40 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    with open(home / "big.bin", "wb") as f:  # put there by the operator, over bob's quota
        for _ in range(size // len(block)):
            f.write(block)
    raw = RawSFTP(srv, "bob")
    try:
        handle = raw.open(b"big.bin", FXF_READ)
        before = srv.rss()
        chunk = 32 * 1024
        for n in range(size // chunk):  # every read asked for at once, nothing read yet
            raw.request(READ, ns(handle) + struct.pack(">QL", n * chunk, chunk))
        peak = before
        for _ in range(20):
            time.sleep(0.1)
            peak = max(peak, srv.rss())
        assert peak - before < 16 * 1024 * 1024, (before, peak)
        digest = hashlib.sha256()
        pieces: dict[int, bytes] = {}
        for _ in range(size // chunk):
            kind, data = raw.receive()
            assert kind == DATA
            (request_id,) = struct.unpack(">L", data[:4])
            (n,) = struct.unpack(">L", data[4:8])
            pieces[request_id] = data[8 : 8 + n]
        for request_id in sorted(pieces):
            digest.update(pieces[request_id])
        expected = hashlib.sha256(block * (size // len(block))).hexdigest()
        assert digest.hexdigest() == expected
    finally:
        raw.close()


@pytest.mark.machine_may_refuse
def test_sshfs_mounts_a_home(srv: RealServer, tmp_path: Path) -> None:
    """The one test that may skip under CI: a FUSE mount needs /dev/fuse and the right to
    mount, which containers often lack whatever is installed (sshfs itself must be there)."""
    if shutil.which("sshfs") is None:
        if os.environ.get("CI"):
            raise AssertionError("sshfs is not installed: .ci/run installs it")
        pytest.skip("sshfs is not installed (apt install sshfs)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse: this machine cannot make FUSE mounts")
    home = account(srv, "hana")
    mount = tmp_path / "mnt"
    mount.mkdir()
    opts = ",".join(
        [
            f"port={ssh_port(srv)}",
            f"IdentityFile={user_key(srv, 'id_files')}",
            f"UserKnownHostsFile={srv.workdir / 'known_hosts'}",
            "StrictHostKeyChecking=accept-new",
            "IdentitiesOnly=yes",
            "BatchMode=yes",
        ]
    )
    mounted = subprocess.run(
        ["sshfs", "-F", "/dev/null", "-o", opts, "hana@127.0.0.1:", str(mount)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if mounted.returncode != 0:
        reason = mounted.stderr.strip()
        if re.search(r"fuse|permitted|denied|mount", reason, re.I):
            pytest.skip(f"this machine refuses the FUSE mount: {reason}")
        raise AssertionError(reason)
    try:
        (mount / "hello.txt").write_text("hello through sshfs\n")
        (mount / "sub").mkdir()
        (mount / "hello.txt").rename(mount / "sub" / "moved.txt")
        assert (home / "sub" / "moved.txt").read_text() == "hello through sshfs\n"
        (home / "fromshell.txt").write_bytes(b"\x00\x01binary")
        assert (mount / "fromshell.txt").read_bytes() == b"\x00\x01binary"
        assert sorted(p.name for p in mount.iterdir()) == [".ssh", "fromshell.txt", "sub"]
        with pytest.raises(OSError):
            (mount / "link").symlink_to("/etc/passwd")
        assert not (home / "link").is_symlink()
    finally:
        subprocess.run(["fusermount3", "-u", str(mount)], capture_output=True, timeout=30)


# -- a running sftp ends with its user's sessions ------------------------------------------------


def interactive_sftp(srv: RealServer, user: str, cwd: Path, source: str = "127.0.0.1") -> Any:
    """OpenSSH's ``sftp`` at its prompt, in a terminal (pexpect), connected from ``source``."""
    pexpect = pytest.importorskip("pexpect")
    args = ["sftp", *client_options(srv), "-o", f"BindAddress={source}",
            "-P", str(ssh_port(srv)), f"{user}@127.0.0.1"]  # fmt: skip
    child = pexpect.spawn(args[0], args[1:], timeout=30, cwd=str(cwd))
    child.expect("sftp> ")
    child.sendline("put f")  # one upload works while the account is in good standing
    child.expect("sftp> ")
    return child


def ended_by(child: Any, notice: str, home: Path) -> None:
    """The server closed the running sftp: the client printed ``notice`` (the channel's stderr),
    its next command finds the connection gone, and nothing more reaches the home."""
    pexpect = pytest.importorskip("pexpect")
    try:
        child.expect(re.escape(notice))
        child.sendline("put f g")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus != 0
    finally:
        child.close(force=True)
    assert (home / "f").exists() and not (home / "g").exists()


@pytest.mark.parametrize(
    ("user", "action", "notice"),
    [
        ("kate", ("kick", "kate", "--reason", "spam"), "You have been logged out by "),
        ("liam", ("lock", "liam"), "Your account has been locked by "),
        ("mona", ("ban", "mona", "1h", "troll"), "banned mona until "),
    ],
)
def test_a_running_sftp_is_closed_when_its_user_is_kicked_locked_or_banned(
    srv: RealServer, tmp_path: Path, user: str, action: tuple[str, ...], notice: str
) -> None:
    home = account(srv, user)
    (tmp_path / "f").write_bytes(b"x" * 1000)
    child = interactive_sftp(srv, user, tmp_path)
    done = cli(srv.data, *action)
    assert done.returncode == 0, done.stderr
    ended_by(child, notice, home)
    deadline = time.monotonic() + 5
    while not json_events(srv, "sftp_end", user) and time.monotonic() < deadline:
        time.sleep(0.05)
    (event,) = json_events(srv, "sftp_end", user)
    assert event["peer"] == "127.0.0.1"
    again = sftp(srv, user, "ls\n", cwd=tmp_path)
    # A kick ends what runs; a lock or a ban also refuses the next connection.
    assert (again.returncode == 0) == (action[0] == "kick"), again.stderr


def test_a_running_sftp_is_closed_by_a_ban_of_its_address(srv: RealServer, tmp_path: Path) -> None:
    home = account(srv, "nina")
    (tmp_path / "f").write_bytes(b"x")
    child = interactive_sftp(srv, "nina", tmp_path, source="127.0.0.2")
    try:
        banned = cli(srv.data, "ban", "127.0.0.2", "1h", "flood")
        assert banned.returncode == 0, banned.stderr
        ended_by(child, "banned 127.0.0.2 until ", home)
    finally:
        lifted = cli(srv.data, "unban", "127.0.0.2")
        assert lifted.returncode == 0, lifted.stderr
    # nina herself is not banned: from another address her sftp works
    again = sftp(srv, "nina", "put f h\n", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_an_idle_sftp_is_closed_and_a_stop_closes_a_busy_one(tmp_path: Path) -> None:
    work = tmp_path / "idle"
    work.mkdir()
    server = RealServer(
        work, "--ssh", "tcp:0:interface=127.0.0.1", "--idle-timeout", "4", runner="twist-json"
    ).start()
    try:
        made = cli(server.data, "newusers", "--hash-cost", "4", stdin=b"alice:alicepass123\n")
        assert made.returncode == 0, made.stderr
        home = account(server, "alice")
        (tmp_path / "f").write_bytes(b"x")
        idle = interactive_sftp(server, "alice", tmp_path)
        ended_by(idle, "Idle for 4 seconds; logging you out.", home)
        busy = interactive_sftp(server, "alice", tmp_path)
        server.stop()
        busy.expect("The system is going down NOW!")
        busy.close(force=True)
    finally:
        server.stop()
    assert [e["why"] for e in server.events() if e.get("event") == "sftp_end"] == [
        "idle",
        "the server stops",
    ]
