"""Hostile paths for ``shellserver backup``: as root (as the docs allow), a device, a FIFO or a
path through a symlinked directory must never be replaced or followed, with the server running
(the server writes the snapshot) and stopped (the CLI writes it, under the data dir's lock)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from realserver import RealServer

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).with_name("shellserver"))


def backup(data: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--data", str(data), "backup", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_backup_refuses_devices_fifos_and_symlinked_paths_live_and_stopped(
    tmp_path: Path,
) -> None:
    """As root, as the docs allow: ``backup /dev/null --force`` must not replace the device."""
    out = tmp_path / "backups"
    out.mkdir()
    fifo = out / "fifo"
    os.mkfifo(fifo)
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (out / "linked").symlink_to(elsewhere)
    cases = [
        (["/dev/null", "--force"], "/dev/null is a device, not a regular file"),
        ([str(fifo), "--force"], "fifo is a FIFO, not a regular file"),
        ([str(out / "linked" / "x.db")], "/linked is a symbolic link"),
    ]

    def refused_all() -> None:
        for args, why in cases:
            r = backup(srv.data, out, *args)
            assert r.returncode == 1, (args, r.stdout, r.stderr)
            assert why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
        assert stat.S_ISFIFO(fifo.lstat().st_mode)
        assert list(elsewhere.iterdir()) == []

    srv = RealServer(tmp_path).start()
    try:
        refused_all()
    finally:
        srv.stop()
    refused_all()  # with the server stopped: the CLI writes, under the lock
