"""The worker pool: calls run on its threads, results and errors come back through the reactor."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from shellserver.ops.threads import WorkerPool, pool_runner


class FakeReactor:
    """Records ``callFromThread`` calls; the test runs them as the reactor thread would."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.lock = threading.Lock()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        with self.lock:
            self.calls.append((f, args))

    def run(self) -> None:
        for f, args in self.calls:
            f(*args)
        self.calls.clear()


def test_results_and_errors_come_back_in_the_reactor_thread_and_stop_finishes_the_queue() -> None:
    reactor, pool = FakeReactor(), WorkerPool("test", 2)
    pool.start()
    run = pool_runner(reactor, pool)
    where: list[str] = []

    def work(x: int, y: int = 0) -> int:
        where.append(threading.current_thread().name)
        return x + y

    got: list[Any] = []
    failures: list[Any] = []
    for i in range(20):
        run(work, i, y=1).addCallback(got.append)
    run(lambda: 1 // 0).addErrback(failures.append)
    pool.stop()  # every queued call is done before the threads end
    assert not pool.started
    assert got == []  # nothing fires outside the reactor thread
    reactor.run()
    assert sorted(got) == list(range(1, 21))
    assert set(where) <= {"test-0", "test-1"}
    assert len(failures) == 1 and failures[0].check(ZeroDivisionError)
    assert not [t for t in threading.enumerate() if t.name.startswith("test-")]


def test_a_pool_stopped_before_it_started_has_nothing_to_do() -> None:
    pool = WorkerPool("idle", 3)
    pool.stop()
    pool.start()
    pool.start()  # once
    assert len([t for t in threading.enumerate() if t.name.startswith("idle-")]) == 3
    pool.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("idle-")]


def test_one_thread_keeps_the_order() -> None:
    reactor, pool = FakeReactor(), WorkerPool("db", 1)
    pool.start()
    order: list[int] = []
    for i in range(50):
        pool.call(reactor, order.append, i)
    pool.stop()
    assert order == list(range(50))
