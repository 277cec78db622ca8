"""Logins are recorded in batches: the ones asked for while the database thread is busy are
written together in its next trip, one transaction, each caller getting its own row id."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import StoreMaker
from twisted.internet.defer import Deferred

from shellserver.ops.threads import inline_runner
from shellserver.store.accounts import AccountDB, AccountStore


class Held:
    """A database runner whose calls wait until released, one at a time, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, f: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((f, args, d))
        return d

    def release(self) -> None:
        f, args, d = self.calls.pop(0)
        try:
            result = f(*args)
        except Exception as e:
            d.errback(e)
        else:
            d.callback(result)


@pytest.fixture
def db(store_maker: StoreMaker) -> AccountDB:
    """Each test on SQLite and on PostgreSQL."""
    return store_maker.open()


def test_logins_asked_for_meanwhile_go_in_one_trip(db: AccountDB) -> None:
    held = Held()
    store = AccountStore(db, held, inline_runner, 4)
    got: list[int] = []
    store.record_login("a", "tel/0", "p", 1.0).addCallback(got.append)
    assert len(held.calls) == 1
    for i in range(1, 4):
        store.record_login(f"u{i}", f"tel/{i}", "p", 2.0).addCallback(got.append)
    assert len(held.calls) == 1  # the others wait for the trip in flight...
    held.release()
    assert len(set(got)) == 4 and not held.calls  # ...which takes them all when it runs
    store.record_login("b", "tel/4", "p", 3.0).addCallback(got.append)
    held.release()
    assert len(set(got)) == 5
    rows = {r.user: r.tty for r in db.history(None, 10)}
    assert rows == {"a": "tel/0", "u1": "tel/1", "u2": "tel/2", "u3": "tel/3", "b": "tel/4"}


def test_a_failed_batch_fails_every_login_in_it(db: AccountDB) -> None:
    held = Held()
    store = AccountStore(db, held, inline_runner, 4)
    failed: list[Any] = []
    for i in range(3):
        store.record_login(f"u{i}", "tel/9", "p", 2.0).addErrback(failed.append)

    def broken(entries: Any) -> list[int]:
        raise OSError(28, "No space left on device")

    db.record_logins = broken  # type: ignore[method-assign]
    held.release()
    assert len(failed) == 3 and all(f.check(OSError) for f in failed)
    del db.record_logins
    ok: list[int] = []
    store.record_login("b", "tel/1", "p", 3.0).addCallback(ok.append)
    held.release()
    assert ok  # the next login is recorded as usual
