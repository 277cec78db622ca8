"""Where blocking work runs: worker threads in the server, inline in tests."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

Runner = Callable[..., "Deferred[Any]"]
_Job = tuple["Deferred[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class WorkerPool:
    """A fixed set of threads taking calls from one queue; results come back by ``callFromThread``.

    Twisted's ``ThreadPool`` + ``deferToThreadPool`` spend 13-25 µs of CPU per
    call on dispatch (``Team``, context copies) before any work; a login makes
    three or four such calls (docs/performance.md). This is a ``SimpleQueue``
    and a loop. Not started when made: the service starts it after twistd
    daemonises and stops it at exit (its threads are not daemonic, so work
    queued before the stop, such as logout records, is done first).
    """

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.started = False
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._reactor: Any = None

    def start(self) -> None:
        """Called by the service after twistd has forked: threads started before the fork would
        not exist in the daemon. Starting twice is harmless (the service and tests both may)."""
        if self.started:
            return
        self.started = True
        for i in range(self.size):
            t = threading.Thread(target=self._work, name=f"{self.name}-{i}")
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Finish what is queued, then end the threads."""
        if not self.started:
            return
        self.started = False
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()
        self._threads = []

    def call(
        self, reactor: Any, f: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Deferred[Any]:
        """Queue ``f`` and return at once, on the reactor thread; the Deferred fires there too
        (``callFromThread``), so callbacks never run on a worker and need no lock."""
        d: Deferred[Any] = Deferred()
        self._reactor = reactor
        self._queue.put((d, f, args, kwargs))
        return d

    def _work(self) -> None:
        get = self._queue.get
        while True:
            job = get()
            if job is None:
                return
            d, f, args, kwargs = job
            del job
            reactor = self._reactor
            try:
                result = f(*args, **kwargs)
            except BaseException:
                reactor.callFromThread(d.errback, Failure())
            else:
                reactor.callFromThread(d.callback, result)
            del d, f, args, kwargs


def pool_runner(reactor: Any, pool: WorkerPool) -> Runner:
    """The :data:`Runner` the store and the homes are given: they call ``run(f, ...)`` knowing
    neither pool nor reactor, so tests and the CLI hand them :func:`inline_runner` instead."""

    def run(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        return pool.call(reactor, f, *args, **kwargs)

    return run


def inline_runner(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    """The same code path with no thread (tests, the CLI on a stopped server): the Deferred has
    already fired, so a ``Clock`` test needs no reactor to see the result."""
    return maybeDeferred(f, *args, **kwargs)


def make_pool(name: str, size: int) -> WorkerPool:
    """Not started: the service starts it after twistd daemonises, and stops it at exit."""
    return WorkerPool(name, size)
