"""``shellserver store copy --to postgresql://…``: the embedded store into PostgreSQL, with
the server stopped or running, refusing a database that holds anything unless ``--force``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pgserver import PostgresServer
from realserver import PASSWORD, RealServer, login, register

from shellserver.ops.bans import Ban
from shellserver.ops.datadir import DataDir
from shellserver.shell import people
from shellserver.store import audit, mutes, parked
from shellserver.store import bans as store_bans
from shellserver.store.accounts import ROLE_ADMIN, AccountDB
from shellserver.store.otp import OtpDB
from shellserver.store.postgres import PostgresAccountDB, parse_postgres_url
from shellserver.wires.ssh.hostkeys import load_or_create

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).with_name("shellserver"))


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHELLSERVER_DATA"}
    return subprocess.run(
        [CLI, "--data", str(data), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def filled_data_dir(tmp_path: Path) -> Path:
    """A stopped server's data dir: accounts, logins, a saved message, an ignore, a ban, a second
    factor with recovery codes, an audit record, a mute, a parked session, host keys."""
    from twisted.python.filepath import FilePath

    data = tmp_path / "data"
    datadir = DataDir(FilePath(str(data)))
    datadir.create()
    db = AccountDB.open(datadir.db_path.path)
    db.create("admin", "h-admin", ROLE_ADMIN, now=1.0)
    db.create("alice", "h-alice", now=2.0)
    db.create("bob", "h-bob", now=3.0)
    for when in (10.0, 20.0, 30.0):
        db.record_logout(db.record_login("alice", "tel/0", "10.0.0.1", when), when + 1)
    assert people.save_message(db, "bob", "alice", b"hi \xff bob", 40.0) == people.SAVED
    assert people.add_ignore(db, "alice", "bob") == people.ADDED
    store_bans.add_ban(db, Ban("10.0.0.0/8", "network", "admin", 50.0, None, "spam"))
    assert OtpDB(db).enable("alice", "JBSWY3DPEHPK3PXP", 7, ["h1", "h2"], 60.0)
    assert audit.append(db, 70.0, "admin", "cli", "ban", "10.0.0.0/8", "spam", None, "a") == 1
    mutes.set_mute(db, "bob", 9e9, "flooding", "admin", 80.0)
    assert parked.park(db, [("a", "alice", "tel/3", 90.0, 9e9, '{"cwd": "/"}')]) == 1
    db.close()
    load_or_create(FilePath(str(data / "ssh")))
    return data


def test_a_stopped_servers_store_is_copied_whole(tmp_path: Path, postgres: PostgresServer) -> None:
    data = filled_data_dir(tmp_path)
    url = postgres.new_database()
    done = cli(data, "store", "copy", "--to", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"copied {data}/accounts.sqlite3 to {url}:",
        "  audit: 1",
        "  bans: 1",
        "  host_keys: 2",
        "  logins: 3",
        "  users: 3",
        "  ignores: 1",
        "  messages: 1",
        "  mutes: 1",
        "  otp: 1",
        "  parked: 1",
        "  otp_recovery: 2",
    ]
    source = AccountDB.open(str(data / "accounts.sqlite3"))
    target = PostgresAccountDB.at(parse_postgres_url(url), size=1)
    try:
        assert target.users() == source.users()
        assert target.get_hash("alice") == source.get_hash("alice")
        assert target.history() == source.history()
        assert people.saved_messages(target, "bob") == people.saved_messages(source, "bob")
        assert people.ignore_list(target, "alice") == ["bob"]
        assert store_bans.active_bans(target, 70.0) == store_bans.active_bans(source, 70.0)
        assert OtpDB(target).recovery_hashes("alice") == OtpDB(source).recovery_hashes("alice")
        assert OtpDB(target).enabled("alice")
        query = audit.AuditQuery()
        assert audit.records(target, query) == audit.records(source, query)
        assert mutes.active_mutes(target, 100.0) == mutes.active_mutes(source, 100.0)
        assert parked.parked_of(target, "alice", 100.0) == parked.parked_of(source, "alice", 100.0)
        # New rows continue after the copied ids in every table that has them.
        assert audit.append(target, 110.0, "admin", "cli", "unban", None, None, None, "a") == 2
        # The ids went along, and new rows continue after them.
        assert target.record_login("bob", "tel/1", "10.0.0.2", 50.0) == 4
        keys = target.host_keys()
        assert sorted(keys) == ["ed25519", "rsa"]
        assert keys["ed25519"] == (data / "ssh" / "ssh_host_ed25519_key").read_bytes()
    finally:
        source.close()
        target.close()


def test_a_database_that_holds_anything_is_refused_without_force(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    data = filled_data_dir(tmp_path)
    url = postgres.new_database()
    target = PostgresAccountDB.at(parse_postgres_url(url), size=1)
    target.create("mallory", "h")
    target.close()
    refused = cli(data, "store", "copy", "--to", url)
    assert refused.returncode == 1
    assert refused.stderr == (
        f"shellserver store: the store at {url} is not empty (it has users); "
        "give --force to replace what it holds\n"
    )
    forced = cli(data, "store", "copy", "--to", url, "--force")
    assert forced.returncode == 0, forced.stderr
    target = PostgresAccountDB.at(parse_postgres_url(url), size=1)
    try:
        assert [a.name for a in target.users()] == ["admin", "alice", "bob"]
    finally:
        target.close()


def test_bad_target_urls_are_usage_errors_without_the_password(tmp_path: Path) -> None:
    done = cli(tmp_path / "data", "store", "copy", "--to", "postgresql://u:hunter22@db")
    assert done.returncode == 2
    assert "no database named" in done.stderr and "hunter22" not in done.stderr


def test_a_running_servers_store_is_copied_and_a_node_on_it_lets_its_users_in(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """From one machine to two: copy while the first server runs, start a node on the copy."""
    url = postgres.new_database()
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = RealServer(tmp_path / "one").start()
    try:
        register(one.port, "alice").close()
        done = cli(one.data, "store", "copy", "--to", url)
        assert done.returncode == 0, done.stderr
        assert "  users: 2" in done.stdout  # admin and alice
    finally:
        one.stop()
    two = RealServer(tmp_path / "two", "--store", url).start()
    try:
        c = login(two.port, "alice", PASSWORD)
        c.send_line("last")
        c.expect("alice")
        c.close()
        # The node found its first admin in the store: it made none of its own.
        assert not (two.data / "initial-admin-password").exists()
    finally:
        two.stop()
