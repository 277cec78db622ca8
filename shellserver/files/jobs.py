"""What each file command does on the I/O thread: one job per command line, text out.

A job gets the home's :class:`Tree`, the session's directory and the words
as typed; it expands them (``~``, globs, bounded), does the work and returns
the text to show, errors included in coreutils' words, in order. The
command on the reactor side then streams that text with backpressure.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from typing import Any

from attrs import define, field

from shellserver.files.expand import Word, expand
from shellserver.files.listing import columns, long_line
from shellserver.files.sandbox import (
    EEXIST,
    EISDIR,
    ENOENT,
    ENOTDIR,
    MAX_DEPTH,
    TOO_DEEP,
    FsError,
    Refusal,
)
from shellserver.files.tree import Tree, same_entry
from shellserver.text.sanitize import careful


class Pieces(list[str]):
    """A job's text; ``failed`` once a ``cmd: message`` line is among it (exit status 1)."""

    failed = False


@define
class Out:
    """Text for the user, in order: output and ``cmd: message`` lines."""

    name: str
    pieces: list[str] = field(factory=Pieces)

    def write(self, text: str) -> None:
        """Add output in order with the errors, skipping empty text so a quiet job yields no empty
        pieces to stream."""
        if text:
            self.pieces.append(text)

    def fail(self, message: str) -> None:
        """Add a ``cmd: message`` line and mark the job failed, so the command exits with status 1
        (``ssh host CMD`` reports it) while the other operands still run."""
        self.pieces.append(f"{self.name}: {message}\n")
        if isinstance(self.pieces, Pieces):
            self.pieces.failed = True

    def fail_at(self, template: str, typed: str, error: FsError) -> None:
        """A ``cmd: <what 'path'>: reason`` line in coreutils' words, the typed path sanitised so a
        name with escapes cannot reach the terminal raw."""
        self.fail(template.format(careful(typed)) + f": {error.reason}")


def q(typed: str) -> str:
    """A typed name quoted as coreutils quotes it in messages (``'a b'``), sanitised, since it came
    from the user and goes back to a terminal."""
    return f"'{careful(typed)}'"


#: Job output longer than this waits in an unlinked file, not in memory, while it is sent.
SPILL = 64 * 1024


def failed(pieces: list[str]) -> bool:
    """Did the job that wrote ``pieces`` report a failure?"""
    return isinstance(pieces, Pieces) and pieces.failed


def spilled(tree: Tree, job: Callable[..., list[str]], *args: Any) -> tuple[str | int, bool]:
    """Run ``job``; its text, or when long a descriptor of an unlinked file holding it; and
    whether it failed."""
    pieces = job(tree, *args)
    text = "".join(pieces)
    if len(text) <= SPILL:
        return text, failed(pieces)
    os.makedirs(tree.tmp, mode=0o700, exist_ok=True)
    with tempfile.TemporaryFile(dir=tree.tmp) as f:
        f.write(text.encode("utf-8", "surrogateescape"))
        f.flush()
        fd = os.dup(f.fileno())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd, failed(pieces)


def operands(tree: Tree, cwd: str, name: str, words: list[Word]) -> list[str]:
    """The operands of a file command after ``~`` and glob expansion, within the argument-list
    limits, so every job expands the same way a shell would before it acts."""
    return expand(tree, cwd, name, words)


# -- cd, ls -----------------------------------------------------------------------------


def cd(tree: Tree, cwd: str, name: str, words: list[Word]) -> tuple[str | None, list[str]]:
    """The new directory (or None), and what to say."""
    out = Out(name)
    args = operands(tree, cwd, name, words)
    if len(args) > 1:
        out.fail("too many arguments")
        return None, out.pieces
    typed = args[0] if args else "~"
    try:
        parts = tree.resolve(cwd, typed)
        if not stat.S_ISDIR(tree.lstat(parts).st_mode):
            raise FsError("Not a directory")
    except FsError as e:
        out.fail_at("{}", typed, e)
        return None, out.pieces
    return "/".join(parts), out.pieces


