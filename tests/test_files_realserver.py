"""File work on the real server: it never stalls anyone else, and the quota holds under a race."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realserver import RealServer, login, register

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RealServer]:
    """On tmpfs where there is one: thousands of file creations cost seconds on some disks."""
    shm = Path("/dev/shm")
    fast = shm.is_dir() and os.access(shm, os.W_OK)
    where = Path(tempfile.mkdtemp(dir=shm)) if fast else tmp_path
    srv = RealServer(where, "--max-sessions", "0", "--cmd-rate", "0").start()
    try:
        yield srv
    finally:
        srv.stop()
        if fast:
            shutil.rmtree(where, ignore_errors=True)


def test_one_users_huge_file_work_never_stalls_a_bystander(server: RealServer) -> None:
    alice = register(server.port, "alice")
    bob = register(server.port, "bob")
    home = server.data / "home" / "alice"
    for i in range(5000):  # a big home, as an operator might leave it
        os.close(os.open(home / f"f{i:04d}-{'x' * 60}", os.O_CREAT | os.O_WRONLY, 0o600))
    stars = " ".join(["*"] * 2000)
    names = " ".join(f"t{i:03d}" for i in range(580))
    heavy = [
        (f"echo {stars}", "echo: Argument list too long\n"),
        ("mkdir -p " + "/".join(["d"] * 2000), "Too many levels of directories"),
        ("ls -l", "f4999-"),
        (f"touch {names}", ""),
        ("ls", "f0000-"),
        ("rm f0*", ""),
    ]
    worst = 0.0
    for line, expected in heavy:
        alice.send_line(line)
        started = time.monotonic()
        bob.send_line("who")
        got = bob.expect("bob@testhost:~$ ", timeout=10)
        worst = max(worst, time.monotonic() - started)
        assert "alice" in got
        out = alice.expect("alice@testhost:~$ ", timeout=40)
        assert expected in out, (line, out[-300:])
    assert worst < 1.0, f"a bystander's who took {worst:.2f} s"
    assert len(os.listdir(home)) == 5000 - 1000 + 580


def test_the_quota_holds_when_many_sessions_copy_at_once(server: RealServer) -> None:
    alice = register(server.port, "alice")
    alice.send_line("echo " + "x" * 4000 + " > f0")
    alice.expect("$ ")
    for i in range(9):  # 4001 bytes doubled nine times: 2 MB
        alice.send_line(f"cat f{i} f{i} > f{i + 1}")
        alice.expect("$ ")
    alice.send_line("mv f9 big")
    alice.expect("$ ")
    alice.send_line("rm f0 f1 f2 f3 f4 f5 f6 f7 f8")
    alice.expect("$ ")
    sessions = [login(server.port, "alice", "correct horse") for _ in range(20)]
    for i, s in enumerate(sessions):
        s.send_line(f"cp big copy{i}")
    outs = [s.expect("alice@testhost:~$ ", timeout=40) for s in sessions]
    refused = [o for o in outs if "Disk quota exceeded" in o]
    home = server.data / "home" / "alice"
    used = sum(p.stat().st_size for p in home.iterdir())
    assert used <= 10 * 1024**2
    assert len(refused) == 16 and len(list(home.iterdir())) == 5  # big and four copies
    alice.send_line("quota")
    assert "Disk quota for alice: 9.8M of 10M used (97%), 5 of 10000 files" in alice.expect("$ ")


def test_a_file_an_operator_put_in_a_new_home_counts_against_the_quota(tmp_path: Path) -> None:
    """An account made through the running server has its (empty) home measured at once;
    the 3 MiB file an admin copies in afterwards counts from the user's first login."""
    srv = RealServer(tmp_path, "--quota", "10M", "--max-sessions", "0", "--cmd-rate", "0").start()
    try:
        cli = str(Path(sys.executable).with_name("shellserver"))
        made = subprocess.run(
            [cli, "--data", str(srv.data), "useradd", "bob", "--password-stdin"],
            input="bobspassword\n", capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        home = srv.data / "home" / "bob"
        assert home.is_dir()
        (home / "big").write_bytes(b"x" * 3 * 1024**2)  # from outside, on disk
        sessions = [login(srv.port, "bob", "bobspassword") for _ in range(12)]
        for i, s in enumerate(sessions):
            s.send_line(f"cp big copy{i}")
        outs = [s.expect("bob@testhost:~$ ", timeout=40) for s in sessions]
        refused = [o for o in outs if "Disk quota exceeded" in o]
        stored = sum(p.stat().st_size for p in home.iterdir())
        assert stored <= 10 * 1024**2, f"{stored} bytes stored"
        assert len(refused) == 10 and len(list(home.iterdir())) == 3  # big and two copies
        sessions[0].send_line("quota")
        assert "Disk quota for bob: 9.0M of 10M used (90%), 3 of 10000 files" in sessions[
            0
        ].expect("$ ")
        for s in sessions:
            s.close()
    finally:
        srv.stop()


def test_offline_useradd_and_userdel_keep_homes_all_or_nothing(tmp_path: Path) -> None:
    cli = str(Path(sys.executable).with_name("shellserver"))

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cli, "--data", str(data), *args], input=stdin, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    data = tmp_path / "data"
    (data / "home" / "dave").mkdir(parents=True)
    (data / "home" / "dave" / "leftover").write_text("not dave's")
    (data / "home" / "ghost").mkdir()
    (data / "home" / "ghost" / "f").write_text("x")
    assert run("useradd", "dave", "--password-stdin", stdin="davepassword\n").returncode == 0
    assert not (data / "home" / "dave").exists()  # a new account starts empty (made on use)
    assert run("userdel", "ghost").returncode == 1  # no such account: the home stays
    assert (data / "home" / "ghost" / "f").read_text() == "x"
    (data / "home" / "dave").mkdir()
    (data / "home" / "dave" / "mine").write_text("dave's")
    assert run("userdel", "dave").returncode == 0
    assert not (data / "home" / "dave").exists()
    assert os.listdir(data / "trash") == []
    assert "userdel" in (data / "admin.log").read_text()
