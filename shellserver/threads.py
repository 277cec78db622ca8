"""Where blocking work runs: thread pools in the server, inline in tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

Runner = Callable[..., "Deferred[Any]"]


def pool_runner(reactor: Any, pool: ThreadPool) -> Runner:
    def run(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        return deferToThreadPool(reactor, pool, f, *args, **kwargs)

    return run


def inline_runner(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
    return maybeDeferred(f, *args, **kwargs)


def make_pool(name: str, size: int) -> ThreadPool:
    """Not started: the service starts it after twistd daemonises, and stops it at exit."""
    return ThreadPool(minthreads=0, maxthreads=size, name=name)