def ls(
    tree: Tree, cwd: str, name: str, words: list[Word], flags: set[str], width: int, now: float
) -> list[str]:
    """``ls [-a] [-l] [PATH...]``: files first, then each directory's listing, laid out to the
    session's width (``-C``) or long lines; ``-l`` lstats inside the listed directory so a planted
    symlink is shown, never followed."""
    out = Out(name)
    typed_list = operands(tree, cwd, name, words) or ["."]
    files: list[tuple[str, os.stat_result | None]] = []
    dirs: list[tuple[str, list[str]]] = []
    for typed in typed_list:
        try:
            parts = tree.resolve(cwd, typed)
            st = tree.lstat(parts)
        except FsError as e:
            out.fail_at("cannot access '{}'", typed, e)
            continue
        if stat.S_ISDIR(st.st_mode):
            dirs.append((typed, parts))
        else:
            files.append((typed, st))

    def render(entries: list[tuple[str, os.stat_result | None]]) -> str:
        if "l" not in flags:
            return columns([careful(n) for n, _ in entries], width)
        return "".join(f"{long_line(careful(n), st, now)}\n" for n, st in entries if st)

    sections = []
    if files:
        sections.append(render(files))
    for typed, parts in dirs:
        try:
            names = tree.listdir(parts)
        except FsError as e:
            out.fail_at("cannot open directory '{}'", typed, e)
            continue
        if "a" in flags:
            names = [".", "..", *names]
        else:
            names = [n for n in names if not n.startswith(".")]
        entries: list[tuple[str, os.stat_result | None]] = []
        base = tree.path(parts) if "l" in flags else ""
        for n in names:
            info: os.stat_result | None = None
            if "l" in flags:
                try:  # lstat in the directory just walked: a planted link is shown, not followed
                    info = tree.lstat(parts[:-1]) if n == ".." else os.lstat(os.path.join(base, n))
                except (FsError, OSError):
                    continue
            entries.append((n, info))
        block = render(entries)
        if len(typed_list) > 1:
            block = f"{careful(typed)}:\n{block}"
        sections.append(block)
    out.write("\n".join(sections))
    return out.pieces


# -- making and removing -------------------------------------------------------------------


def mkdir(tree: Tree, cwd: str, name: str, words: list[Word], parents: bool) -> list[str]:
    """``mkdir [-p] DIR...``: each operand on its own, errors in coreutils' words; the depth and
    entry limits and the quota are checked by :meth:`Tree.mkdir` before anything is made."""
    out = Out(name)
    for typed in operands(tree, cwd, name, words):
        try:
            parts = tree.resolve(cwd, typed)
            if parents:
                _make_parents(tree, cwd, typed, parts)
            else:
                tree.mkdir(parts)
        except Refusal as r:
            out.fail(r.message)
        except FsError as e:
            out.fail_at("cannot create directory '{}'", typed, e)
    return out.pieces


def _make_parents(tree: Tree, cwd: str, typed: str, parts: list[str]) -> None:
    """``mkdir -p``: each missing level made in turn; a level that is a file is named."""
    if len(parts) > MAX_DEPTH:
        raise FsError(TOO_DEEP)
    segments = typed.split("/")
    for k in range(1, len(segments) + 1):
        if segments[k - 1] in ("", ".", "..") and k < len(segments):
            continue
        prefix = "/".join(segments[:k])
        level = tree.resolve(cwd, prefix)
        if not level:
            continue
        st = tree.stat_or_none(level)
        if st is None:
            tree.mkdir(level)
        elif not stat.S_ISDIR(st.st_mode):
            reason = EEXIST if k == len(segments) else ENOTDIR
            raise Refusal(f"cannot create directory {q(prefix)}: {reason}")


