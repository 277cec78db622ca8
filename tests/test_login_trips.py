"""How many trips to the store a plain password login makes: each is a thread hand-off and a
reactor wake-up in the real server, so each one saved is saved on every login."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import COST, Client, Counting, add_user, make_server

from shellserver.ops.threads import inline_runner
from shellserver.store.accounts import AccountDB, AccountStore


@pytest.mark.parametrize("linger", [0, 300])
def test_a_password_login_without_a_second_factor_asks_the_store_three_times(
    tmp_path: Path, linger: int
) -> None:
    runner = Counting()
    db = AccountDB.open(str(tmp_path / "accounts.sqlite3"))
    store = AccountStore(db, runner, inline_runner, COST)
    server = make_server(tmp_path, store=store, linger=linger)
    add_user(server, "alice")
    client = Client(server)
    runner.calls.clear()
    out = client.login("alice")
    assert out.rstrip().endswith("$"), out
    # The account, its hash and whether it has a second factor; (with --linger) its parked
    # sessions together with what the session's start reads; the login record.
    middle = "_parked_and_state" if linger else "login_state"
    assert runner.calls == ["_read_and_check_cheap", middle, "_take_logins"], runner.calls
