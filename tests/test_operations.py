"""Operations on the real server: /metrics under a little load, the JSON log, backup."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from realserver import RawClient, RealServer, login

from shellserver.ops.metricspage import CACHE_SECONDS

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).with_name("shellserver"))


_last_scrape = [float("-inf")]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A fresh scrape: scrapes within a second share one rendering, so wait that long."""
    wait = _last_scrape[0] + CACHE_SECONDS + 0.05 - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    _last_scrape[0] = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def register(port: int, name: str, rcvbuf: int = 0) -> RawClient:
    c = RawClient.__new__(RawClient)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # a client that will stop reading: small buffers fill quickly
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    c.sock, c.buffer, c.raw_seen = sock, b"", b""
    c.expect("login: ")
    for line, prompt in (("new", "Username: "), (name, "Password: "), ("longenough", "again: ")):
        c.send_line(line)
        c.expect(prompt)
    c.send_line("longenough")
    c.expect(f"{name}@testhost:~$ ")
    return c


def fail_login(port: int, name: str) -> None:
    """One failed login for ``name``, on a connection of its own."""
    bad = RawClient(port)
    bad.expect("login: ")
    bad.send_line(name)
    bad.expect("Password: ")
    bad.send_line("not her password")
    bad.expect("Login incorrect")
    bad.close()


def test_metrics_move_with_sessions_failed_logins_and_dropped_messages(tmp_path: Path) -> None:
    srv = RealServer(
        tmp_path, "--metrics", "tcp:0:interface=127.0.0.1", "--cmd-rate", "0", "--max-output", "4K"
    ).start()
    try:
        assert srv.metrics_port
        before = scrape(srv.metrics_port)
        assert get(before, "shellserver_sessions", wire="telnet", role="user") == 0
        assert get(before, "shellserver_logins_total", result="failed") == 0

        alice = register(srv.port, "alice")
        bob = register(srv.port, "bob", rcvbuf=4096)  # bob will never read again
        fail_login(srv.port, "alice")
        admin = login(srv.port, "admin", srv.admin_password())

        now = scrape(srv.metrics_port)
        assert get(now, "shellserver_sessions", wire="telnet", role="user") == 2
        assert get(now, "shellserver_sessions", wire="telnet", role="admin") == 1
        assert get(now, "shellserver_registrations_total") == 2
        assert get(now, "shellserver_logins_total", result="ok") == 1
        assert get(now, "shellserver_logins_total", result="failed") == 1
        assert get(now, "shellserver_store_seconds_count") > 0
        assert get(now, "shellserver_hash_queue") == 0
        assert get(now, "process_open_fds") > 0  # the process collector, on the same registry

        alice.send_line("exit")
        assert alice.closed()
        # Walls until bob's buffers fill and his copies are dropped (~2 MB; at most 12 MB).
        dropped = 0.0
        for batch in range(400):
            for i in range(10):
                admin.send_line(f"wall m{batch}.{i} " + "x" * 3000)
            admin.expect(f"m{batch}.9")
            if batch % 5 != 4:
                continue
            now = scrape(srv.metrics_port)
            dropped = get(now, "shellserver_messages_total", kind="wall", outcome="dropped")
            if dropped:
                break
        assert dropped >= 1
        assert get(now, "shellserver_messages_total", kind="wall", outcome="delivered") >= 10
        assert get(now, "shellserver_output_held_bytes") > 0  # bob's, up to the cap
        assert get(now, "shellserver_sessions", wire="telnet", role="user") == 1  # alice left
        assert get(now, "shellserver_reactor_lag_seconds_count") > 0
        admin.close()
        bob.close()
    finally:
        srv.stop()


