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
