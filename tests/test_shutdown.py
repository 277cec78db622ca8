"""The shutdown countdown with a fake clock: cadence, refusing logins, cancel, the stop."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from harness import Client, make_server_with, online
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from shellserver.app.assembly import Assembly
from shellserver.shell.shutdown import CADENCE, Shutdown, parse_when


@pytest.fixture
def stops() -> list[str]:
    """What the schedule's stop (``reactor.stop`` in the service) was called for."""
    return []


@pytest.fixture
def server(tmp_path: Path, stops: list[str]) -> Assembly:
    return make_server_with(tmp_path, ("alice",), stop=lambda: stops.append("stop"))


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """The text of every event logged meanwhile."""
    lines: list[str] = []

    def observe(event: LogEvent) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observe)


def warnings_in(text: str) -> list[int]:
    found = []
    for part in text.split("(in ")[1:]:
        found.append(int(part.split(" ")[0]))
    return found


def test_parse_when() -> None:
    assert parse_when("now", 0) == 0
    assert parse_when("+15", 0) == 15
    assert parse_when("+0", 0) == 0
    for bad in ["15", "5", "-5", "+x", "+-5", "+", "soon", "", "24:00", "12:60", "1:2", "+١٢"]:
        assert parse_when(bad, 0) is None, bad


def test_parse_when_hh_mm_is_the_next_such_local_time() -> None:
    now = datetime(2026, 11, 24, 17, 30, 20).timestamp()  # local time, like the server's clock
    assert parse_when("18:00", now) == pytest.approx(29 + 40 / 60)
    assert parse_when("8:05", now) == pytest.approx((14 * 60 + 34) + 40 / 60)  # tomorrow
    assert parse_when("17:30", now) == pytest.approx(24 * 60 - 20 / 60)  # passed: tomorrow


@pytest.mark.parametrize(
    "line", ["shutdown 5", "shutdown -5", "shutdown 5 back soon", "shutdown soon"]
)
def test_a_time_that_is_no_time_is_a_usage_error(
    server: Assembly, stops: list[str], line: str
) -> None:
    admin = online(server, "root1")
    a = online(server, "alice")
    word = line.split()[1]
    assert admin.run(line) == (
        f"shutdown: invalid time '{word}'\n"
        "Usage: shutdown [+MIN|now|HH:MM] [TEXT...] | shutdown -c\n"
        "root1@testhost:~$ "
    )
    assert a.output() == ""  # nothing broadcast
    assert server.shutdown is not None and server.shutdown.at is None
    server.clock.advance(3600)  # type: ignore[attr-defined]
    assert stops == []


def test_shutdown_at_hh_mm_counts_down_to_that_time(server: Assembly, stops: list[str]) -> None:
    clock = server.clock
    clock.advance(datetime(2026, 11, 24, 17, 30, 20).timestamp())  # type: ignore[attr-defined]
    admin = online(server, "root1")
    a = online(server, "alice")
    out = admin.run("shutdown 18:00 new kernel")
    assert "Shutdown scheduled for Tue 2026-11-24 18:00:00 " in out
    assert "going down at Tue 2026-11-24 18:00:00 " in a.output()
    clock.advance(29 * 60 + 39)  # type: ignore[attr-defined]
    assert stops == []
    clock.advance(1)  # type: ignore[attr-defined]
    assert "The system is going down NOW!\nnew kernel\n" in a.output()
    assert stops == ["stop"]


def test_the_stop_is_logged_as_what_happened(server: Assembly, logged: list[str]) -> None:
    assert server.shutdown is not None
    server.shutdown.schedule(0, "", "root1", "tel/1", "test")
    assert "going down now (shutdown now by root1)" in logged
    assert not any("scheduled" in line for line in logged)
    again = Shutdown(server.clock, server.hub, server.metrics, "testhost", lambda: None)
    again.schedule(1, "", "root1", "tel/1", "test")
    server.clock.advance(60)  # type: ignore[attr-defined]
    assert "going down now (the shutdown root1 scheduled is due)" in logged


def test_warnings_follow_the_systemd_cadence_then_stop(server: Assembly, stops: list[str]) -> None:
    a = online(server, "alice")
    assert server.shutdown is not None
    server.shutdown.schedule(200, "new kernel", "root1", "tel/1", "test")
    seen = warnings_in(a.output())
    assert seen == [200]
    clock = server.clock
    for _ in range(200 * 60):
        clock.advance(1)  # type: ignore[attr-defined]
        seen += warnings_in(a.output())
        if stops:
            break
    assert seen == [200, *CADENCE]
    assert stops == ["stop"]
    assert server.shutdown.final_sent


def test_new_logins_refused_in_the_last_five_minutes_but_not_admins(server: Assembly) -> None:
    assert server.shutdown is not None
    server.shutdown.schedule(6, "", "root1", "tel/1", "test")
    c = Client(server)
    out = c.login("alice")
    assert "The system is going down at" in out and "(in 6 minutes)" in out
    server.clock.advance(61)  # type: ignore[attr-defined]
    c2 = Client(server)
    out = c2.login("alice")
    assert "new logins are refused" in out and c2.disconnecting
    assert "root1@testhost" in Client(server).login("root1")


def test_cancel_tells_everyone_and_stops_the_countdown(server: Assembly, stops: list[str]) -> None:
    admin = online(server, "root1")
    a = online(server, "alice")
    out = admin.run("shutdown +10 back soon")
    assert "Shutdown scheduled for" in out
    # The reason stands on its own line after the warning, not as "^J".
    assert "(in 10 minutes)!\nback soon\n" in a.output()
    admin.run("shutdown -c")
    assert "The system shutdown has been cancelled." in a.output()
    server.clock.advance(3600)  # type: ignore[attr-defined]
    assert stops == []
    assert admin.run("shutdown -c").startswith("shutdown: no shutdown is scheduled")


def test_shutdown_now_and_usage(server: Assembly, stops: list[str]) -> None:
    admin = online(server, "root1")
    assert admin.run("shutdown +x").startswith("shutdown: invalid time '+x'\nUsage:")
    a = online(server, "alice")
    admin.run("shutdown now bye all")
    # The admin's text is shown with the final notice, as with "+MIN TEXT".
    assert "The system is going down NOW!\nbye all\n" in a.output()
    assert stops == ["stop"]


def test_the_final_notice_after_a_countdown_repeats_the_text(
    server: Assembly, stops: list[str]
) -> None:
    a = online(server, "alice")
    assert server.shutdown is not None
    server.shutdown.schedule(1, "new kernel", "root1", "tel/1", "test")
    a.output()
    server.clock.advance(60)  # type: ignore[attr-defined]
    assert "The system is going down NOW!\nnew kernel\n" in a.output()
    assert stops == ["stop"]


def test_shutdown_is_admin_only(server: Assembly) -> None:
    assert online(server, "alice").run("shutdown now").startswith("shutdown: permission denied")


def test_final_notice_is_sent_once(server: Assembly) -> None:
    a = online(server, "alice")
    assert server.shutdown is not None
    server.shutdown.final_notice()
    server.shutdown.final_notice()
    assert a.output().count("going down NOW") == 1


def test_the_reason_is_sanitised_everywhere_it_is_shown(server: Assembly) -> None:
    admin = online(server, "root1")
    a = online(server, "alice")
    assert server.shutdown is not None
    server.shutdown.schedule(30, "evil \x1b[2J reason", "root1", "tel/1", "test")
    assert "evil ^[[2J reason" in a.output()
    out = Client(server).login("alice")
    assert "evil ^[[2J reason" in out and "\x1b[2J" not in out
    admin.drop()
