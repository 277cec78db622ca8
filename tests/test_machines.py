"""Two machines, as an operator builds them: nodes that share only a PostgreSQL store, a Redis
with a password and a homes directory, each with its own data dir and loopback address
(node a on 127.0.0.2, node b on 127.0.0.3), behind a real haproxy speaking PROXY protocol.

The store they serve was made on one machine first (SQLite: accounts, a saved message, an
ignore, a key) and moved with ``shellserver store copy``; then everything made through one
node holds on the other, the quota holds across them, ``who`` sees the client behind the
balancer, and a PostgreSQL outage refuses logins while sessions go on.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusternodes import joined
from pgserver import PostgresServer
from realserver import PASSWORD, RawClient, RealServer, login, register
from redisserver import RedisServer, free_port

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("shellserver"))
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
SECRET = "s3cret-redis"
#: The client's own address: haproxy itself connects to the nodes from 127.0.0.1.
CLIENT = "127.0.0.4"
DOWN = "Service temporarily unavailable; please try again later."
QUOTA = 2 * 1024 * 1024


def cli(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--data", str(data), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def keygen(path: Path) -> Path:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed (apt-get install openssh-client)")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def host_key(port: int, address: str) -> str:
    done = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(port), address],
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = [line for line in done.stdout.splitlines() if "ssh-ed25519" in line]
    assert lines, done.stderr
    return lines[0].split()[-1]


def ssh(port: int, address: str, key: Path, user: str, command: str, workdir: Path) -> str:
    args = [
        "ssh", "-F", "/dev/null", "-p", str(port),
        "-o", f"UserKnownHostsFile={workdir / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=accept-new", "-o", "LogLevel=ERROR",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(key),
        f"{user}@{address}", command,
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def from_client(port: int) -> RawClient:
    """A telnet client connecting to the balancer from the client's own address."""
    c = RawClient.__new__(RawClient)
    c.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(CLIENT, 0))
    c.buffer = b""
    c.raw_seen = b""
    return c


def sign_in(c: RawClient, user: str, password: str = PASSWORD) -> RawClient:
    c.expect("login: ")
    c.send_line(user)
    c.expect("Password: ")
    c.send_line(password)
    c.expect(f"{user}@testhost:~$ ")
    return c


def run(c: RawClient, line: str, user: str) -> str:
    c.send_line(line)
    return c.expect(f"{user}@testhost:~$ ", timeout=60)


