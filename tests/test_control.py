"""The control socket's pieces that need no socket."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from shellserver.cli import status_text
from shellserver.control import rfc3339


@pytest.fixture
def india(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "IST-5:30")  # a POSIX TZ string: no tzdata needed
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_login_times_are_rfc3339_with_a_colon_in_the_offset(india: None) -> None:
    assert rfc3339(0) == "1970-01-01T05:30:00+05:30"
    assert rfc3339(1_795_000_000.9) == "2026-11-18T16:36:40+05:30"  # fractions dropped


@pytest.mark.parametrize(
    "uptime, said",
    [(300, "up 5 min, "), (7260, "up 2:01, "), (3 * 86400 + 7260, "up 3 days, 2:01, ")],
)
def test_status_says_uptime_as_the_docs_do(uptime: float, said: str) -> None:
    reply = {"hostname": "box", "pid": 42, "uptime": uptime, "sessions": 1, "users": 1}
    assert status_text(reply) == f"shellserver on box is running: pid 42, {said}1 session, 1 user"
