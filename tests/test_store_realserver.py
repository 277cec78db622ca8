"""The real server (``twistd -n shellserver``) on a real PostgreSQL store: a login and a
registration while PostgreSQL is stopped, the sessions that go on, the commands that say so,
the ``shellserver_store_up`` gauge, and the store back by itself once PostgreSQL is; two
servers on one store presenting the same SSH host key."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pgserver import PostgresServer
from realserver import PASSWORD, RawClient, RealServer, login, register

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("shellserver"))
DOWN = "Service temporarily unavailable; please try again later.\n"


def store_up(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.search(r"^shellserver_store_up (\S+)$", text, re.M)
    assert found is not None, "no shellserver_store_up"
    return float(found.group(1))


def status(srv: RealServer) -> str:
    done = subprocess.run(
        [CLI, "--data", str(srv.data), "status"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def ssh(srv: RealServer, key: Path, command: str) -> subprocess.CompletedProcess[str]:
    """``ssh -i KEY alice@server COMMAND`` with OpenSSH, the server's reasons shown."""
    client = shutil.which("ssh")
    if client is None:
        pytest.skip("the OpenSSH client is not installed (apt-get install openssh-client)")
    args = [
        client, "-F", "/dev/null", "-p", str(srv.listening("ssh")[0]),
        "-o", f"UserKnownHostsFile={srv.workdir / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=accept-new", "-o", "LogLevel=INFO",
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(key),
        "alice@127.0.0.1", command,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def wait_for_gauge(port: int, value: float, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while store_up(port) != value:
        assert time.monotonic() < deadline, f"shellserver_store_up never became {value}"
        time.sleep(0.1)


def test_store_down_refuses_logins_keeps_sessions_and_comes_back(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    url = own_postgres.new_database()
    # --store-wait 1: each refusal after a second rather than five, the store checked every
    # second; what is refused and what goes on are the same as with the default.
    srv = RealServer(
        tmp_path, "--store", url, "--metrics", "tcp:0:interface=127.0.0.1", "--store-wait", "1"
    ).start()
    try:
        assert f"store: {url}" in srv.log_text()
        alice = register(srv.port, "alice")
        assert store_up(srv.metrics_port) == 1
        own_postgres.stop()

        bob = RawClient(srv.port)
        bob.expect("login: ")
        bob.send_line("alice")
        bob.expect("Password: ")
        bob.send_line(PASSWORD)
        bob.expect(DOWN)
        assert bob.closed()

        newcomer = RawClient(srv.port)
        newcomer.expect("login: ")
        newcomer.send_line("new")
        newcomer.expect("Username: ")
        newcomer.send_line("carol")
        newcomer.expect(DOWN)
        assert newcomer.closed()

        # The running session goes on; what needs the store says it cannot now.
        alice.send_line("whoami")
        alice.expect("alice\n")
        alice.send_line("last")
        alice.expect("last: service temporarily unavailable\n")
        alice.expect("alice@testhost:~$ ")
        wait_for_gauge(srv.metrics_port, 0)
        assert f"\nstore {url} (cannot be reached)\n" in status(srv)

        own_postgres.start()
        wait_for_gauge(srv.metrics_port, 1)
        again = login(srv.port, "alice", PASSWORD)
        again.send_line("last")
        again.expect("alice")
        again.close()
        alice.send_line("last")
        alice.expect("still logged in")
        alice.close()
        log = srv.log_text()
        assert "is unavailable" in log and "answers again" in log
        assert "Traceback" not in log
    finally:
        srv.stop()


def host_key(port: int) -> str:
    keyscan = shutil.which("ssh-keyscan")
    if keyscan is None:
        pytest.skip("ssh-keyscan is not installed (apt-get install openssh-client)")
    done = subprocess.run(
        [keyscan, "-t", "ed25519", "-p", str(port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = [line for line in done.stdout.splitlines() if "ssh-ed25519" in line]
    assert lines, done.stderr
    return lines[0].split()[-1]


def test_two_servers_on_one_store_present_the_same_host_key(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.new_database()
    ssh = "tcp:0:interface=127.0.0.1"
    one = RealServer(tmp_path / "one", "--store", url, "--ssh", ssh)
    two = RealServer(tmp_path / "two", "--store", url, "--ssh", ssh)
    for srv in (one, two):
        srv.workdir.mkdir()
    try:
        one.start()
        two.start()
        first, second = host_key(one.listening("ssh")[0]), host_key(two.listening("ssh")[0])
        assert first == second
        assert "generated SSH host keys in the store at" in one.log_text()
        assert "generated SSH host keys" not in two.log_text()
        # Neither keeps them in its data dir: they live in the store alone.
        assert not (one.data / "ssh").exists() and not (two.data / "ssh").exists()
    finally:
        one.stop()
        two.stop()
