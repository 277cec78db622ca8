"""Shell-like splitting of a command line: quotes, backslashes, ``>``/``>>``, glob marks.

Plain lines (no quote, backslash, redirection, glob character, tab, ``|``,
``;`` or ``&``) take a ``str.split`` fast path; shlex would cost ~60x more for
them. A ``~`` keeps a line on the fast path: it only matters at the start of a
word, which a plain word's first character tells. The operators are found by
the same one-pass search that picks the path, so a plain line pays nothing for
them.

There are no pipes or command lists: an unquoted ``|``, ``;``, ``&&`` or ``||``
raises :class:`NotSupported` rather than reaching a command as an argument
(``ls | grep x`` would otherwise say ``ls: cannot access '|'``). A single
``&`` is plain text.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_SLOW = re.compile(r"['\"\\><*?\[\t|;&]")
_GLOB = frozenset("*?[")


class SplitError(ValueError):
    """A line the shell cannot parse; shown to the user as ``PROGRAM: text``."""

    program = "shellserver"


class NotSupported(SplitError):
    """A pipe or command list: said in sh's voice, as a shell would refuse it."""

    program = "sh"

    def __init__(self) -> None:
        super().__init__("pipes and command lists are not supported")


class CommandLine(NamedTuple):
    """A split line. A named tuple, not an attrs class: one is built per typed line,
    and a frozen attrs instance costs ~60% more to make."""

    words: tuple[str, ...]
    #: Per word: does it contain an unquoted ``*``, ``?`` or ``[`` (to be expanded)?
    globs: tuple[bool, ...]
    #: ``(">" or ">>", target)`` when the line redirects its output.
    redirect: tuple[str, str] | None = None
    #: Per word: does it start with an unquoted ``~`` (to be expanded)?
    tildes: tuple[bool, ...] = ()


def split_line(line: str) -> CommandLine:
    """A command line in words, with a fast path for plain words: most lines are plain, and this
    runs per line."""
    if _SLOW.search(line) is None:
        split = line.split(" ")
        words = tuple(filter(None, split) if "" in split else split)
        n = len(words)
        plain = _NO_GLOBS[n] if n < len(_NO_GLOBS) else (False,) * n
        # tuple.__new__ directly: the named tuple's own __new__ is a Python function.
        if "~" in line:
            return _new(CommandLine, (words, plain, None, tuple([w[0] == "~" for w in words])))
        return _new(CommandLine, (words, plain, None, plain))
    return _split_general(line)


_new = tuple.__new__


#: ``globs`` for plain lines of up to 63 words, made once.
_NO_GLOBS = tuple((False,) * n for n in range(64))


def _split_general(line: str) -> CommandLine:
    words: list[str] = []
    globs: list[bool] = []
    tildes: list[bool] = []
    redirect: tuple[str, str] | None = None
    pending_op: str | None = None
    word: list[str] = []
    in_word = False
    glob = False
    tilde = False
    i, n = 0, len(line)

    def finish() -> None:
        nonlocal in_word, glob, tilde, pending_op, redirect
        if not in_word:
            return
        text = "".join(word)
        if pending_op is not None:
            if redirect is not None:
                raise SplitError("syntax error: only one redirection is supported")
            redirect = (pending_op, text)
            pending_op = None
        else:
            words.append(text)
            globs.append(glob)
            tildes.append(tilde)
        word.clear()
        in_word = False
        glob = False
        tilde = False

    while i < n:
        ch = line[i]
        if ch in " \t":
            finish()
            i += 1
        elif ch == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise SplitError("syntax error: unterminated quote")
            word.append(line[i + 1 : end])
            in_word = True
            i = end + 1
        elif ch == '"':
            i += 1
            while True:
                if i >= n:
                    raise SplitError("syntax error: unterminated quote")
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and line[i + 1] in '"\\':
                    word.append(line[i + 1])
                    i += 2
                    continue
                word.append(c)
                i += 1
            in_word = True
        elif ch == "\\":
            if i + 1 < n:
                word.append(line[i + 1])
                i += 2
            else:
                word.append("\\")
                i += 1
            in_word = True
        elif ch in "|;" or (ch == "&" and line.startswith("&&", i)):
            raise NotSupported()
        elif ch == ">":
            finish()
            if pending_op is not None:
                raise SplitError("syntax error near unexpected token `>'")
            if line.startswith(">>", i):
                pending_op, i = ">>", i + 2
            else:
                pending_op, i = ">", i + 1
        else:
            if ch == "~" and not in_word:
                tilde = True
            if ch in _GLOB:
                glob = True
            word.append(ch)
            in_word = True
            i += 1
    finish()
    if pending_op is not None:
        raise SplitError("syntax error near unexpected token `newline'")
    return CommandLine(tuple(words), tuple(globs), redirect, tuple(tildes))
