"""A full disk (a real 40 MB tmpfs under the data dir): users still log in to delete files.

Registration must write the account, so it may fail while the disk is full (with
``Service temporarily unavailable``); a login whose bookkeeping cannot be written
logs in all the same.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from realserver import PASSWORD, RawClient, RealServer, login, register

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/data`` as a 40 MB tmpfs (needs root: skipped with the reason otherwise)."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=40m,mode=0700", "tmpfs", str(data)],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a small tmpfs: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False, timeout=30)


def _fill(path: Path) -> None:
    """Write ``path`` until the filesystem has no room left."""
    block = b"x" * (1 << 20)
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    small = b"x" * 4096
    with open(path, "ab", buffering=0) as f:  # the last few pages too
        try:
            while True:
                f.write(small)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


def test_a_full_disk_lets_users_log_in_and_delete_files(tmp_path: Path, small_disk: Path) -> None:
    srv = RealServer(tmp_path, "--max-registrations", "0").start()  # log: not on the disk
    try:
        users = ["ann", "ben", "cat", "dan", "eve"]
        for name in users:
            register(srv.port, name).close()
        big = small_disk / "home" / "ann" / "big"
        _fill(big)
        st = os.statvfs(small_disk)
        assert st.f_bavail * st.f_frsize < 64 * 1024  # really full

        c = RawClient(srv.port)  # registration must write: it may fail, and says so
        c.expect("login: ")
        for line, prompt in [
            ("new", "Username: "),
            ("fay", "Password: "),
            (PASSWORD, "Password again: "),
            (PASSWORD, "Service temporarily unavailable\nlogin: "),
        ]:
            c.send_line(line)
            c.expect(prompt)
        c.close()

        sessions = [login(srv.port, name, PASSWORD) for name in users]  # every one gets in
        ann = sessions[0]
        ann.send_line("ls")
        assert "big" in ann.expect("$ ")
        ann.send_line("rm big")
        ann.expect("$ ")
        assert not big.exists()
        for s in sessions:
            s.close()
        register(srv.port, "fay").close()  # room again: registration works
        login(srv.port, "ann", PASSWORD).close()
        log = srv.log_text()
        assert "recording a login failed, logged in without a login record" in log
        assert "Traceback" not in log
    finally:
        srv.stop()
