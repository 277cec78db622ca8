"""The real `shellserver` CLI against a real server on a temporary unix socket."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from realserver import RawClient, RealServer, login

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).with_name("shellserver"))


def cli(data: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--data", str(data), *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_control_socket_is_private(server: RealServer) -> None:
    sock = server.data / "control.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert sock.stat().st_mode & 0o777 == 0o600
    assert server.data.stat().st_mode & 0o777 == 0o700


def test_status_who_wall_kick(server: RealServer) -> None:
    r = cli(server.data, "status")
    assert r.returncode == 0 and "is running: pid" in r.stdout and "0 sessions" in r.stdout
    admin = login(server.port, "admin", server.admin_password())
    r = cli(server.data, "who", "--json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    [s] = doc["sessions"]
    assert set(s) == {
        "user", "tty", "role", "login", "idle_s", "mesg", "peer", "term", "node", "detached"
    }  # fmt: skip
    assert (s["user"], s["tty"], s["role"], s["mesg"], s["peer"], s["term"]) == (
        "admin", "tel/0", "admin", True, "127.0.0.1", ""
    )  # fmt: skip
    assert s["node"] == socket.gethostname().split(".")[0]  # one server: its short host name
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", s["login"])  # RFC 3339
    assert "admin" in cli(server.data, "who").stdout
    assert "1 session, 1 user" in cli(server.data, "status").stdout
    r = cli(server.data, "wall", "maintenance at 18:00")
    assert r.returncode == 0 and r.stdout.strip() == "delivered to 1 session"
    got = admin.expect("maintenance at 18:00")
    assert "Broadcast message from" in got and "(control)" in got
    r = cli(server.data, "kick", "admin", "--reason", "testing")
    assert r.returncode == 0
    assert "logged out by" in admin.expect("testing")
    assert admin.closed()
    r = cli(server.data, "kick", "admin")
    assert r.returncode == 1 and "not logged in" in r.stderr
    assert "kick" in server.log_text() and "control socket, pid" in server.log_text()
    # The admin actions are logged, not each CLI call's connection.
    assert "connection established" not in server.log_text()
    assert "connection lost" not in server.log_text()


def test_accounts_through_the_running_server(server: RealServer) -> None:
    r = cli(server.data, "useradd", "bob", "--password-stdin", stdin="bobspassword\n")
    assert r.returncode == 0, r.stderr
    bob = login(server.port, "bob", "bobspassword")
    r = cli(server.data, "useradd", "bob", "--password-stdin", stdin="bobspassword\n")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = cli(server.data, "passwd", "bob", "--password-stdin", stdin="newpassword\n")
    assert r.returncode == 0
    login(server.port, "bob", "newpassword").close()
    r = cli(server.data, "userdel", "bob")
    assert r.returncode == 0
    assert "deleted" in bob.expect("deleted")
    assert bob.closed()
    r = cli(server.data, "userdel", "bob")
    assert r.returncode == 1 and "does not exist" in r.stderr
    r = cli(server.data, "passwd", "ghost", "--password-stdin", stdin="whatever12\n")
    assert r.returncode == 1


def test_the_last_admin_is_kept_and_lock_unlock_work_from_the_cli(server: RealServer) -> None:
    for command in ("userdel", "lock"):
        r = cli(server.data, command, "admin")
        assert (r.returncode, r.stdout, r.stderr) == (
            1, "", f"shellserver {command}: admin is the last administrator\n"
        )  # fmt: skip
    r = cli(server.data, "newusers", "--hash-cost", "4", stdin="bob:bobspassword\n")
    assert r.returncode == 0, r.stderr
    admin = login(server.port, "admin", server.admin_password())  # still there, not locked
    bob = login(server.port, "bob", "bobspassword")
    r = cli(server.data, "lock", "bob")
    assert (r.returncode, r.stdout) == (0, "bob is locked\n"), r.stderr
    assert "Your account has been locked by " in bob.expect("locked by ")
    assert bob.closed()
    c = RawClient(server.port)
    c.expect("login: ")
    c.send_line("bob")
    c.expect("Password: ")
    c.send_line("bobspassword")
    c.expect("Your account is locked; contact an administrator.")
    r = cli(server.data, "unlock", "bob")
    assert (r.returncode, r.stdout) == (0, "bob is unlocked\n"), r.stderr
    login(server.port, "bob", "bobspassword").close()
    r = cli(server.data, "lock", "ghost")
    assert (r.returncode, r.stderr) == (1, "shellserver lock: user 'ghost' does not exist\n")
    assert cli(server.data, "unlock").returncode == 2
    log = server.log_text()
    assert re.search(r"admin lock by \S+ \(control socket, pid \d+\): user='bob'", log), log
    assert re.search(r"admin unlock by \S+ \(control socket, pid \d+\): user='bob'", log), log
    admin.close()


def test_initial_admin_password_is_removed_once_admin_changes_it(server: RealServer) -> None:
    spent = server.data / "initial-admin-password"
    assert spent.exists()
    r = cli(server.data, "passwd", "bob", "--password-stdin", stdin="whatever12\n")
    assert r.returncode == 1 and spent.exists()
    r = cli(server.data, "passwd", "admin", "--password-stdin", stdin="adminspassword\n")
    assert r.returncode == 0, r.stderr
    assert not spent.exists()
    login(server.port, "admin", "adminspassword").close()
    assert "removed " + str(spent) in server.log_text()


def test_newusers_is_all_or_nothing(server: RealServer) -> None:
    bad = "carol:carolpass1\ndave:short\n"
    r = cli(server.data, "newusers", "--hash-cost", "4", stdin=bad)
    assert r.returncode == 1 and "line 2" in r.stderr
    good = "carol:carolpass1\ndave:davepass12:admin\n# comment\n\n"
    r = cli(server.data, "newusers", "--hash-cost", "4", stdin=good)
    assert r.returncode == 0 and "2 created, 0 updated" in r.stdout
    dave = login(server.port, "dave", "davepass12")
    dave.send_line("id")
    assert "role=admin" in dave.expect("$ ")
    r = cli(server.data, "newusers", "--hash-cost", "4", stdin="carol:otherpass1\n")
    assert "0 created, 1 updated" in r.stdout
    login(server.port, "carol", "otherpass1").close()


def test_large_who_is_paged(tmp_path: Path) -> None:
    server = RealServer(tmp_path, "--max-sessions", "0").start()  # 40 sessions of one account
    try:
        clients = [login(server.port, "admin", server.admin_password()) for _ in range(40)]
        r = cli(server.data, "who", "--json")
        assert len(json.loads(r.stdout)["sessions"]) == 40
        for c in clients:
            c.close()
    finally:
        server.stop()


def test_shutdown_countdown_cancel_and_now(server: RealServer) -> None:
    admin = login(server.port, "admin", server.admin_password())
    r = cli(server.data, "shutdown", "+30", "new kernel")
    assert r.returncode == 0 and "scheduled" in r.stdout
    assert "new kernel" in admin.expect("new kernel")
    assert "shutdown scheduled" in cli(server.data, "status").stdout
    r = cli(server.data, "shutdown", "-c")
    assert r.returncode == 0
    assert "cancelled" in admin.expect("cancelled")
    assert cli(server.data, "shutdown", "-c").returncode == 1
    assert cli(server.data, "shutdown", "+soon").returncode == 2
    for word in ["5", "-5"]:  # not a time: never a text broadcast with a stop in a minute
        r = cli(server.data, "shutdown", word, "back soon")
        assert (r.returncode, r.stdout, r.stderr) == (
            2,
            "",
            f"shellserver shutdown: invalid time '{word}'\n"
            "Usage: shellserver shutdown [+MIN|now|HH:MM] [TEXT...] | shellserver shutdown -c\n",
        )
    assert "shutdown scheduled" not in cli(server.data, "status").stdout
    r = cli(server.data, "shutdown", "23:59", "at midnight")
    assert r.returncode == 0 and re.fullmatch(
        r"shutdown scheduled for \w{3} \d{4}-\d\d-\d\d 23:59:00 \S+\n", r.stdout
    ), r.stdout
    assert "at midnight" in admin.expect("at midnight")
    assert cli(server.data, "shutdown", "-c").returncode == 0
    r = cli(server.data, "shutdown", "now")
    assert (r.returncode, r.stdout) == (0, "shutting down now\n")
    assert "going down NOW" in admin.expect("NOW")
    assert admin.closed()
    assert server.proc is not None
    assert server.proc.wait(20) == 0
    assert "going down now (shutdown now by " in server.log_text()


def test_login_during_countdown_is_told(server: RealServer) -> None:
    cli(server.data, "shutdown", "+30")
    c = RawClient(server.port)
    c.expect("login: ")
    c.send_line("admin")
    c.expect("Password: ")
    c.send_line(server.admin_password())
    out = c.expect("admin@testhost:~$ ")
    assert "The system is going down at" in out


def test_sigterm_sends_the_final_notice_and_exits_0(server: RealServer) -> None:
    admin = login(server.port, "admin", server.admin_password())
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert "going down NOW" in admin.expect("NOW")
    assert admin.closed()
    # twistd stops cleanly, then reports the signal that stopped it, as Unix daemons do.
    assert server.proc.wait(20) in (0, -signal.SIGTERM)
    assert "Server Shut Down." in server.log_text()
    assert not (server.data / "control.sock").exists()


def test_server_not_reachable_is_exit_3(tmp_path: Path) -> None:
    r = cli(tmp_path / "nothing-here", "status")
    assert r.returncode == 3 and r.stderr == (
        f"shellserver status: no server is running on {tmp_path}/nothing-here; if the server "
        "keeps its data elsewhere, give --data DIR or set SHELLSERVER_DATA\n"
    )
    r = subprocess.run(
        [CLI, "--control", f"unix:{tmp_path}/absent.sock", "wall", "hi"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 3 and "cannot reach the server" in r.stderr
    assert "Traceback" not in r.stderr


def test_usage_is_exit_2(tmp_path: Path) -> None:
    assert cli(tmp_path, "frobnicate").returncode == 2
    assert cli(tmp_path, "kick").returncode == 2
    r = cli(tmp_path, "useradd", "bob")  # no terminal and no --password-stdin
    assert r.returncode == 2 and "--password-stdin" in r.stderr


def test_accounts_with_the_server_stopped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = cli(data, "useradd", "bob", "--admin", "--password-stdin", stdin="bobspassword\n")
    assert r.returncode == 0, r.stderr
    r = cli(data, "newusers", "--hash-cost", "4", stdin="carol:carolpass1\n")
    assert r.returncode == 0
    assert "useradd" in (data / "admin.log").read_text()
    srv = RealServer(tmp_path).start()
    try:
        assert not (data / "initial-admin-password").exists()  # the store was not empty
        bob = login(srv.port, "bob", "bobspassword")
        bob.send_line("id")
        assert "role=admin" in bob.expect("$ ")
        login(srv.port, "carol", "carolpass1").close()
    finally:
        srv.stop()
    assert cli(data, "userdel", "carol").returncode == 0
    assert cli(data, "userdel", "carol").returncode == 1


def test_lock_unlock_and_the_last_admin_with_the_server_stopped(tmp_path: Path) -> None:
    srv = RealServer(tmp_path).start()  # makes admin and its initial password
    srv.stop()
    data = srv.data
    spent = data / "initial-admin-password"
    r = cli(data, "newusers", "--hash-cost", "4", stdin="bob:bobspassword\n")
    assert r.returncode == 0, r.stderr
    (data / "home" / "admin").mkdir()
    (data / "home" / "admin" / "notes").write_text("keep me\n")
    for command in ("userdel", "lock"):
        r = cli(data, command, "admin")
        assert (r.returncode, r.stderr) == (
            1, f"shellserver {command}: admin is the last administrator\n"
        )  # fmt: skip
    assert (data / "home" / "admin" / "notes").exists()  # the refused userdel put it back
    r = cli(data, "lock", "bob")
    assert (r.returncode, r.stdout) == (0, "bob is locked\n"), r.stderr
    assert cli(data, "lock", "ghost").returncode == 1
    assert "admin lock by" in (data / "admin.log").read_text()
    r = cli(data, "passwd", "admin", "--password-stdin", stdin="adminspassword\n")
    assert r.returncode == 0 and not spent.exists()
    srv.log.unlink()  # the next start logs its own port
    srv = RealServer(tmp_path).start()
    try:
        c = RawClient(srv.port)
        c.expect("login: ")
        c.send_line("bob")
        c.expect("Password: ")
        c.send_line("bobspassword")
        c.expect("Your account is locked")
        r = cli(data, "unlock", "bob")  # through the running server now
        assert (r.returncode, r.stdout) == (0, "bob is unlocked\n"), r.stderr
        login(srv.port, "bob", "bobspassword").close()
        login(srv.port, "admin", "adminspassword").close()
    finally:
        srv.stop()


def run_bytes(*args: str | bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "args",
    [
        ["wall", b"x\xffy"],
        ["kick", "bob", "--reason", b"x\xffy"],
        ["shutdown", "+5", b"x\xffy"],
        ["useradd", b"x\xffy", "--password-stdin"],
    ],
)
def test_arguments_that_are_not_utf8_are_a_usage_error(
    tmp_path: Path, args: list[str | bytes]
) -> None:
    r = run_bytes("--data", str(tmp_path), *args)
    assert (r.returncode, r.stderr) == (2, "shellserver: argument 'x\\xffy' is not valid UTF-8\n")


def test_wall_without_text_is_a_usage_error(server: RealServer) -> None:
    admin = login(server.port, "admin", server.admin_password())
    for text in ["", "   ", "\t"]:
        r = cli(server.data, "wall", text)
        assert r.returncode == 2, r
        assert r.stderr.startswith("shellserver wall: no text to broadcast")
        assert r.stdout == ""
    r = cli(server.data, "wall", "hello")
    assert r.returncode == 0
    assert admin.expect("hello").count("Broadcast message") == 1  # the empty ones sent nothing
    assert cli(server.data.parent / "elsewhere", "wall", " ").returncode == 2  # before "no server"


def test_new_names_are_checked_whole_and_reserved_names_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name in ["evil\n", "root", "all", "admin"]:
        r = cli(data, "useradd", name, "--password-stdin", stdin="goodpassword\n")
        assert r.returncode == 1 and r.stderr.count("\n") == 1, (name, r)
    r = cli(data, "newusers", "--hash-cost", "4", stdin="carol:carolpass1\nguest:guestpass1\n")
    assert r.returncode == 1 and "line 2: That name is reserved" in r.stderr
    assert not (data / "home" / "evil\n").exists()


def test_shellserver_data_points_the_cli_at_the_server(server: RealServer, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "SHELLSERVER_DATA": str(server.data), "COLUMNS": "1000"}
    r = subprocess.run(
        [CLI, "status"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "is running" in r.stdout, r.stderr
    r = subprocess.run([CLI, "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert f"[default: {server.data};" in " ".join(r.stdout.split())
