"""Homes that other processes change too: clustered nodes sharing one data dir.

A home's usage is measured once and then kept up to date by each operation
(tree.py), which is only right while this process is the home's only
writer. With several nodes on one data dir, each job on a home runs under an
exclusive ``flock`` of ``<data>/homelocks/USER`` (``DIR/.locks/USER`` with
``--homes DIR``, ``Homes.locks``): one process at a time works
on a home, so a quota check and the write it allows stay one step across
processes. The lock file also holds a stamp, renewed by every job that
changed the home's usage; a process that finds a stamp it did not see last
measures the home again before the job. Jobs that change nothing (reads,
listings) leave the stamp alone, so nodes do not measure each other's homes
over and over.

Everything here blocks: it runs on an I/O thread, like the jobs it wraps.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from typing import Any, TypeVar

from shellserver.files.sandbox import FsError
from shellserver.files.tree import Tree, Usage

T = TypeVar("T")
STAMP_SIZE = 16


def _snapshot(usage: Usage | None) -> tuple[int, int] | None:
    return None if usage is None else (usage.bytes, usage.entries)


def run_shared(locks: str, tree: Tree, job: Callable[..., T], *args: Any) -> T:
    """``job(tree, *args)`` holding the home's lock, with its usage current."""
    os.makedirs(locks, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(locks, tree.user), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        stamp = os.pread(fd, STAMP_SIZE, 0)
        if stamp != tree.stamp:
            tree.usage = None  # another process changed the home since we last looked
            tree.stamp = stamp
        if tree.usage is None:
            # Measured here, not inside the job, so a measurement alone is not a change.
            with contextlib.suppress(FsError, OSError):
                tree.open_home()
        before = _snapshot(tree.usage)
        try:
            return job(tree, *args)
        finally:
            after = _snapshot(tree.usage)
            if after != before:
                tree.stamp = os.urandom(STAMP_SIZE)
                os.pwrite(fd, tree.stamp, 0)
    finally:
        os.close(fd)  # closing releases the lock


def measure_again(locks: str, tree: Tree) -> None:
    """``Tree.measure_again`` holding the home's lock (a user's first session is starting).

    What it finds may differ from what the other processes count (an operator's
    files): the stamp is renewed, so they measure too, unless this process wrote the
    stamp last and counted exactly this, in which case everyone agrees already.
    """
    os.makedirs(locks, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(locks, tree.user), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        stamp = os.pread(fd, STAMP_SIZE, 0)
        known = _snapshot(tree.usage) if stamp == tree.stamp else None
        tree.stamp = stamp
        try:
            tree.measure_again()
        finally:
            if _snapshot(tree.usage) != known:
                tree.stamp = os.urandom(STAMP_SIZE)
                os.pwrite(fd, tree.stamp, 0)
    finally:
        os.close(fd)  # closing releases the lock


def changed(locks: str, user: str) -> None:
    """The home was replaced or moved away (userdel, a new account): every process measures it
    again. Called under the home's queue in this process."""
    os.makedirs(locks, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(locks, user), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, os.urandom(STAMP_SIZE), 0)
    finally:
        os.close(fd)
