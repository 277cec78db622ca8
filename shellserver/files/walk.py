"""Whole trees, however deep: measured and removed without recursion and without paths.

A tree planted by an operator may be thousands of levels deep, deeper than
``PATH_MAX`` and than Python's recursion limit (``shutil.rmtree`` raises
``RecursionError`` on it). These walks keep one directory descriptor open at
a time, step down with ``openat(O_NOFOLLOW)`` and back up through ``..``,
and keep only names on their stack. Symlinks are never followed: they are
counted and removed as entries.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable

from attrs import define

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@define
class Totals:
    """Bytes in regular files and entries (files, directories, links) below a directory."""

    bytes: int = 0
    entries: int = 0
    depth: int = 0


def _scan(fd: int, remove: bool, totals: Totals) -> list[str]:
    """Count (and unlink, if removing) the non-directories in ``fd``; return the subdirectories."""
    subdirs: list[str] = []
    with os.scandir(fd) as it:
        entries = list(it)
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        totals.entries += 1
        if stat.S_ISDIR(st.st_mode):
            subdirs.append(entry.name)
            continue
        if stat.S_ISREG(st.st_mode):
            totals.bytes += st.st_size
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.name, dir_fd=fd)
    return subdirs


def walk(parent_fd: int, name: str, remove: bool) -> Totals:
    """Totals below ``parent_fd/name`` (a directory); with ``remove``, the directory goes too."""
    totals = Totals()
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        stack: list[tuple[str, list[str]]] = [(name, _scan(fd, remove, totals))]
        while stack:
            totals.depth = max(totals.depth, len(stack) - 1)
            here, subdirs = stack[-1]
            if subdirs:
                sub = subdirs.pop()
                child = os.open(sub, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                stack.append((sub, _scan(fd, remove, totals)))
                continue
            stack.pop()
            if not stack:
                break
            up = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = up
            if remove:
                os.rmdir(here, dir_fd=fd)
    finally:
        os.close(fd)
    if remove:
        os.rmdir(name, dir_fd=parent_fd)
    return totals


def at_parent(path: str, action: Callable[[int, str], Totals]) -> Totals:
    """Run ``action(parent_fd, basename)`` for ``path``."""
    parent, name = os.path.split(path.rstrip("/"))
    fd = os.open(parent or ".", _DIR_FLAGS)
    try:
        return action(fd, name)
    finally:
        os.close(fd)


def measure(path: str) -> Totals:
    """The totals of the tree at ``path`` without recursion, so the depth of what an operator
    planted can never exhaust the stack (used for usage, ``cp -r`` and ``mv`` checks)."""
    return at_parent(path, lambda fd, name: walk(fd, name, remove=False))


def remove_tree(path: str) -> Totals:
    """Remove the tree at ``path`` whatever its depth (``rm -r``, userdel's purge), returning what
    it held so the usage can be updated without a second walk."""
    return at_parent(path, lambda fd, name: walk(fd, name, remove=True))
