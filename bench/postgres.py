"""A PostgreSQL server of the bench's own (``bench/cluster.py``'s two-machine setup):
``initdb`` and ``postgres`` in a temp dir, on a free loopback port, stopped and removed at
the end.

PostgreSQL refuses to run as root: run as root, the server runs as ``nobody``, its
directory given to that user. Debian's binaries are found in ``/usr/lib/postgresql/*/bin``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def bindir() -> Path | None:
    """The newest PostgreSQL's binaries, or those on PATH; None when there are none."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """One PostgreSQL cluster, trust authentication on loopback only (a bench, not a service)."""

    def __init__(self) -> None:
        found = bindir()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = found
        # A directory of its own in the system's temp dir: the server's user (``nobody``
        # when we are root) must reach it, which a private temp dir of ours would not let.
        self.workdir = workdir = Path(tempfile.mkdtemp(prefix="shellserver-bench-pg-"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.getuid() == 0:
            entry = pwd.getpwnam("nobody")
            os.chown(workdir, entry.pw_uid, entry.pw_gid)
            os.chmod(workdir, 0o755)
            self._as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def url(self, database: str = "postgres") -> str:
        """The URL the nodes are given."""
        return f"postgresql://bench@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> Postgres:
        """initdb, then the server; returns once it accepts connections."""
        data = self.workdir / "pgdata"
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(data), "-U", "bench", "--auth=trust",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            check=True, capture_output=True, stdin=subprocess.DEVNULL, cwd=self.workdir,
            **self._as,
        )  # fmt: skip
        log = open(self.workdir / "postgres.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", str(self.workdir), "-c", "max_connections=100"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir, **self._as,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                capture_output=True,
            )
            if ready.returncode == 0:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start (see {self.workdir}/postgres.log)")
            time.sleep(0.1)
        raise RuntimeError("postgres did not start in time")

    def stop(self) -> None:
        """A fast shutdown (SIGKILL if it lingers), and its directory removed."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)
