"""The words of a command line as a shell would pass them: ``~`` and globs expanded, bounded.

Runs on the I/O thread. Like ``ARG_MAX``, the expanded line may hold at most
10,000 words and 256 KiB (``Argument list too long``), and expansion stops
as soon as either is crossed, so ``echo * * * …`` in a big home costs one
directory listing and a bounded list, never the product of the two. Each
directory is listed once per line and each (directory, pattern) pair matched
once, and the entries examined are counted against a budget too.
"""

from __future__ import annotations

import stat
from fnmatch import fnmatchcase

from attrs import define, field

from shellserver.files.sandbox import E2BIG, FsError
from shellserver.files.tree import Tree

MAX_WORDS = 10_000
MAX_BYTES = 256 * 1024
#: Directory entries one line's patterns may look at, all together.
MAX_EXAMINED = 200_000

_GLOB_CHARS = frozenset("*?[")


@define
class Word:
    """One argument as typed, with what the shell would do to it."""

    text: str
    glob: bool = False
    tilde: bool = False


@define
class Expansion:
    """One command line's expansion state: the word and byte counts and the entries examined are
    shared by all its words, so the limits bound the whole line, and listings and matches are
    cached so a pattern repeated on the line costs nothing more."""

    tree: Tree
    cwd: str
    words: int = 0
    size: int = 0
    examined: int = 0
    _listings: dict[tuple[str, ...], list[str] | None] = field(factory=dict)
    _matches: dict[tuple[tuple[str, ...], str], list[str]] = field(factory=dict)
    _dirs: dict[tuple[str, ...], bool | None] = field(factory=dict)

    def count(self, word: str) -> None:
        """Charge one expanded word to the line, raising ``Argument list too long`` the moment
        either ARG_MAX-like limit is crossed, before the next glob does any more work."""
        self.words += 1
        self.size += len(word.encode("utf-8", "surrogateescape")) + 1
        if self.words > MAX_WORDS or self.size > MAX_BYTES:
            raise FsError(E2BIG)

    def tilde(self, word: str) -> str:
        """``~`` and ``~/x`` (and ``~<self>``) become ``/home/<user>…``; ``~other`` stays."""
        me = self.tree.user
        for prefix in ("~", f"~{me}"):
            if word == prefix or word.startswith(prefix + "/"):
                return f"/home/{me}" + word[len(prefix) :]
        return word

    def _match(self, base: str, seg: str) -> list[str]:
        try:
            key = tuple(self.tree.resolve(self.cwd, base or "."))
        except FsError:
            return []
        cached = self._matches.get((key, seg))
        if cached is not None:
            return cached
        if key not in self._listings:
            try:
                self._listings[key] = self.tree.listdir(list(key))
            except FsError:
                self._listings[key] = None
        names = self._listings[key] or []
        self.examined += len(names)
        if self.examined > MAX_EXAMINED:
            raise FsError(E2BIG)
        hidden = seg.startswith(".")
        found = [n for n in names if (hidden or not n.startswith(".")) and fnmatchcase(n, seg)]
        self._matches[(key, seg)] = found
        return found

    def _kind(self, path: str) -> bool | None:
        """Whether ``path`` is a directory; None when it does not exist (or may not be seen)."""
        try:
            key = tuple(self.tree.resolve(self.cwd, path))
        except FsError:
            return None
        if key not in self._dirs:
            self.examined += len(key) or 1  # the walk down to it looks at each level
            if self.examined > MAX_EXAMINED:
                raise FsError(E2BIG)
            try:
                self._dirs[key] = stat.S_ISDIR(self.tree.lstat(list(key)).st_mode)
            except FsError:
                self._dirs[key] = None
        return self._dirs[key]

    def _there(self, path: str, sep: str) -> bool:
        """``path`` exists, and is a directory if more of the word follows it."""
        kind = self._kind(path)
        return kind is True if sep else kind is not None

    def glob(self, word: str) -> list[str]:
        """Matches of ``word``, sorted; the word itself when nothing matches.

        As in sh, every match exists: a name followed by ``/`` is a directory
        (``*/`` lists directories only), and a plain part after a pattern
        (``*/x``) is kept only where it is there.
        """
        segments = word.split("/")
        candidates = [""]
        matched = False
        for i, seg in enumerate(segments):
            sep = "" if i == len(segments) - 1 else "/"
            if not any(c in seg for c in _GLOB_CHARS):
                candidates = [c + seg + sep for c in candidates]
                if matched and seg not in ("", ".", ".."):  # (a directory's own names exist)
                    candidates = [c for c in candidates if self._there(c, sep)]
                    if not candidates:
                        break
                continue
            matched = True
            found: list[str] = []
            for cand in candidates:
                for name in self._match(cand, seg):
                    if sep and not self._there(cand + name, sep):
                        continue
                    found.append(cand + name + sep)
                    if len(found) > MAX_WORDS:
                        raise FsError(E2BIG)
            candidates = found
            if not candidates:
                break
        return sorted(candidates) or [word]

    def expand(self, words: list[Word]) -> list[str]:
        """Each word as the shell would pass it: tilde first, then globbing, each result counted as
        it is produced so a runaway pattern stops early rather than after building its list."""
        out: list[str] = []
        for w in words:
            text = self.tilde(w.text) if w.tilde else w.text
            for result in self.glob(text) if w.glob else [text]:
                self.count(result)
                out.append(result)
        return out


def expand(tree: Tree, cwd: str, name: str, words: list[Word]) -> list[str]:
    """The arguments after ``name`` (which counts towards the limits too)."""
    e = Expansion(tree, cwd)
    e.count(name)
    return e.expand(words)
