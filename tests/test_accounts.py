"""The account store on real SQLite files, password hashing, the data dir."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import StoreMaker
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath

from shellserver.ops.datadir import DataDir, DataDirLocked
from shellserver.ops.threads import inline_runner
from shellserver.store import accounts
from shellserver.store.accounts import (
    ROLE_ADMIN,
    ROLE_USER,
    Account,
    AccountDB,
    AccountLocked,
    AccountStore,
    ConstraintFailed,
    LastAdmin,
    LoginFailed,
    NoSuchUser,
    StoreError,
    StoreTooNew,
    UserExists,
    ensure_initial_admin,
    password_problem,
    username_problem,
)
from shellserver.store.passwords import dummy_hash, hash_password, verify_password

COST = 4
DATA = Path(__file__).parent / "data"


def result(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "not fired"
    return box[0]


@pytest.fixture
def db(store_maker: StoreMaker) -> AccountDB:
    """Every test that takes ``db`` runs on SQLite and on PostgreSQL."""
    return store_maker.open()


@pytest.fixture
def store(db: AccountDB) -> AccountStore:
    return AccountStore(db, inline_runner, inline_runner, COST)


# -- passwords ----------------------------------------------------------------------


def test_hash_roundtrip_and_parameters_travel_with_the_hash() -> None:
    h = hash_password("correct horse", COST)
    assert h.startswith("$scrypt$ln=4,r=8,p=1$")
    assert verify_password("correct horse", h)
    assert not verify_password("correct horsf", h)
    assert hash_password("correct horse", COST) != h  # salted


@pytest.mark.parametrize("bad", ["", "plain", "$scrypt$ln=99,r=8,p=1$AA$AA", "$scrypt$ln=4$x$y"])
def test_malformed_hashes_never_match_and_never_raise(bad: str) -> None:
    assert not verify_password("anything", bad)


def test_dummy_hash_is_a_real_hash() -> None:
    assert dummy_hash(COST).startswith("$scrypt$ln=4,")


# -- rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Bob", "9lives", "x" * 33, "", "a b", "bob!", "_x", "é", "evil\n", "bob\n\n"]
)
def test_bad_names(name: str) -> None:
    assert username_problem(name) is not None


def test_reserved_names_only_matter_when_registering() -> None:
    assert username_problem("root", registering=True) == "That name is reserved; choose another."
    assert username_problem("root") is None
    assert username_problem("a" * 32, registering=True) is None
    assert password_problem("1234567") is not None
    assert password_problem("12345678") is None


# -- the store --------------------------------------------------------------------------


def test_create_get_duplicate_delete(db: AccountDB) -> None:
    db.create("root", "h", ROLE_ADMIN)  # alice is not the last administrator
    acc = db.create("alice", "h", now=10.0)
    assert (acc.name, acc.role, acc.locked, acc.created) == ("alice", "user", False, 10.0)
    assert db.get("alice") == acc
    with pytest.raises(UserExists):
        db.create("alice", "h")
    db.set_role("alice", ROLE_ADMIN)
    db.set_locked("alice", True)
    got = db.get("alice")
    assert got is not None and got.is_admin and got.locked
    db.delete("alice")
    assert db.get("alice") is None
    for op in (lambda: db.delete("alice"), lambda: db.set_locked("alice", False)):
        with pytest.raises(NoSuchUser):
            op()


def test_the_last_administrator_is_never_deleted_locked_or_demoted(db: AccountDB) -> None:
    db.create("admin", "h", ROLE_ADMIN)
    db.create("alice", "h")
    refusals = [
        lambda: db.delete("admin"),
        lambda: db.set_locked("admin", True),
        lambda: db.set_role("admin", ROLE_USER),
        lambda: db.apply_batch([("alice", "h2", None), ("admin", "h2", ROLE_USER)]),
    ]
    for refused in refusals:
        with pytest.raises(LastAdmin) as e:
            refused()
        assert str(e.value) == "admin is the last administrator"
    assert db.get("admin") == Account("admin", ROLE_ADMIN, False, db.get("admin").created)  # type: ignore[union-attr]
    assert db.get_hash("alice")[1] == "h"  # type: ignore[index]  # the batch rolled back whole
    db.delete("alice")  # others go as before
    # A second administrator who can log in lets the first go; a locked one does not count.
    db.create("root", "h", ROLE_ADMIN)
    db.set_locked("root", True)
    with pytest.raises(LastAdmin):
        db.delete("admin")
    db.set_locked("root", False)
    db.set_locked("admin", True)
    with pytest.raises(LastAdmin) as e:
        db.delete("root")
    assert str(e.value) == "root is the last administrator"
    db.delete("admin")  # locked: deleting it leaves root
    assert [a.name for a in db.users()] == ["root"]


def test_two_processes_cannot_delete_the_last_two_admins_at_once(store_maker: StoreMaker) -> None:
    """Each check and its delete are one write transaction, across connections."""
    setup = store_maker.open()
    for name in ("ann", "bea"):
        setup.create(name, "h", ROLE_ADMIN)
    for _ in range(20):
        one, two = store_maker.open(), store_maker.open()
        start = threading.Barrier(2)
        outcome: dict[str, str] = {}

        def delete(
            db: AccountDB, name: str, start: threading.Barrier, outcome: dict[str, str]
        ) -> None:
            start.wait()
            try:
                db.delete(name)
                outcome[name] = "deleted"
            except LastAdmin:
                outcome[name] = "refused"

        threads = [
            threading.Thread(target=delete, args=(one, "ann", start, outcome)),
            threading.Thread(target=delete, args=(two, "bea", start, outcome)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcome.values()) == ["deleted", "refused"]
        survivor = one.users()
        assert [a.role for a in survivor] == [ROLE_ADMIN]
        gone = "bea" if survivor[0].name == "ann" else "ann"
        one.create(gone, "h", ROLE_ADMIN)
        one.close()
        two.close()


def test_a_named_store_touches_nothing_until_connected(tmp_path: Path) -> None:
    """The server builds its parts (and so names its store) before it binds its ports, and a
    port in use must leave nothing behind: naming the store creates no file."""
    path = tmp_path / "accounts.sqlite3"
    db = AccountDB(str(path))
    assert not path.exists()
    with pytest.raises(StoreError, match="is not open"):
        db.get("alice")
    db.close()  # a store never opened: nothing to close, no error
    db.connect()
    assert path.exists()
    assert db.get("alice") is None
    db.close()


def test_wal_mode_and_private_file(tmp_path: Path) -> None:
    db = AccountDB.open(str(tmp_path / "a.sqlite3"))
    conn = sqlite3.connect(db.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert os.stat(db.path).st_mode & 0o777 == 0o600


def test_login_history(db: AccountDB) -> None:
    first = db.record_login("alice", "tel/0", "10.0.0.1", 100.0)
    db.record_login("bob", "tel/1", "10.0.0.2", 200.0)
    db.record_logout(first, 150.0)
    third = db.record_login("alice", "tel/2", "10.0.0.3", 300.0)
    assert [r.id for r in db.history()] == [third, 2, first]
    assert [r.tty for r in db.history("alice")] == ["tel/2", "tel/0"]
    last = db.last_login("alice")
    assert last is not None and last.login == 300.0 and last.logout is None
    assert db.close_open_logins(400.0) == 2
    assert all(r.logout is not None for r in db.history())
    assert db.last_login("nobody") is None


def test_apply_batch_is_all_or_nothing(db: AccountDB) -> None:
    db.create("alice", "old")
    with pytest.raises(ConstraintFailed):
        db.apply_batch([("alice", "new", None), ("bob", "h", "bogus-role")])
    assert db.get_hash("alice") == (db.get("alice"), "old")
    assert db.get("bob") is None
    created = db.apply_batch([("alice", "new", ROLE_ADMIN), ("bob", "h", None)])
    assert created == ["bob"]
    alice = db.get("alice")
    assert alice is not None and alice.is_admin
    assert db.get_hash("alice") == (alice, "new")


def test_newer_store_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "new.sqlite3")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StoreTooNew, match="schema version 99"):
        AccountDB.open(path)


def test_older_store_is_copied_then_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "old.sqlite3")
    AccountDB.open(path).close()  # today's version
    current = accounts.SCHEMA_VERSION

    def add_column(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE users ADD COLUMN shell TEXT")

    monkeypatch.setattr(accounts, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(accounts.MIGRATIONS, current, add_column)
    db = AccountDB.open(path)
    db.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == current + 1
    assert "shell" in [row[1] for row in conn.execute("PRAGMA table_info(users)")]
    conn.close()
    backup = sqlite3.connect(f"{path}.v{current}.bak")
    assert backup.execute("PRAGMA user_version").fetchone()[0] == current
    backup.close()


def test_store_made_by_schema_1_code_is_migrated(tmp_path: Path) -> None:
    """tests/data/store-v1.sqlite was made by the server before saved messages existed."""
    path = tmp_path / "accounts.sqlite3"
    shutil.copyfile(DATA / "store-v1.sqlite", path)
    db = AccountDB.open(str(path))
    try:
        assert [a.name for a in db.users()] == ["admin", "alice", "bob"]
        assert db.get_hash("alice") is not None
        assert [r.user for r in db.history()] == ["alice"]
        tables = {r[0] for r in db._db.execute("SELECT name FROM sqlite_master")}
        assert {"messages", "ignores"} <= tables
        assert db._db.execute("PRAGMA user_version").fetchone()[0] == accounts.SCHEMA_VERSION
    finally:
        db.close()
    backup = sqlite3.connect(f"{path}.v1.bak")
    assert [r[0] for r in backup.execute("SELECT name FROM users ORDER BY name")] == [
        "admin",
        "alice",
        "bob",
    ]
    assert backup.execute("PRAGMA user_version").fetchone()[0] == 1
    backup.close()


def test_the_copy_kept_before_a_migration_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "accounts.sqlite3"
    shutil.copyfile(DATA / "store-v1.sqlite", path)
    old = os.umask(0o022)
    try:
        AccountDB.open(str(path)).close()
    finally:
        os.umask(old)
    # Password hashes, like the store itself.
    assert stat.S_IMODE(os.stat(f"{path}.v1.bak").st_mode) == 0o600


# -- the async face ---------------------------------------------------------------------


def test_authenticate(store: AccountStore) -> None:
    result(store.create_user("alice", "password1"))
    assert result(store.authenticate("alice", "password1")).name == "alice"
    assert result(store.authenticate("alice", "wrong")).check(LoginFailed)
    assert result(store.authenticate("ghost", "password1")).check(LoginFailed)
    store.db.set_locked("alice", True)
    assert result(store.authenticate("alice", "wrong")).check(LoginFailed)
    assert result(store.authenticate("alice", "password1")).check(AccountLocked)


def test_unknown_users_are_hashed_too(
    store: AccountStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    pooled: list[str] = []
    checked: list[str] = []

    def counting(f: Any, *args: Any) -> Deferred[Any]:
        pooled.append(f.__name__)
        return inline_runner(f, *args)

    def verify(password: str, stored: str) -> bool:
        checked.append(stored)
        return verify_password(password, stored)

    monkeypatch.setattr(accounts, "verify_password", verify)
    store.run_hash = counting
    result(store.authenticate("ghost", "x"))
    result(store.authenticate("ghost", "x"))
    assert pooled.count("dummy_hash") == 1  # the dummy is made on the pool, once
    # ... and every unknown name is checked against it, as a known name is against its hash
    assert len(checked) == 2 and checked[0] == checked[1]


def test_old_cost_hashes_still_verify(store: AccountStore) -> None:
    store.db.create("old", hash_password("password1", 5))
    assert result(store.authenticate("old", "password1")).name == "old"


def test_set_and_check_password(store: AccountStore) -> None:
    result(store.create_user("alice", "password1"))
    result(store.set_password("alice", "password2"))
    assert result(store.check_password("alice", "password2")) is True
    assert result(store.check_password("alice", "password1")) is False
    assert result(store.check_password("ghost", "password1")) is False


# -- the data dir -----------------------------------------------------------------------


def test_data_dir_is_private_and_locked_once(tmp_path: Path) -> None:
    path = FilePath(str(tmp_path / "data"))
    d = DataDir(path)
    d.create()
    assert os.stat(path.path).st_mode & 0o777 == 0o700
    d.lock()
    assert d.is_locked()
    with pytest.raises(DataDirLocked, match=rf"pid {os.getpid()}"):
        DataDir(path).lock()
    d.unlock()
    assert not d.is_locked()
    DataDir(path).lock()


def test_initial_admin_written_0600_only_on_an_empty_store(tmp_path: Path, db: AccountDB) -> None:
    d = DataDir(FilePath(str(tmp_path / "data")))
    d.create()
    written = ensure_initial_admin(db, d, COST)
    assert written is not None
    assert os.stat(written.path).st_mode & 0o777 == 0o600
    password = written.getContent().decode().strip()
    admin = db.get_hash("admin")
    assert admin is not None and admin[0].is_admin and verify_password(password, admin[1])
    assert ensure_initial_admin(db, d, COST) is None
    assert sorted(p.basename() for p in d.path.children()) == ["home", "initial-admin-password"]


def test_a_hash_at_another_cost_is_replaced_at_the_next_successful_login(
    store: AccountStore,
) -> None:
    store.db.create("old", hash_password("password1", 5))
    assert result(store.authenticate("old", "wrong-one")).check(LoginFailed)
    found = store.db.get_hash("old")
    assert found is not None and found[1].startswith("$scrypt$ln=5,")  # not on a failure
    assert result(store.authenticate("old", "password1")).name == "old"
    found = store.db.get_hash("old")
    assert found is not None and found[1].startswith(f"$scrypt$ln={store.hash_cost},")
    assert result(store.authenticate("old", "password1")).name == "old"


def test_rehash_never_overwrites_a_password_changed_meanwhile(db: AccountDB) -> None:
    db.create("alice", "$scrypt$ln=5,r=8,p=1$old$old")
    db.set_password_hash("alice", "changed")
    assert not db.replace_hash("alice", "$scrypt$ln=5,r=8,p=1$old$old", "rehashed")
    assert db.get_hash("alice")[1] == "changed"  # type: ignore[index]
    assert db.replace_hash("alice", "changed", "rehashed")


def test_needs_rehash() -> None:
    from shellserver.store.passwords import needs_rehash

    assert not needs_rehash(hash_password("x", 4), 4)
    assert needs_rehash(hash_password("x", 4), 5)
    assert needs_rehash("garbage", 4)
