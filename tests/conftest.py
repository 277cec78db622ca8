"""Shared fixtures: an error observer so unhandled errors fail the test that caused them.

Also what keeps ``make test-fast`` fast and honest: tests that start real processes
(``twistd``, ``redis-server``, a browser) are marked ``integration`` here by the fixtures
they use (:data:`REAL_FIXTURES`) or their folder, and one that is not marked but starts
one anyway fails, saying so (:func:`_guard`).
"""

from __future__ import annotations

import gc
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pgserver import PostgresServer
from realserver import RealServer
from redisserver import RedisServer
from twisted.logger import globalLogPublisher

from shellserver.store.accounts import AccountDB


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


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what exists once the tests are collected (the modules, the test items): each
    test ends with a full collection (:func:`logged_errors`), and walking that whole heap
    again and again was most of the unit tests' time (76 ms a test). A test's garbage is
    younger than the freeze, so it is still found."""
    gc.collect()
    gc.freeze()


_unfreeze = gc.unfreeze
#: Whether something (the GC policy's ``stop``) unfroze the heap since the last freeze:
#: ``gc.get_freeze_count()`` would say so too, but walks every frozen object to count them.
_unfrozen = False


def _noted_unfreeze() -> None:
    global _unfrozen
    _unfrozen = True
    _unfreeze()


gc.unfreeze = _noted_unfreeze


@pytest.fixture(autouse=True)
def logged_errors() -> Iterator[LoggedErrors]:
    errors = LoggedErrors()
    globalLogPublisher.addObserver(errors)
    try:
        yield errors
        gc.collect()  # unhandled errors in garbage Deferreds are logged now
        global _unfrozen
        if _unfrozen:  # a test unfroze everything (the GC policy's stop): freeze again
            _unfrozen = False
            gc.freeze()
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run (tests/pgserver.py); each test that uses it
    takes a database of its own. Its directory is made outside pytest's (which is private to
    the user running the tests), so the server's own user can reach it when that is not us."""
    workdir = Path(tempfile.mkdtemp(prefix="shellserver-pg-"))
    try:
        server = PostgresServer(workdir)
    except BaseException:
        os.rmdir(workdir)
        raise
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.fixture
def own_postgres(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """A PostgreSQL server the test may stop and start (an outage): the run's one server,
    which no other test uses meanwhile (they run one at a time, each on a database of its
    own), started again after the test if it left it stopped. An ``initdb`` costs seconds."""
    try:
        yield postgres
    finally:
        if postgres.proc is None:
            postgres.start()


class StoreMaker:
    """One store of each kind for a test: :meth:`open` gives a connection to it (several
    calls, several connections to the same store, as two processes or two nodes have)."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.opened: list[AccountDB] = []
        if kind == "sqlite":
            self.location = str(tmp_path / "a.sqlite3")
        else:
            server: PostgresServer = request.getfixturevalue("postgres")
            self.location = server.new_database()

    def open(self) -> AccountDB:
        """A connection to the store, opened (and migrated) now; closed after the test."""
        if self.kind == "sqlite":
            db = AccountDB.open(self.location)
        else:
            from shellserver.store.postgres import PostgresAccountDB, parse_postgres_url

            db = PostgresAccountDB.at(parse_postgres_url(self.location), size=2)
        self.opened.append(db)
        return db

    def close(self) -> None:
        for db in self.opened:
            db.close()


#: The two stores every store test runs on; PostgreSQL starts a server, so it is integration.
STORE_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
]


@pytest.fixture(params=STORE_KINDS)
def store_maker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreMaker]:
    """The test once on SQLite, once on PostgreSQL (a database of its own)."""
    maker = StoreMaker(request.param, tmp_path, request)
    try:
        yield maker
    finally:
        maker.close()


#: Fixtures that start a real process (a server, redis-server): a test using one, directly or
#: through another fixture, is an integration test.
REAL_FIXTURES = frozenset({"redis_server", "arena", "postgres", "own_postgres"})

#: Folders whose every test starts the real server.
REAL_FOLDERS = frozenset({"hostile"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``integration`` what starts real processes, so ``-m "not integration"`` (``make
    test-fast``) leaves it out without each test saying so."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if REAL_FIXTURES.intersection(names) or REAL_FOLDERS.intersection(item.path.parts):
            item.add_marker(pytest.mark.integration)


#: Whether the test running now is marked ``integration`` (:func:`_guard`).
_integration_now = True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    global _integration_now
    _integration_now = item.get_closest_marker("integration") is not None
    try:
        yield
    finally:
        _integration_now = True


def _guard(start: Callable[..., Any], what: str) -> Callable[..., Any]:
    """``start`` that fails a test not marked ``integration``: one that slipped through would
    make ``make test-fast`` start servers and outgrow its minute."""

    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not _integration_now:
            pytest.fail(
                f"this test starts {what} but is not marked integration: add "
                "`pytestmark = pytest.mark.integration` (or use a fixture in "
                "conftest.REAL_FIXTURES)",
                pytrace=False,
            )
        return start(self, *args, **kwargs)

    return guarded


RealServer.start = _guard(RealServer.start, "the real server (twistd)")  # type: ignore[method-assign]
RedisServer.start = _guard(RedisServer.start, "a redis-server")  # type: ignore[method-assign]
PostgresServer.start = _guard(PostgresServer.start, "a PostgreSQL server")  # type: ignore[method-assign]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI (``.ci/run`` installs every program the tests use) a skip is a failure:
    a test skipped for a missing program there would hide a missing install step. The one
    exception is marked ``machine_may_refuse``: a FUSE mount, which a container may forbid
    whatever is installed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    allowed = item.get_closest_marker("machine_may_refuse") is not None
    if os.environ.get("CI") and report.skipped and not allowed and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where nothing may be: {reason}"
