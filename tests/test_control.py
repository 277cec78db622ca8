"""The control socket's pieces that need no socket."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

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
