"""``cp -r``: a directory tree copied within the home, room and depth checked before it starts.

Runs on the I/O thread under the home's queue. The source is measured first
(bytes, entries, depth), so a copy that would break the quota, the entry
limit or the 64-level nesting limit is refused before anything is made. The
walk is iterative; regular files go through the same temp-file-and-rename as
every write; symbolic links (which only an operator could have planted) are
not copied.
"""

from __future__ import annotations

import os
import stat

from shellserver.files import walk
from shellserver.files.sandbox import EEXIST, MAX_DEPTH, TOO_DEEP, FsError
from shellserver.files.tree import Tree, copy_out


def copy_tree(tree: Tree, src: list[str], dst: list[str]) -> None:
    """Copy the directory ``src`` to ``dst`` (made, or merged into if it is a directory)."""
    source = tree.path(src)
    target = tree.path(dst, must_exist=False)
    try:
        totals = walk.measure(source)
    except OSError as e:
        raise tree.os_error(e) from None
    if len(dst) + totals.depth > MAX_DEPTH:
        raise FsError(TOO_DEEP)
    existing = tree.stat_or_none(dst)
    if existing is not None and not stat.S_ISDIR(existing.st_mode):
        raise FsError(EEXIST)
    tree.check_room(totals.bytes, totals.entries + (0 if existing else 1))
    stack = [(source, target)]
    while stack:
        here, there = stack.pop()
        try:
            try:
                if not stat.S_ISDIR(os.lstat(there).st_mode):
                    continue  # a file or a planted link where a directory would go: never entered
            except FileNotFoundError:
                os.mkdir(there, 0o700)
                tree.account(0, 1)
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                to = os.path.join(there, entry.name)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((entry.path, to))
                elif stat.S_ISREG(st.st_mode):
                    _copy_file(tree, entry.path, to, st.st_size)
        except OSError as e:
            raise tree.os_error(e) from None


def _copy_file(tree: Tree, src: str, dst: str, size: int) -> None:
    try:
        old = os.lstat(dst)
    except FileNotFoundError:
        old = None
    if old is not None and not stat.S_ISREG(old.st_mode):
        return  # a directory or link where the file would go: left as it is
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        tree.replace_with(dst, lambda f: copy_out(fd, f, size))
    finally:
        os.close(fd)
    tree.account(size - (old.st_size if old else 0), 0 if old else 1)
