"""A real PostgreSQL server for the store tests: ``initdb`` and ``postgres`` in a temp dir,
on a free loopback port and a unix socket in that dir.

PostgreSQL refuses to run as root, and the tests may run as root (CI does): then the server
runs as ``nobody``, its directory owned by that user. It can be stopped and started again on
the same port (an outage, as a node sees it). Each test gets a database of its own
(:meth:`PostgresServer.new_database`). Tests never use a PostgreSQL they did not start.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

#: The user the server runs as when the tests run as root.
UNPRIVILEGED = "nobody"
_names = itertools.count(1)


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` with initdb and postgres (Debian's layout),
    or the ones on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb is not None else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster of its own, trust authentication on loopback only."""

    def __init__(self, workdir: Path) -> None:
        bindir = postgres_bin()
        if bindir is None:
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data = workdir / "pgdata"
        self.sockets = workdir / "sock"
        self.log = workdir / "postgres.log"
        self.port = free_port()
        self.user = "shellserver"
        self.proc: subprocess.Popen[bytes] | None = None
        #: Popen's arguments that run a program as the unprivileged user (as root only).
        self._as: dict[str, Any] = {}
        if os.getuid() == 0:
            entry = pwd.getpwnam(UNPRIVILEGED)
            for path in (self.workdir, self.sockets):
                path.mkdir(exist_ok=True)
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self._as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            os.chmod(self.workdir, 0o755)
        else:
            self.sockets.mkdir(exist_ok=True)
        self._initdb()

    def _initdb(self) -> None:
        cmd = [
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
            "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
        ]  # fmt: skip
        done = subprocess.run(
            cmd, capture_output=True, stdin=subprocess.DEVNULL, cwd=self.workdir, **self._as
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout.decode()}{done.stderr.decode()}")

    def url(self, database: str = "postgres", **params: str) -> str:
        """The URL a node is given (loopback TCP)."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}" + (
            f"?{query}" if query else ""
        )

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """Start (again) on the same port; returns once it accepts connections."""
        assert self.proc is None, "already running"
        cmd = [
            str(self.bindir / "postgres"), "-D", str(self.data),
            "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.sockets),
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200", "-c", "shared_buffers=16MB",
        ]  # fmt: skip
        log = open(self.log, "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir, **self._as
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"postgres exited at start:\n{self._log_tail()}")
            if self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres did not start in {timeout} s:\n{self._log_tail()}")

    def _ready(self) -> bool:
        done = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
        )
        return done.returncode == 0

    def stop(self, timeout: float = 30.0) -> None:
        """A fast shutdown (SIGINT: sessions are ended, as in an outage); SIGKILL if it
        lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def psql(self, sql: str, database: str = "postgres") -> str:
        """One statement through the server's unix socket; its output, unaligned."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cur = conn.execute(sql)  # type: ignore[arg-type]
            if cur.description is None:
                return ""
            return "\n".join("|".join(str(v) for v in row) for row in cur.fetchall())

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"t{os.getpid()}_{next(_names)}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        """Stop, and remove the cluster's files."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
