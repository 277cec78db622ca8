"""The jobs of ``mv`` and ``cp`` (see jobs.py): coreutils' checks and words, in its order."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from shellserver.files.copying import copy_tree
from shellserver.files.expand import Word
from shellserver.files.jobs import Out, operands, q
from shellserver.files.sandbox import EDQUOT, EEXIST, ENOENT, ENOSPC, ENOTDIR, FsError, Refusal
from shellserver.files.tree import Tree, same_entry


def _join(dest: str, base: str) -> str:
    return dest + base if dest.endswith("/") else f"{dest}/{base}"


def _targets(
    tree: Tree, cwd: str, out: Out, args: list[str]
) -> tuple[list[str], str, list[str] | FsError, bool] | None:
    """Sources, destination as typed and resolved, and whether it is a directory to move into."""
    if not args:
        out.fail("missing file operand")
        return None
    if len(args) == 1:
        out.fail(f"missing destination file operand after {q(args[0])}")
        return None
    *sources, dest = args
    try:
        dest_parts = tree.resolve(cwd, dest)
    except FsError as e:
        if len(sources) > 1:
            out.fail_at("target '{}'", dest, e)
            return None
        # outside the home, or an impossible name: each source is told it cannot go there
        return sources, dest, e, False
    try:
        dest_st = tree.stat_or_none(dest_parts)
    except FsError as e:
        if e.reason != ENOENT or len(sources) > 1:  # a missing parent is the copy's own error
            out.fail_at("target '{}'" if len(sources) > 1 else "cannot stat '{}'", dest, e)
            return None
        dest_st = None
    into = dest_st is not None and stat.S_ISDIR(dest_st.st_mode)
    if len(sources) > 1 and not into:
        if dest_st is None:
            out.fail(f"target {q(dest)}: {ENOENT}")
        else:
            out.fail(f"target {q(dest)}: {ENOTDIR}")
        return None
    return sources, dest, dest_parts, into


def _source(tree: Tree, cwd: str, out: Out, typed: str) -> tuple[list[str], os.stat_result] | None:
    try:
        parts = tree.resolve(cwd, typed)
        return parts, tree.lstat(parts)
    except FsError as e:
        out.fail_at("cannot stat '{}'", typed, e)
        return None


def _sources(
    tree: Tree, cwd: str, out: Out, name: str, words: list[Word]
) -> Iterator[tuple[str, list[str], os.stat_result, str, list[str] | FsError, bool]]:
    """Each source that exists, with the destination: typed, resolved, and whether to go into it.

    The operands' own errors (a missing destination, a missing source) are told on ``out``.
    """
    found = _targets(tree, cwd, out, operands(tree, cwd, name, words))
    if found is None:
        return
    sources, dest, dest_parts, into = found
    for typed in sources:
        src = _source(tree, cwd, out, typed)
        if src is not None:
            yield typed, *src, dest, dest_parts, into


def mv(tree: Tree, cwd: str, name: str, words: list[Word]) -> list[str]:
    """``mv SRC... DEST``: coreutils' checks in its order (same file, into itself, directory over
    file and back) so users see the messages they know; the rename itself checks the 64-level depth
    limit, which a move could otherwise break."""
    out = Out(name)
    for typed, parts, s, dest, dest_parts, into in _sources(tree, cwd, out, name, words):
        if isinstance(dest_parts, FsError):
            out.fail(f"cannot move {q(typed)} to {q(dest)}: {dest_parts.reason}")
            continue
        if not parts:
            out.fail(f"cannot move {q(typed)}: Permission denied")
            continue
        shown = _join(dest, parts[-1]) if into else dest
        target = [*dest_parts, parts[-1]] if into else dest_parts
        try:
            _move(tree, parts, s, target, typed, shown)
        except Refusal as r:
            out.fail(r.message)
        except FsError as e:
            out.fail(f"cannot move {q(typed)} to {q(shown)}: {e.reason}")
    return out.pieces


def _move(
    tree: Tree, parts: list[str], s: os.stat_result, target: list[str], typed: str, shown: str
) -> None:
    t = tree.stat_or_none(target)
    if t is not None and same_entry(s, t):
        raise Refusal(f"{q(typed)} and {q(shown)} are the same file")
    if target[: len(parts)] == parts:
        raise Refusal(f"cannot move {q(typed)} to a subdirectory of itself, {q(shown)}")
    if t is not None:
        if stat.S_ISDIR(t.st_mode) and not stat.S_ISDIR(s.st_mode):
            raise Refusal(f"cannot overwrite directory {q(shown)} with non-directory")
        if stat.S_ISDIR(s.st_mode) and not stat.S_ISDIR(t.st_mode):
            raise Refusal(f"cannot overwrite non-directory {q(shown)} with directory {q(typed)}")
    tree.rename(parts, target)


def cp(tree: Tree, cwd: str, name: str, words: list[Word], recursive: bool = False) -> list[str]:
    """``cp [-r] SRC... DEST``: a file is copied with room reserved for its size first; directories
    need ``-r`` and go through :func:`copy_tree`, refused up front when the copy would break the
    quota, the entry limit or the depth limit."""
    out = Out(name)
    for typed, parts, s, dest, dest_parts, into in _sources(tree, cwd, out, name, words):
        if stat.S_ISDIR(s.st_mode) and not recursive:
            out.fail(f"-r not specified; omitting directory {q(typed)}")
            continue
        if isinstance(dest_parts, FsError):
            out.fail(f"cannot create regular file {q(dest)}: {dest_parts.reason}")
            continue
        base = parts[-1] if parts else typed.rstrip("/").rsplit("/", 1)[-1] or typed
        shown = _join(dest, base) if into else dest
        target = [*dest_parts, parts[-1]] if into and parts else dest_parts
        if stat.S_ISDIR(s.st_mode):
            _copy_dir(tree, out, typed, parts, target, shown)
            continue
        try:
            t = tree.stat_or_none(target)
            if t is not None and same_entry(s, t):
                raise Refusal(f"{q(typed)} and {q(shown)} are the same file")
            if t is not None and stat.S_ISDIR(t.st_mode):
                raise Refusal(f"cannot overwrite directory {q(shown)} with non-directory")
            tree.copy(parts, target)
        except Refusal as r:
            out.fail(r.message)
        except FsError as e:
            if e.reason in (EDQUOT, ENOSPC):
                out.fail(f"error writing {q(shown)}: {e.reason}")
            else:
                out.fail(f"cannot create regular file {q(shown)}: {e.reason}")
    return out.pieces


def _copy_dir(
    tree: Tree, out: Out, typed: str, parts: list[str], target: list[str], shown: str
) -> None:
    if target[: len(parts)] == parts:
        out.fail(f"cannot copy a directory, {q(typed)}, into itself, {q(shown)}")
        return
    try:
        copy_tree(tree, parts, target)
    except FsError as e:
        if e.reason == EEXIST:
            out.fail(f"cannot overwrite non-directory {q(shown)} with directory {q(typed)}")
        elif e.reason in (EDQUOT, ENOSPC):
            out.fail(f"error writing {q(shown)}: {e.reason}")
        else:
            out.fail(f"cannot create directory {q(shown)}: {e.reason}")
