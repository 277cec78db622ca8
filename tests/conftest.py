"""Shared fixtures: an error observer so unhandled errors fail the test that caused them."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from realserver import RealServer
from redisserver import RedisServer
from twisted.logger import globalLogPublisher


class LoggedErrors:
    """Errors logged during a test; a test that expects some takes them with :meth:`flush`."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            self.events.append(event)

    def flush(self, *types: type[BaseException]) -> list[dict[str, Any]]:
        taken = [
            e
            for e in self.events
            if not types or (e.get("log_failure") is not None and e["log_failure"].check(*types))
        ]
        self.events = [e for e in self.events if e not in taken]
        return taken


@pytest.fixture(autouse=True)
def logged_errors() -> Iterator[LoggedErrors]:
    errors = LoggedErrors()
    globalLogPublisher.addObserver(errors)
    try:
        yield errors
        gc.collect()  # unhandled errors in garbage Deferreds are logged now
    finally:
        globalLogPublisher.removeObserver(errors)
    if errors.events:
        lines = []
        for event in errors.events:
            failure = event.get("log_failure")
            lines.append(failure.getTraceback() if failure is not None else repr(event))
        pytest.fail("errors were logged during the test:\n" + "\n".join(lines))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RealServer]:
    """The real server (twistd -n shellserver) on loopback, in a temp dir."""
    srv = RealServer(tmp_path).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of its own (tests/redisserver.py), running; stopped even on failure."""
    redis = RedisServer(tmp_path / "redis")
    try:
        yield redis.start()
    finally:
        redis.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI (``.ci/run`` installs every program the tests use) a skip is a failure:
    a test skipped for a missing program there would hide a missing install step."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where nothing may be: {reason}"