def _each(
    tree: Tree, cwd: str, name: str, words: list[Word], act: Callable[[list[str]], None], says: str
) -> list[str]:
    """``act`` on each operand in turn; a failure is told in ``says`` and the rest go on."""
    out = Out(name)
    for typed in operands(tree, cwd, name, words):
        try:
            act(tree.resolve(cwd, typed))
        except FsError as e:
            out.fail_at(says, typed, e)
    return out.pieces


def rmdir(tree: Tree, cwd: str, name: str, words: list[Word]) -> list[str]:
    """``rmdir DIR...``: only empty directories go (the kernel refuses the rest), and the home
    itself never."""
    return _each(tree, cwd, name, words, tree.rmdir, "failed to remove '{}'")


def rm(tree: Tree, cwd: str, name: str, words: list[Word], flags: set[str]) -> list[str]:
    """``rm [-r] [-f] PATH...``: ``-f`` silences only missing operands and ``-r`` refuses ``.`` and
    ``..``, both as coreutils does, so users meet the behaviour they know."""
    out = Out(name)
    recursive = bool(flags & {"r", "R"})
    for typed in operands(tree, cwd, name, words):
        if recursive and typed.rstrip("/").rsplit("/", 1)[-1] in (".", ".."):
            out.fail(f"refusing to remove '.' or '..' directory: skipping {q(typed)}")
            continue
        try:
            tree.remove(tree.resolve(cwd, typed), recursive)
        except FsError as e:
            if not ("f" in flags and e.reason == ENOENT):
                out.fail_at("cannot remove '{}'", typed, e)
    return out.pieces


def touch(tree: Tree, cwd: str, name: str, words: list[Word]) -> list[str]:
    """``touch FILE...``: an existing entry gets a new mtime (a link's own, never its target's); a
    new file costs one entry of the quota."""
    return _each(tree, cwd, name, words, tree.touch, "cannot touch '{}'")


# -- echo and cat's writing side -----------------------------------------------------------


def words_of(tree: Tree, cwd: str, name: str, words: list[Word]) -> list[str]:
    """The expanded arguments (``echo``, ``cat``)."""
    return operands(tree, cwd, name, words)


def write_file(tree: Tree, cwd: str, typed: str, data: bytes, append: bool) -> None:
    """``echo TEXT > FILE`` and the buffered lines of ``cat > FILE``: the whole text replaces
    (atomically) or extends the file within the quota; the home itself is ``Is a directory``."""
    parts = tree.resolve(cwd, typed)
    if not parts:
        raise FsError(EISDIR)
    tree.write(parts, data, append)


def start_file(tree: Tree, cwd: str, typed: str, append: bool) -> None:
    """``cat > FILE``: create (or empty) FILE before the typed lines come."""
    parts = tree.resolve(cwd, typed)
    if not parts:
        raise FsError(EISDIR)
    if append and tree.stat_or_none(parts) is not None:
        tree.write(parts, b"", append=True)  # checks it is a file we may write
        return
    tree.write(parts, b"")


def concatenate(tree: Tree, cwd: str, sources: list[str], target: str, append: bool) -> list[str]:
    """``cat A B > C``: C gets A and B, within the quota; errors in cat's words."""
    out = Out("cat")
    try:
        target_parts = tree.resolve(cwd, target)
        if not target_parts:
            raise FsError(EISDIR)
        target_st = tree.stat_or_none(target_parts)
    except FsError as e:
        out.fail_at("{}", target, e)
        return out.pieces
    readable: list[list[str]] = []
    for typed in sources:
        try:
            parts = tree.resolve(cwd, typed)
            st = tree.lstat(parts)
            if stat.S_ISDIR(st.st_mode):
                raise FsError(EISDIR)
        except FsError as e:
            out.fail_at("{}", typed, e)
            continue
        if target_st is not None and same_entry(st, target_st):
            out.fail(f"{careful(typed)}: input file is output file")
            continue
        readable.append(parts)
    try:
        tree.concat(readable, target_parts, append)
    except FsError as e:
        out.fail_at("{}", target, e)
    return out.pieces