def test_twist_json_log_carries_each_events_fields(tmp_path: Path) -> None:
    srv = RealServer(tmp_path, runner="twist-json").start()
    try:
        alice = register(srv.port, "alice")
        fail_login(srv.port, "alice")
        bob = register(srv.port, "bob")
        admin = login(srv.port, "admin", srv.admin_password())
        admin.send_line("wall tea is ready")
        admin.expect("tea is ready")
        admin.expect("$ ")
        admin.send_line("kick bob too loud")
        assert bob.closed()
        admin.expect("$ ")
        admin.send_line("lock alice")
        assert alice.closed()
        admin.expect("$ ")
        admin.send_line("shutdown +10 maintenance")
        admin.expect("$ ")
        admin.send_line("shutdown -c")
        admin.expect("cancelled")
        admin.expect("$ ")
        admin.send_line("logout")
        assert admin.closed()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum(e.get("event") == "logout" for e in srv.events()) == 3:
                break
            time.sleep(0.05)
    finally:
        srv.stop()
    events = srv.events()  # every line parses as one JSON object
    by_kind: dict[str, list[dict[str, object]]] = {}
    for e in events:
        assert isinstance(e, dict) and "log_namespace" in e
        if "event" in e:
            by_kind.setdefault(str(e["event"]), []).append(e)

    def one(kind: str, **fields: object) -> dict[str, object]:
        found = [e for e in by_kind.get(kind, []) if all(e.get(k) == v for k, v in fields.items())]
        assert len(found) == 1, (kind, fields, by_kind.get(kind))
        return found[0]

    one("registration", user="alice", role="user", peer="127.0.0.1")
    one("registration", user="bob")
    failed = one("login_failed", user="alice", peer="127.0.0.1", reason="incorrect")
    assert failed["log_level"]["name"] == "info"  # type: ignore[index]
    login_event = one("login", user="admin", role="admin", tty="tel/2", wire="tel")
    assert login_event["peer"] == "127.0.0.1"
    one("wall", by="admin", where="tel/2 from 127.0.0.1", text="tea is ready", reached=3)
    one("kick", by="admin", user="bob", reason="too loud", sessions=1)
    one("lock", by="admin", user="alice", action="lock")
    one("shutdown", by="admin", minutes=10, text="maintenance")
    one("shutdown_cancel", by="admin", action="shutdown cancel")
    for user, tty in (("alice", "tel/0"), ("bob", "tel/1"), ("admin", "tel/2")):
        one("logout", user=user, tty=tty, peer="127.0.0.1", wire="tel")
    one("stopping", by=None)
    # The text is there too, for humans: the format and its fields rebuild it.
    assert "admin kick by admin (tel/2 from 127.0.0.1)" in srv.log_text()


def backup(data: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "--data", str(data), "backup", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def users_in(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [r[0] for r in conn.execute("SELECT name FROM users ORDER BY name")]
    finally:
        conn.close()


def test_backup_of_a_live_store_opens_as_a_copy(tmp_path: Path) -> None:
    srv = RealServer(tmp_path).start()
    out = tmp_path / "backups"
    out.mkdir()
    try:
        alice = register(srv.port, "alice")  # a live session writing login records
        r = backup(srv.data, out, "live.db")  # relative to the operator's directory
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"store copied to {out / 'live.db'} (")
        assert users_in(out / "live.db") == ["admin", "alice"]
        assert (out / "live.db").stat().st_mode & 0o777 == 0o600
        r = backup(srv.data, out, str(out / "live.db"))
        assert r.returncode == 1 and "exists; use --force" in r.stderr
        register(srv.port, "bob").close()
        r = backup(srv.data, out, "--force", str(out / "live.db"))
        assert r.returncode == 0, r.stderr
        assert users_in(out / "live.db") == ["admin", "alice", "bob"]
        r = backup(srv.data, out, str(srv.data / "accounts.sqlite3"), "--force")
        assert r.returncode == 1 and "is the live store" in r.stderr
        alice.send_line("who")
        assert "alice" in alice.expect("$ ")  # the server went on serving
        alice.close()
        assert "admin backup by" in srv.log_text()
    finally:
        srv.stop()
    r = backup(srv.data, out, "stopped.db")  # with the server stopped: under the lock
    assert r.returncode == 0, r.stderr
    assert users_in(out / "stopped.db") == ["admin", "alice", "bob"]
    assert sorted(p.name for p in out.iterdir()) == ["live.db", "stopped.db"]