class Machines:
    """The whole set-up, stopped by :meth:`stop` however the test ends."""

    def __init__(self, workdir: Path, postgres: PostgresServer) -> None:
        self.workdir = workdir
        self.postgres = postgres
        self.redis = RedisServer(workdir / "redis", "--requirepass", SECRET)
        self.homes = workdir / "homes"
        self.nodes: dict[str, RealServer] = {}
        self.balancer: subprocess.Popen[bytes] | None = None
        self.front = free_port()
        self.alice_key = keygen(workdir / "id_alice")

    def first_machine(self) -> Path:
        """One server alone on SQLite, as a community starts: accounts, a message saved for
        someone away, an ignore and a key; then stopped."""
        work = self.workdir / "first"
        work.mkdir()
        srv = RealServer(work).start()
        try:
            for name in ("alice", "bob", "carol"):
                register(srv.port, name).close()
            bob = login(srv.port, "bob", PASSWORD)
            run(bob, "ignore carol", "bob")
            bob.send_line("logout")
            alice = login(srv.port, "alice", PASSWORD)
            out = run(alice, "write bob saved on the first machine", "alice")
            assert "bob is not logged in; message saved" in out
            alice.send_line("logout")
            added = cli(
                srv.data, "addkey", "alice", stdin=self.alice_key.with_suffix(".pub").read_text()
            )
            assert added.returncode == 0, added.stderr
        finally:
            srv.stop()
        return srv.data

    def start(self) -> Machines:
        sqlite_data = self.first_machine()
        self.url = self.postgres.new_database()
        copied = cli(sqlite_data, "store", "copy", "--to", self.url)
        assert copied.returncode == 0, copied.stderr
        self.copied = copied.stdout
        # The homes move as files (their keys, ~/.ssh/authorized_keys, with them), as the
        # operator's guide says: onto the filesystem the machines share.
        shutil.copytree(sqlite_data / "home", self.homes, symlinks=True)
        self.redis.start()
        cluster = f"redis://:{SECRET}@127.0.0.1:{self.redis.port}/0"
        for name, address in (("a", "127.0.0.2"), ("b", "127.0.0.3")):
            work = self.workdir / f"machine-{name}"
            work.mkdir()
            srv = RealServer(
                work,
                "--store", self.url,
                "--cluster", cluster,
                "--node", name,
                "--homes", str(self.homes),
                "--telnet", f"haproxy:tcp:0:interface={address}",
                "--ssh", f"tcp:0:interface={address}",
                "--quota", str(QUOTA),
                "--max-sessions", "0",
                "--cmd-rate", "0",
                "--max-unauth-per-addr", "0",
                # A login in the outage is refused after a second rather than five.
                "--store-wait", "1",
            )  # fmt: skip
            srv.address = address  # type: ignore[attr-defined]
            self.nodes[name] = srv
            joined(srv.start())
        self._balance()
        return self

    def proxied(self, name: str) -> int:
        """Node ``name``'s PROXY-protocol telnet port (its plain one is ``port``)."""
        return self.nodes[name].listening("telnet")[1]

    def ssh_port(self, name: str) -> int:
        return self.nodes[name].listening("ssh")[0]

    def _balance(self) -> None:
        assert HAPROXY is not None
        config = f"""
global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend telnet
    bind 127.0.0.1:{self.front}
    default_backend nodes
backend nodes
    balance roundrobin
    server a 127.0.0.2:{self.proxied("a")} send-proxy-v2
    server b 127.0.0.3:{self.proxied("b")} send-proxy-v2
"""
        path = self.workdir / "haproxy.cfg"
        path.write_text(config)
        out = open(self.workdir / "haproxy.out", "w")  # noqa: SIM115 (the child keeps it)
        self.balancer = subprocess.Popen(
            [HAPROXY, "-f", str(path), "-db"], stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.front), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, (self.workdir / "haproxy.out").read_text()
                time.sleep(0.1)

    def who_json(self, name: str) -> list[dict[str, object]]:
        done = cli(self.nodes[name].data, "who", "--json")
        assert done.returncode == 0, done.stderr
        sessions: list[dict[str, object]] = json.loads(done.stdout)["sessions"]
        return sessions

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.terminate()
            self.balancer.wait(10)
        for srv in self.nodes.values():
            srv.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def machines(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[Machines]:
    """One set-up for the module's tests: none of them touches what another looks at (their
    own accounts' sessions and files), and the outage test starts PostgreSQL again itself."""
    if HAPROXY is None:
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    setup = Machines(tmp_path_factory.mktemp("machines"), postgres)
    try:
        yield setup.start()
    finally:
        setup.stop()


def test_two_machines_serve_one_community(machines: Machines) -> None:
    a, b = machines.nodes["a"], machines.nodes["b"]
    # What the first machine had came over: the counts, then each thing through node b.
    assert "users" in machines.copied and "messages" in machines.copied
    bob = login(b.port, "bob", PASSWORD)
    assert "saved on the first machine" in run(bob, "messages read 1", "bob")
    carol = login(a.port, "carol", PASSWORD)
    assert "bob has messages disabled" in run(carol, "write bob hello", "carol")  # the ignore
    assert ssh(machines.ssh_port("b"), "127.0.0.3", machines.alice_key, "alice", "whoami",
               machines.workdir).strip() == "alice"  # fmt: skip
    # An account made through one node logs in through the other; a key added through
    # one is honoured by the other; both present one host key.
    register(a.port, "erin").close()
    erin = login(b.port, "erin", PASSWORD)
    erin_key = keygen(machines.workdir / "id_erin")
    added = cli(a.data, "addkey", "erin", stdin=erin_key.with_suffix(".pub").read_text())
    assert added.returncode == 0, added.stderr
    assert ssh(machines.ssh_port("b"), "127.0.0.3", erin_key, "erin", "whoami",
               machines.workdir).strip() == "erin"  # fmt: skip
    assert host_key(machines.ssh_port("a"), "127.0.0.2") == host_key(
        machines.ssh_port("b"), "127.0.0.3"
    )
    # Through the balancer the nodes see the client, not haproxy.
    through = sign_in(from_client(machines.front), "carol")
    peers = sorted(str(s["peer"]) for s in machines.who_json("a") if s["user"] == "carol")
    assert peers == ["127.0.0.1", CLIENT]  # the direct session, and the one through haproxy
    for c in (bob, carol, erin, through):
        c.close()


def test_the_quota_holds_with_copies_spread_over_both_machines(machines: Machines) -> None:
    a, b = machines.nodes["a"], machines.nodes["b"]
    alice = login(a.port, "alice", PASSWORD)
    run(alice, "echo " + "x" * 4000 + " > f0", "alice")
    for i in range(7):  # 4001 bytes doubled seven times: 512 KB
        run(alice, f"cat f{i} f{i} > f{i + 1}", "alice")
    run(alice, "mv f7 big", "alice")
    run(alice, "rm f0 f1 f2 f3 f4 f5 f6", "alice")
    sessions = [login((a, b)[i % 2].port, "alice", PASSWORD) for i in range(12)]
    for i, s in enumerate(sessions):
        s.send_line(f"cp big copy{i}")
    outs = [s.expect("alice@testhost:~$ ", timeout=60) for s in sessions]
    home = machines.homes / "alice"
    assert sum(p.stat().st_size for p in home.iterdir() if p.is_file()) <= QUOTA
    assert sum("Disk quota exceeded" in o for o in outs) == 9
    assert "Disk quota for alice: 2.0M of 2.0M used" in run(sessions[1], "quota", "alice")


def test_postgresql_down_refuses_logins_and_sessions_go_on(machines: Machines) -> None:
    a, b = machines.nodes["a"], machines.nodes["b"]
    bob = login(b.port, "bob", PASSWORD)
    machines.postgres.stop()
    try:
        c = RawClient(a.port)
        c.expect("login: ")
        c.send_line("alice")
        c.expect("Password: ")
        c.send_line(PASSWORD)
        c.expect(DOWN)
        assert c.closed()
        assert "bob" in run(bob, "who", "bob")  # the session goes on
    finally:
        machines.postgres.start()
    deadline = time.monotonic() + 30
    while not _logs_in(a.port, "alice"):
        assert time.monotonic() < deadline, "logins never came back after PostgreSQL did"
        time.sleep(0.5)


def _logs_in(port: int, user: str) -> bool:
    """One login: True at the prompt, False when the store is still unavailable."""
    c = RawClient(port)
    try:
        c.expect("login: ")
        c.send_line(user)
        c.expect("Password: ")
        c.send_line(PASSWORD)
        c.expect(f"{user}@testhost:~$ ", timeout=10)
        return True
    except AssertionError:  # the store's refusal (or nothing yet): not in
        return False
    finally:
        c.close()
