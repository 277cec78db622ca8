"""``shellserver_store_up``'s check: a ping on the store's runner every 5 s, the outage logged
once and its end once, and no pile of pings behind a stalled database thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from shellserver.ops.threads import inline_runner
from shellserver.store.accounts import AccountDB, StoreUnavailable
from shellserver.store.health import PERIOD, StoreProbe


def test_an_outage_is_reported_and_logged_once_and_so_is_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = AccountDB.open(str(tmp_path / "a.sqlite3"))
    clock = Clock()
    seen: list[bool] = []
    lines: list[tuple[Any, str]] = []

    def observe(event: dict[str, Any]) -> None:
        if "store" in event.get("log_format", ""):
            lines.append((event["log_level"], formatEvent(event)))

    def down() -> None:
        raise StoreUnavailable("the store at postgresql://app@db/shell: connection refused")

    globalLogPublisher.addObserver(observe)
    try:
        probe = StoreProbe(db, inline_runner, clock, seen.append)
        probe.start()
        assert seen == [True] and lines == []
        monkeypatch.setattr(db.sql, "ping", down)
        for _ in range(3):
            clock.advance(PERIOD)
        assert seen == [True, False, False, False]
        monkeypatch.undo()
        clock.advance(PERIOD)
        assert seen[-1] is True
        probe.stop()
    finally:
        globalLogPublisher.removeObserver(observe)
        db.close()
    assert [level for level, _ in lines] == [LogLevel.critical, LogLevel.info]
    assert (
        "is unavailable: the store at postgresql://app@db/shell: connection refused"
        in (lines[0][1])
    )
    assert "answers again" in lines[1][1]


def test_a_check_waiting_on_a_stalled_thread_is_not_asked_again(tmp_path: Path) -> None:
    db = AccountDB.open(str(tmp_path / "a.sqlite3"))
    clock = Clock()
    held: list[Deferred[Any]] = []

    def stalled(f: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        held.append(d)
        return d

    seen: list[bool] = []
    probe = StoreProbe(db, stalled, clock, seen.append)
    probe.start()
    for _ in range(5):
        clock.advance(PERIOD)
    assert len(held) == 1 and seen == []
    held[0].callback(None)
    assert seen == [True]
    clock.advance(PERIOD)
    assert len(held) == 2
    probe.stop()
    db.close()


def test_store_wait_sets_the_checks_period_and_the_pools_wait(tmp_path: Path) -> None:
    """``--store-wait 1``: a check every second, and PostgreSQL waited for a second; 5 s
    unless given; nonsense refused with the range."""
    from twisted.python.usage import UsageError

    from shellserver.app.tap import Options
    from shellserver.store.postgres import PostgresAccountDB, parse_postgres_url

    default = Options()
    default.parseOptions([])
    assert default.config.store_wait == PERIOD == 5.0
    options = Options()
    options.parseOptions(["--store-wait", "1"])
    assert options.config.store_wait == 1.0
    for bad in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(UsageError, match=r"^--store-wait takes a number of seconds from"):
            Options().parseOptions(["--store-wait", bad])
    pg = PostgresAccountDB(parse_postgres_url("postgresql://app@db/shell"), wait=1.0)
    assert pg.postgres.wait == 1.0
    db = AccountDB.open(str(tmp_path / "a.sqlite3"))
    clock = Clock()
    seen: list[bool] = []
    probe = StoreProbe(db, inline_runner, clock, seen.append, period=1.0)
    probe.start()
    clock.advance(1.0)
    clock.advance(1.0)
    assert seen == [True, True, True]
    probe.stop()
    db.close()
