"""twisted.cred over the store: one store round trip for the account per password login."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import Counting
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from zope.interface import Interface

from shellserver.store.accounts import Account, AccountDB, AccountLocked, AccountStore, LoginFailed
from shellserver.store.auth import IAccount, make_portal
from shellserver.store.passwords import hash_password, is_cheap


@pytest.fixture
def store(tmp_path: Path) -> AccountStore:
    db = AccountDB.open(str(tmp_path / "accounts.sqlite3"))
    s = AccountStore(db, Counting(), Counting(), 4)
    s.create_user("alice", "password1")
    s.create_user("bob", "password1")
    s.set_locked("bob", True)
    s.run_db.calls.clear()  # type: ignore[attr-defined]
    s.run_hash.calls.clear()  # type: ignore[attr-defined]
    return s


def _login(store: AccountStore, name: str, password: str) -> Any:
    portal = make_portal(store)
    results: list[Any] = []
    portal.login(UsernamePassword(name.encode(), password.encode()), None, IAccount).addBoth(
        results.append
    )
    return portal, results[0]


def test_a_password_login_reads_the_account_once(store: AccountStore) -> None:
    portal, (iface, account, _) = _login(store, "alice", "password1")
    assert iface is IAccount and isinstance(account, Account) and account.name == "alice"
    assert len(store.run_db.calls) == 1  # type: ignore[attr-defined]
    assert portal.realm.checked == {}  # type: ignore[attr-defined]


def test_failed_and_locked_logins_leave_nothing_behind(store: AccountStore) -> None:
    portal, failure = _login(store, "alice", "wrong-password")
    assert failure.check(UnauthorizedLogin)
    portal, failure = _login(store, "bob", "password1")
    assert failure.check(AccountLocked)
    assert portal.realm.checked == {}  # type: ignore[attr-defined]


def test_a_refused_interface_leaves_nothing_behind(store: AccountStore) -> None:
    portal = make_portal(store)
    results: list[Any] = []
    creds = UsernamePassword(b"alice", b"password1")
    portal.login(creds, None, Interface).addBoth(results.append)
    assert results[0].check(NotImplementedError)
    assert portal.realm.checked == {}  # type: ignore[attr-defined]


def test_the_realm_alone_reads_the_store(store: AccountStore) -> None:
    portal = make_portal(store)
    results: list[Any] = []
    portal.realm.requestAvatar(b"alice", None, IAccount).addBoth(results.append)
    assert results[0][1].name == "alice"
    assert store.run_db.calls == ["get"]  # type: ignore[attr-defined]


def _authenticate(store: AccountStore, name: str, password: str) -> Any:
    results: list[Any] = []
    store.authenticate(name, password).addBoth(results.append)
    return results[0]


def test_a_cheap_hash_is_checked_on_the_thread_that_read_it(store: AccountStore) -> None:
    assert _authenticate(store, "alice", "password1").name == "alice"
    assert _authenticate(store, "alice", "wrong-password").check(LoginFailed)
    assert store.run_db.calls == ["_read_and_check_cheap"] * 2  # type: ignore[attr-defined]
    assert store.run_hash.calls == []  # type: ignore[attr-defined]


def test_a_dear_hash_goes_to_the_hashing_pool(store: AccountStore) -> None:
    store.db.set_password_hash("alice", hash_password("password1", 6))
    assert _authenticate(store, "alice", "wrong-password").check(LoginFailed)
    assert _authenticate(store, "alice", "password1").name == "alice"
    calls = store.run_hash.calls  # type: ignore[attr-defined]
    # then the login rehashes at the store's cost (cheap: checked on the db thread from now on)
    assert calls == ["verify_password", "verify_password", "hash_password"]


def test_unknown_users_take_the_path_of_the_dummy_hash(store: AccountStore) -> None:
    # The first makes the dummy hash on the pool (at the store's cost, 4: cheap) and checks it
    # there; later ones check it on the database thread like a known user's cheap hash.
    assert _authenticate(store, "nobody1", "password1").check(LoginFailed)
    assert _authenticate(store, "nobody1", "password1").check(LoginFailed)
    calls = store.run_hash.calls  # type: ignore[attr-defined]
    assert calls == ["dummy_hash", "verify_password"]


def test_is_cheap() -> None:
    assert is_cheap(hash_password("x", 4)) and is_cheap(hash_password("x", 5))
    assert not is_cheap(hash_password("x", 6))
    assert not is_cheap("$scrypt$ln=99,r=8,p=1$abc$def") and not is_cheap("nonsense")
