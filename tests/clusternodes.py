"""A cluster as users meet it: real ``twistd`` nodes on one data dir and one real redis-server.

Each node is a :class:`RealServer` started with ``--cluster redis://… --node NAME`` on
the shared data dir, with its own work dir (and log, ``node-NAME/twistd.log``). The
accounts are made offline before the nodes start (cheap hashes), so a test logs in
rather than registers. Everything started here is stopped by :meth:`Cluster.stop`,
which the fixtures call even when a test fails; a node a test killed is only reaped.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from realserver import PASSWORD, RawClient, RealServer, login
from redisserver import RedisServer

CLI = str(Path(sys.executable).with_name("shellserver"))
T = TypeVar("T")
#: The admin account every cluster here has ("admin" is a reserved name for newusers).
ADMIN = "boss"


def node(workdir: Path, data: Path, url: str, name: str, *args: str) -> RealServer:
    """Node ``name`` of the cluster at ``url`` on the shared ``data`` dir (not started)."""
    home = workdir / f"node-{name}"
    home.mkdir(parents=True, exist_ok=True)
    srv = RealServer(home, "--data", str(data), "--cluster", url, "--node", name, *args)
    srv.data = data
    return srv


def cli(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The ``shellserver`` CLI on ``data`` (put ``--node NAME`` in ``args`` to pick a node)."""
    return subprocess.run(
        [CLI, "--data", str(data), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def newusers(data: Path, names: Iterable[str], password: str = PASSWORD) -> None:
    """Accounts made offline, before any node starts (``--hash-cost 4``), and the admin
    ``boss`` (a store made this way is not empty at the first start: no initial admin)."""
    lines = f"{ADMIN}:{password}:admin\n" + "".join(f"{n}:{password}\n" for n in names)
    r = cli(data, "newusers", "--hash-cost", "4", stdin=lines)
    assert r.returncode == 0, r.stderr


def run(c: RawClient, line: str, user: str, timeout: float = 10.0) -> str:
    """Type ``line`` at ``user``'s prompt; what came back up to the next prompt."""
    c.send_line(line)
    return c.expect(f"{user}@testhost:~$ ", timeout)


def heard(c: RawClient, text: str, user: str) -> str:
    """A message that arrived at ``user``'s idle prompt: shown, then the prompt drawn again
    (taken too, so the next :func:`run` waits for its own)."""
    return c.expect(f"{text}\n{user}@testhost:~$ ")


#: Where a log event starts: a line with its time stamp (a traceback's lines are indented).
_EVENT = re.compile(r"(?m)^(?=\d{4}-\d\d-\d\dT)")


#: A tty is ``tel/3``, or ``tel/a.3`` when node a named it while Redis was unreachable.
_ROW = re.compile(r"^([a-z][a-z0-9_-]*) +((?:tel|ssh|web)/(?:[a-z0-9][a-z0-9_-]*\.)?\d+)", re.M)


def who_rows(text: str) -> list[tuple[str, str]]:
    """(user, tty) of each row of a ``who`` listing."""
    return _ROW.findall(text)


def eventually(probe: Callable[[], T | None], timeout: float, every: float = 0.2) -> T | None:
    """``probe()`` again until it gives something truthy or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got or time.monotonic() >= deadline:
            return got
        time.sleep(every)


def joined(srv: RealServer, timeout: float = 10.0) -> RealServer:
    """Wait for ``srv``'s link to Redis: a node listens before it has joined, and a login in
    that moment is served as during an outage (local ``--max-sessions``, a ``tel/NODE.N``
    name), which the tests of the joined cluster must not meet by chance."""
    deadline = time.monotonic() + timeout
    while "cluster: connected to" not in srv.log_text():
        if time.monotonic() > deadline:
            raise RuntimeError(f"node never reached Redis:\n{srv.log_text()}")
        time.sleep(0.02)
    return srv


class Cluster:
    """``names`` nodes, each started with ``args``, on one data dir and one redis-server."""

    def __init__(self, workdir: Path, names: Iterable[str], *args: str) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.redis = RedisServer(workdir / "redis")
        self.nodes = {n: node(workdir, self.data, self.redis.url, n, *args) for n in names}
        self.clients: list[RawClient] = []

    def __getitem__(self, name: str) -> RealServer:
        return self.nodes[name]

    def start(self, users: Iterable[str] = ()) -> Cluster:
        """Redis, the accounts (``boss`` and ``users``), then the nodes, started together as
        an operator's service manager would (each takes its turn at the data dir, as nodes
        do); returns once every one has joined."""
        try:
            self.redis.start()
            newusers(self.data, users)
            with ThreadPoolExecutor(len(self.nodes) or 1) as starting:
                for started in [
                    starting.submit(lambda srv: joined(srv.start()), srv)
                    for srv in self.nodes.values()
                ]:
                    started.result()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.close_clients()
        for srv in self.nodes.values():
            with suppress(Exception):
                srv.stop()
        self.redis.stop()

    def kill(self, name: str) -> None:
        """``kill -9`` of a node: no goodbye to Redis, to its sessions or to anyone."""
        proc = self.nodes[name].proc
        assert proc is not None and proc.poll() is None, f"node {name} is not running"
        proc.kill()
        proc.wait(10)

    # -- users --------------------------------------------------------------------------

    def login(self, name: str, user: str, password: str = PASSWORD) -> RawClient:
        """``user`` at their prompt on node ``name`` (closed by :meth:`close_clients`)."""
        c = login(self.nodes[name].port, user, password)
        self.clients.append(c)
        return c

    def connect(self, name: str) -> RawClient:
        """A fresh connection to node ``name``, at its greeting."""
        c = RawClient(self.nodes[name].port)
        self.clients.append(c)
        return c

    def admin(self, name: str) -> RawClient:
        """The admin ``boss`` at their prompt on node ``name``."""
        return self.login(name, ADMIN)

    def close_clients(self) -> None:
        clients, self.clients = self.clients, []
        for c in clients:
            with suppress(OSError):
                c.close()

    # -- the operator -------------------------------------------------------------------

    def cli(self, name: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """The CLI of node ``name``: ``shellserver --data D --node NAME ARGS…``."""
        return cli(self.data, "--node", name, *args, stdin=stdin)

    def who_json(self, name: str) -> list[dict[str, Any]]:
        r = self.cli(name, "who", "--json")
        assert r.returncode == 0, r.stderr
        sessions: list[dict[str, Any]] = json.loads(r.stdout)["sessions"]
        return sessions

    def log_marks(self) -> dict[str, int]:
        """Where each node's log ends now (for :meth:`tracebacks` since then)."""
        return {n: len(s.log_text()) for n, s in self.nodes.items()}

    def tracebacks(self, since: dict[str, int] | None = None) -> dict[str, str]:
        """The logs (from ``since``) of the nodes that logged a traceback, by node: nothing
        may crash, whatever happens to Redis or to the other nodes."""
        logs = {n: s.log_text()[(since or {}).get(n, 0) :] for n, s in self.nodes.items()}
        found = {
            n: [e for e in _EVENT.split(text) if "Traceback" in e] for n, text in logs.items()
        }
        return {n: "".join(events) for n, events in found.items() if events}


@contextmanager
def running(
    workdir: Path, names: Iterable[str], *args: str, users: Iterable[str] = ()
) -> Iterator[Cluster]:
    """A started :class:`Cluster`, stopped (clients, nodes, Redis) however the block ends."""
    cluster = Cluster(workdir, names, *args).start(users)
    try:
        yield cluster
    finally:
        cluster.stop()
