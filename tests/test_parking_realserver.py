"""``shellserver restart`` and ``SIGHUP`` on the real server: the process stops with status 0,
and after it is started again (as systemd would) the sessions are there to resume."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from realserver import RawClient, RealServer, login
from test_ssh_integration import CLI, cli

pytestmark = pytest.mark.integration


def _start(workdir: Path, data: Path) -> RealServer:
    workdir.mkdir(exist_ok=True)
    srv = RealServer(workdir, "--data", str(data), "--linger", "300", "--cmd-rate", "0")
    srv.data = data
    return srv.start()


@pytest.mark.parametrize("how", ["cli", "sighup"])
def test_a_restart_keeps_every_session_resumable_after_the_next_start(
    tmp_path: Path, how: str
) -> None:
    data = tmp_path / "data"
    first = _start(tmp_path / "first", data)
    try:
        for name in ("alice", "bob"):
            cli(data, "useradd", name, "--password-stdin", stdin=b"password1\n")
        alice = login(first.port, "alice", "password1")
        alice.send_line("cd /home/alice")
        alice.expect("alice@testhost:~$ ")
        bob = login(first.port, "bob", "password1")
        if how == "cli":
            r = subprocess.run(
                [CLI, "--data", str(data), "restart"], capture_output=True, text=True, timeout=60
            )
            assert r.returncode == 0, r.stderr
            assert "parked 2 sessions; stopping for a restart" in r.stdout
        else:
            assert first.proc is not None
            first.proc.send_signal(signal.SIGHUP)
        alice.expect("The server is restarting; reconnect to resume this session.")
        bob.expect("The server is restarting; reconnect to resume this session.")
        assert first.proc is not None and first.proc.wait(20) == 0  # for the supervisor
    finally:
        first.stop()
    second = _start(tmp_path / "second", data)
    try:
        deadline = time.monotonic() + 10
        while "detached again, resumable" not in second.log_text():
            assert time.monotonic() < deadline, second.log_text()
            time.sleep(0.05)
        admin = login(second.port, "admin", second.admin_password())
        admin.send_line("who")
        listing = admin.expect("admin@testhost:~$ ")
        assert "alice" in listing and "bob" in listing and listing.count("(detached)") == 2
        admin.send_line("write bob welcome back")
        admin.expect("admin@testhost:~$ ")
        again = RawClient(second.port)
        again.expect("login: ")
        again.send_line("bob")
        again.expect("Password: ")
        again.send_line("password1")
        again.expect("You have a detached session on tel/1 (idle ")
        again.expect("Resume it? [Y/n] ")
        again.send_line("y")
        again.expect("--- 1 message while you were away ---")
        again.expect("welcome back")
        again.expect("bob@testhost:~$ ")
        again.send_line("logout")
    finally:
        second.stop()


def test_a_drained_nodes_session_is_resumed_through_another_node(tmp_path: Path) -> None:
    from clusternodes import eventually, running

    with running(tmp_path, "ab", "--linger", "300", users=["alice", "bob"]) as cluster:
        alice = cluster.login("a", "alice")
        alice.send_line("mkdir drained")
        alice.expect("alice@testhost:~$ ")
        alice.send_line("cd drained")
        alice.expect("alice@testhost:~/drained$ ")
        tty = [s["tty"] for s in cluster.who_json("a") if s["user"] == "alice"][0]
        bob = cluster.login("b", "bob")  # before the drain: alice's tty name stays free
        r = cluster.cli("a", "drain")
        assert r.returncode == 0, r.stderr
        assert "parked 1 session" in r.stdout
        alice.expect("The server is restarting; reconnect to resume this session.")
        proc = cluster["a"].proc
        assert proc is not None and proc.wait(20) == 0
        assert eventually(lambda: "alice" not in str(cluster.who_json("b")), 20)
        bob.send_line("write alice sent while nobody held it")  # saved: alice is not online
        bob.expect("bob@testhost:~$ ")
        again = cluster.connect("b")
        again.expect("login: ")
        again.send_line("alice")
        again.expect("Password: ")
        again.send_line("correct horse")
        again.expect(f"You have a detached session on {tty} (idle ")
        again.send_line("y")
        again.expect("alice@testhost:~/drained$ ")
        again.send_line("logout")
    assert "drain asked by" in cluster["a"].log_text()


def test_a_session_detached_on_one_node_is_resumed_through_another(tmp_path: Path) -> None:
    from clusternodes import eventually, running

    with running(tmp_path, "ab", "--linger", "300", users=["alice", "bob"]) as cluster:
        alice = cluster.login("a", "alice")
        alice.send_line("mkdir moved")
        alice.expect("alice@testhost:~$ ")
        alice.send_line("cd moved")
        alice.expect("alice@testhost:~/moved$ ")
        tty = [s["tty"] for s in cluster.who_json("a") if s["user"] == "alice"][0]
        alice.sock.close()  # the connection is lost: detached on node a
        assert eventually(
            lambda: any(s["user"] == "alice" and s["detached"] for s in cluster.who_json("b")),
            10,
        )
        bob = cluster.login("b", "bob")
        bob.send_line("write alice caught you on the other node")
        bob.expect("bob@testhost:~$ ")
        again = cluster.connect("b")
        again.expect("login: ")
        again.send_line("alice")
        again.expect("Password: ")
        again.send_line("correct horse")
        again.expect(f"You have a detached session on {tty} (idle ")
        again.send_line("y")
        again.expect("--- 1 message while you were away ---")
        again.expect("caught you on the other node")
        again.expect("alice@testhost:~/moved$ ")
        sessions = cluster.who_json("a")
        mine = [s for s in sessions if s["user"] == "alice"]
        assert [(s["node"], s["detached"]) for s in mine] == [("b", False)]
        again.send_line("logout")
    assert "handed over to node b" in cluster["a"].log_text()
