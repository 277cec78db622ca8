"""The line editor of character mode: keys in, screen operations out (sans-io).

It knows nothing of telnet, SSH or sockets: :meth:`LineEditor.key` takes one
event from :class:`shellserver.terminal.keys.KeyParser` and draws through a
:class:`shellserver.terminal.screen.Screen`; complete lines, ^C, ^D and Tab come back
as results for the terminal to act on. Keys are bash/readline's defaults
(docs/usage.md). Columns come from ``wcwidth``, so wide CJK and emoji take
two cells and combining marks none; a line longer than the window wraps, and
the editor keeps track of the cursor's row so it can erase and redraw all of
it (for a message arriving, ^L, a resize).

Work per key is bounded. Under a terminal (``defer``), a key that needs the
whole line drawn again, or the cursor placed on a long line, only marks the
drawing stale: the terminal draws it at most once per short interval
(``terminal.PACE``), however many keys, resizes or messages asked for it.
^R searches on from the current match, a query that already fails costs
nothing more, and ``work`` counts the history characters searched so the
terminal can hold keys back once a budget is spent. The history is bounded
in lines and in bytes, and a line too long for it is not kept.
"""

from __future__ import annotations

import os.path

from wcwidth import wcswidth, wcwidth

from shellserver.terminal import keys
from shellserver.terminal.screen import Screen
from shellserver.text.sanitize import careful

HISTORY = 500
#: The history's size in bytes (UTF-8), oldest lines out first.
HISTORY_BYTES = 64 * 1024
#: A line longer than this (bytes) runs but is not kept in the history.
HISTORY_LINE = 1024
#: The ^R query, at most (characters); further keys ring the bell.
MAX_QUERY = 256
MAX_LINE = 4096
MAX_LISTED = 100

#: ``LineEditor.stale``: the cursor to place, or the whole line to draw again.
CURSOR, WHOLE = 1, 2
#: The erasing of prompt and line when they stand on one row (:meth:`LineEditor.suspend`
#: from row 0): to its start, then everything below.
ERASE_ROW = "\r\x1b[J"
_ERASE_LEN = len(ERASE_ROW)

# What key() asks the terminal to do.
LINE, EOF, INTERRUPT, COMPLETE = "line", "eof", "interrupt", "complete"
Result = tuple[str, str] | None


def cell(ch: str) -> tuple[str, int]:
    """How one character of the line is drawn, and its width in columns."""
    if " " <= ch <= "~":
        return ch, 1
    if ch.isprintable():
        w = wcwidth(ch)
        if w >= 0:
            return ch, w
    shown = careful(ch)
    if shown == ch:
        shown = f"\\u{ord(ch):04x}"
    return shown, len(shown)


def _blen(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class LineEditor:
    """One session's input line, history and kill buffer."""

    __slots__ = (
        "_bytes",
        "_col",
        "_drawn",
        "_hist_bytes",
        "_hist_i",
        "_kept",
        "_kept_buf",
        "_kill",
        "_row",
        "_saved",
        "_search",
        "_search_back",
        "_search_failed",
        "_search_i",
        "_search_saved",
        "_tabs",
        "active",
        "buf",
        "defer",
        "hidden",
        "history",
        "max_bytes",
        "pos",
        "prompt",
        "screen",
        "stale",
        "width",
        "work",
    )

    def __init__(self, screen: Screen, width: int = 80, max_bytes: int = MAX_LINE) -> None:
        self.screen = screen
        self.width = width
        self.max_bytes = max_bytes
        self.history: list[str] = []
        self._hist_bytes = 0
        self.prompt = ""
        self.hidden = False
        self.active = False
        self.buf = ""
        self.pos = 0
        self._bytes = 0
        self._kill = ""
        self._hist_i = 0
        self._saved = ""
        self._search: str | None = None
        self._search_i = 0
        self._search_failed = False
        self._search_saved = ("", 0)
        #: The search as it was before each key typed into it, for Backspace to go back to.
        self._search_back: list[tuple[str, int, bool, str, int]] | None = None
        self._tabs = 0
        self._drawn = False
        self._row = 0
        self._col = 0
        #: :meth:`redraw_row`'s string, made for the line ``_kept_buf`` (None: not made yet,
        #: or the prompt, hiding or width changed since) under the prompt and width of then.
        self._kept: str | None = None
        self._kept_buf: str | None = None
        #: Set by the terminal: whole-line redraws and cursor moves wait for :meth:`refresh`.
        self.defer = False
        #: Deferred drawing: :data:`CURSOR` (the cursor to place), :data:`WHOLE` (the line to
        #: draw again) or 0; one int, so the terminal's check per key is one attribute.
        self.stale = 0
        #: History characters searched by ^R (the terminal resets it each interval).
        self.work = 0

    # -- the terminal's side -------------------------------------------------

    def start(self, prompt: str, hidden: bool = False, drawn: bool = False) -> None:
        """Begin a line after ``prompt``; ``drawn`` when the prompt is already on screen."""
        self.prompt = prompt
        self.hidden = hidden
        self._kept_buf = None
        self.active = True
        self._set("", 0)
        self._hist_i = len(self.history)
        self._end_search()
        self._tabs = 0
        self.stale = 0
        if drawn:
            widths = [cell(ch)[1] for ch in prompt]
            self._row, self._col = self._at(widths, len(widths))
            self._drawn = True
        else:
            self._drawn = False
            self._draw()  # a new prompt shows at once (its line is empty)

    def remember(self, line: str) -> None:
        """Add a line to the history (the terminal decides which lines count).

        At most :data:`HISTORY` lines and :data:`HISTORY_BYTES` bytes, the oldest
        out first; a line over :data:`HISTORY_LINE` bytes is not kept."""
        history = self.history
        if not line or line.isspace() or (history and history[-1] == line):
            return
        size = _blen(line)
        if size > HISTORY_LINE:
            return
        history.append(line)
        self._hist_bytes += size
        while len(history) > HISTORY or self._hist_bytes > HISTORY_BYTES:
            self._hist_bytes -= _blen(history[0])
            del history[0]

    def type_in(self, text: str) -> None:
        """Put ``text`` on the line at the cursor as if typed (a resumed session's half-typed
        line), within the line's byte limit."""
        self._insert(text)

    @property
    def history_bytes(self) -> int:
        """What the history holds, in bytes, so memory per session can be checked."""
        return self._hist_bytes

    def suspend(self) -> None:
        """Erase the prompt and line (all their rows), leaving the cursor at their start."""
        if self._drawn:
            self.screen.up(self._row)
            self.screen.column(0)
            self.screen.erase_below()
            self._drawn = False
            self._row = self._col = 0

    def geometry(self) -> tuple[bool, int, int]:
        """Where the drawing stands; :meth:`restore` undoes a :meth:`suspend` never sent."""
        return (self._drawn, self._row, self._col)

    def restore(self, geometry: tuple[bool, int, int]) -> None:
        """Undo a :meth:`suspend` whose output was never sent (the message was dropped)."""
        self._drawn, self._row, self._col = geometry

    @property
    def drawn(self) -> bool:
        """Whether the prompt and line are on screen, so a message knows to erase them first."""
        return self._drawn

    def redraw(self) -> None:
        """The prompt and line again after something was shown above them."""
        if self.active:
            self._render()

    def redraw_row(self) -> str | None:
        """A message's usual case made cheap: what :meth:`suspend`, :meth:`redraw` and the
        terminal's :meth:`refresh` write for a line that stands on one row with the cursor
        at its end (its erasing is :data:`ERASE_ROW`), or None where they must work it out.

        Every recipient of a wall would otherwise build the same few screen parts anew;
        here they are one string, kept while the line (``buf``, a new string whenever it
        changes), the prompt and the width stay the same. Only plain ASCII that fits the
        row is kept: wide, combining or control characters, a hidden answer, a ^R search,
        a line that wraps, pending screen output or a deferred drawing take the general
        path. The drawing ends where it stood, so nothing here changes."""
        if (
            not self._drawn
            or not self.active
            or self._row
            or self.stale
            or self._search is not None
            or not self.screen.empty
        ):
            return None
        buf = self.buf
        if buf is not self._kept_buf:
            self._kept_buf = buf
            self._kept = self._keep(buf)
        kept = self._kept
        if kept is None or self.pos != len(buf) or self._col != len(kept) - _ERASE_LEN:
            return None
        return kept

    def _keep(self, buf: str) -> str | None:
        """:meth:`redraw_row`'s string for ``buf``, if the line is plain enough for one."""
        if self.hidden:
            return None
        text = self.prompt + buf
        if len(text) >= self.width or not (text.isascii() and text.isprintable()):
            return None
        return ERASE_ROW + text

    def refresh(self) -> None:
        """Do the deferred drawing: the whole line again, or only the cursor moved."""
        stale, self.stale = self.stale, 0
        if stale == WHOLE:
            if self.active:
                self._draw()
        elif stale:
            self._put_cursor()

    def resize(self, width: int) -> None:
        """The window changed width: the line wraps differently, so it is drawn again."""
        if width == self.width:
            return
        self.suspend()
        self.width = width
        self._kept_buf = None
        self.redraw()

    def finish(self, mark: str = "", newline: bool = True) -> None:
        """End the line on screen: cursor to its end, ``mark`` (``^C``), a newline."""
        s = self.screen
        if self.stale == WHOLE and self.active:
            self._draw()  # the terminal refreshes first where the interval allows
        self.stale = 0
        if self._drawn and not self.hidden and self.pos != len(self.buf):
            self.pos = len(self.buf)
            self._put_cursor()
        s.write(mark)
        if newline:
            s.newline()
        self.active = False
        self._drawn = False
        self._end_search()
        self._row = self._col = 0

    def complete(self, start: int, candidates: list[str]) -> None:
        """Apply the completer's answer: words that may replace ``buf[start:pos]``."""
        if not self.active or self.hidden or start > self.pos:
            return
        word = self.buf[start : self.pos]
        matches = sorted({c for c in candidates if c.startswith(word)})
        if not matches:
            self.screen.bell()
            return
        if len(matches) == 1:
            only = matches[0]
            self._insert(only[len(word) :] + ("" if only.endswith("/") else " "))
            return
        prefix = os.path.commonprefix(matches)  # noqa: RUF071 (characters, not paths)
        if len(prefix) > len(word):
            self._insert(prefix[len(word) :])
        elif self._tabs < 2:
            self.screen.bell()
        else:
            self._list(matches)

    # -- keys --------------------------------------------------------------------

    def key(self, k: str) -> Result:
        """One key: edits stay here; what the terminal must act on (a line, ^C, ^D, Tab)
        is returned, so the editor knows nothing of readers or commands."""
        if not self.active:
            return None
        if self._search is not None and self._search_key(k):
            return None
        first = k[0]
        if first >= " " and first != "\x7f":
            self._tabs = 0
            self._insert(k)
            return None
        if k == "\t":
            if self.hidden:
                return None
            self._tabs += 1
            return (COMPLETE, self.buf[: self.pos])
        self._tabs = 0
        if k in ("\r", "\n"):
            line = self.buf
            self.finish()
            return (LINE, line)
        if k == "\x03":
            return (INTERRUPT, "")
        if k == "\x04":
            if not self.buf:
                return (EOF, "")
            self._delete(self.pos, self.pos + 1)
            return None
        if k in ("\x7f", "\x08"):
            self._backspace()
        elif k == "\x15":
            self._kill_range(0, self.pos)
        elif self.hidden:
            return None
        else:
            self._edit_key(k)
        return None

    def _edit_key(self, k: str) -> None:
        buf, pos = self.buf, self.pos
        if k in ("\x01", keys.HOME):
            self._move(0)
        elif k in ("\x05", keys.END):
            self._move(len(buf))
        elif k in ("\x02", keys.LEFT):
            self._move(max(0, pos - 1))
        elif k in ("\x06", keys.RIGHT):
            self._move(min(len(buf), pos + 1))
        elif k == keys.WORD_LEFT:
            self._move(self._word_start(pos))
        elif k == keys.WORD_RIGHT:
            self._move(self._word_end(pos))
        elif k == keys.DELETE:
            self._delete(pos, pos + 1)
        elif k == "\x0b":
            self._kill_range(pos, len(buf))
        elif k == "\x17":
            i = pos
            while i > 0 and buf[i - 1].isspace():
                i -= 1
            while i > 0 and not buf[i - 1].isspace():
                i -= 1
            self._kill_range(i, pos)
        elif k == keys.KILL_WORD_BACK:
            self._kill_range(self._word_start(pos), pos)
        elif k == keys.KILL_WORD:
            self._kill_range(pos, self._word_end(pos))
        elif k == "\x19":
            if self._kill:
                self._insert(self._kill)
        elif k in ("\x10", keys.UP):
            self._history(-1)
        elif k in ("\x0e", keys.DOWN):
            self._history(1)
        elif k == "\x12":
            self._search_saved = (buf, pos)
            self._search = ""
            self._search_back = []
            self._search_i = len(self.history)
            self._search_failed = False
            self._render()
        elif k == "\x0c":
            self.screen.clear()
            self._drawn = False
            self._render()
        else:  # unknown sequences and unbound control keys
            self.screen.bell()

    def _search_key(self, k: str) -> bool:
        """^R mode; False when ``k`` ends the search and is then handled as usual.

        Each key searches on from the current match, never the whole history
        again: a longer query can only match at or before it, and a query that
        already fails keeps failing (no search at all). Backspace goes back to
        the search as it was before the last key."""
        query = self._search
        back = self._search_back
        assert query is not None and back is not None
        first = k[0]
        if first >= " " and first != "\x7f":
            room = MAX_QUERY - len(query)
            if len(k) > room:
                self.screen.bell()
                k = k[:room]
                if not k:
                    return True
            self._push_search()
            if self._search_failed:
                self._search = query + k
                self.screen.bell()
                self._render()
            else:
                self._find(query + k, min(self._search_i, len(self.history) - 1))
        elif k == "\x12":
            if self._search_failed or not query:
                self.screen.bell()
            else:
                self._push_search()
                self._find(query, self._search_i - 1)
        elif k in ("\x7f", "\x08"):
            if back:
                query, self._search_i, self._search_failed, buf, pos = back.pop()
                self._search = query
                self._set(buf, pos)
                self._render()
            else:
                self.screen.bell()
        elif k == "\x07":
            self._end_search()
            self._set(*self._search_saved)
            self._render()
        else:
            self._end_search()
            self._hist_i = len(self.history)
            self._render()  # the line under its own prompt again
            return False
        return True

    def _push_search(self) -> None:
        back = self._search_back
        assert back is not None and self._search is not None
        back.append((self._search, self._search_i, self._search_failed, self.buf, self.pos))

    def _end_search(self) -> None:
        self._search = None
        self._search_back = None

    def _find(self, query: str, start: int) -> None:
        """The latest history line at or before ``start`` that holds ``query``."""
        self._search = query
        if query:
            history = self.history
            for i in range(start, -1, -1):
                line = history[i]
                self.work += len(line)
                at = line.rfind(query)
                if at >= 0:
                    self._search_i = i
                    self._search_failed = False
                    self._set(line, at)
                    self._render()
                    return
            self._search_failed = True
            self.screen.bell()
        self._render()

    # -- editing -----------------------------------------------------------------

    def _set(self, buf: str, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self._bytes = _blen(buf)

    def _insert(self, text: str) -> None:
        room = self.max_bytes - self._bytes
        size = _blen(text)
        if size > room:
            fit, used = [], 0
            for ch in text:
                used += _blen(ch)
                if used > room:
                    break
                fit.append(ch)
            text, size = "".join(fit), _blen("".join(fit))
            self.screen.bell()
            if not text:
                return
        at_end = self.pos == len(self.buf)
        self.buf = self.buf[: self.pos] + text + self.buf[self.pos :]
        self.pos += len(text)
        self._bytes += size
        if self.hidden:
            return
        if at_end and self._drawn and not self.stale:
            self._append_drawn(text)
        else:
            self._render()

    def _append_drawn(self, text: str) -> None:
        """The cursor is at the end: draw only the new text."""
        width = self.width
        row, col = self._row, self._col
        if text.isascii():
            self.screen.write(text)
            total = col + len(text)
            row += total // width
            col = total % width
            if col == 0:  # the terminal waits to wrap; make it
                self.screen.newline()
        else:
            parts = []
            for ch in text:
                shown, w = cell(ch)
                if col + w > width:
                    if col < width:  # terminals differ here: break the row ourselves
                        parts.append("\n")
                    row, col = row + 1, 0
                col += w
                parts.append(shown)
            self.screen.write("".join(parts))
            if col >= width:
                self.screen.newline()
                row, col = row + 1, 0
        self._row, self._col = row, col

    def _backspace(self) -> None:
        if self.pos == 0:
            return
        if self.pos == len(self.buf) and self._drawn and not self.hidden and not self.stale:
            w = cell(self.buf[-1])[1]
            if 0 < w <= self._col:
                self._set(self.buf[:-1], self.pos - 1)
                self.screen.back(w)
                self.screen.erase_right()
                self._col -= w
                return
        self._delete(self.pos - 1, self.pos)

    def _delete(self, start: int, end: int) -> None:
        end = min(end, len(self.buf))
        if start >= end:
            return
        pos = self.pos if self.pos <= start else max(start, self.pos - (end - start))
        self._set(self.buf[:start] + self.buf[end:], pos)
        if not self.hidden:
            self._render()

    def _kill_range(self, start: int, end: int) -> None:
        if start < end:
            self._kill = self.buf[start:end]
            self._delete(start, end)

    def _move(self, pos: int) -> None:
        if pos != self.pos:
            self.pos = pos
            if self.defer:  # placing it costs a walk over the line: once per interval
                self.stale = self.stale or CURSOR
            else:
                self._put_cursor()

    def _word_start(self, pos: int) -> int:
        buf = self.buf
        while pos > 0 and not _is_word(buf[pos - 1]):
            pos -= 1
        while pos > 0 and _is_word(buf[pos - 1]):
            pos -= 1
        return pos

    def _word_end(self, pos: int) -> int:
        buf, n = self.buf, len(self.buf)
        while pos < n and not _is_word(buf[pos]):
            pos += 1
        while pos < n and _is_word(buf[pos]):
            pos += 1
        return pos

    def _history(self, step: int) -> None:
        i = self._hist_i + step
        if i < 0 or i > len(self.history):
            self.screen.bell()
            return
        if self._hist_i == len(self.history):
            self._saved = self.buf
        self._hist_i = i
        line = self._saved if i == len(self.history) else self.history[i]
        self._set(line, len(line))
        self._render()

    # -- drawing -----------------------------------------------------------------

    def _shown_prompt(self) -> str:
        if self._search is None:
            return self.prompt
        failed = "failed " if self._search_failed else ""
        return f"({failed}reverse-i-search)`{self._search}': "

    def _display(self) -> tuple[str, list[int] | None, int, int]:
        """What to draw, each character's width (None: all one column), where the line
        starts in it, and how many characters it has."""
        prompt = self._shown_prompt()
        text = prompt if self.hidden else prompt + self.buf
        if text.isascii() and text.isprintable():
            return text, None, len(prompt), len(text)
        shown: list[str] = []
        widths: list[int] = []
        width, col = self.width, 0
        for ch in text:
            s, w = cell(ch)
            if col + w > width:
                if col < width:  # a wide character that does not fit: break the row ourselves
                    shown.append("\n")
                col = 0
            col += w
            shown.append(s)
            widths.append(w)
        return "".join(shown), widths, len(prompt), len(widths)

    def _at(self, widths: list[int] | None, upto: int) -> tuple[int, int]:
        """Row and column where the character at ``upto`` starts (or the end is)."""
        width = self.width
        if widths is None:  # one column each: no walk over the line
            return divmod(upto, width)
        row = col = 0
        for i in range(upto):
            w = widths[i]
            if col + w > width:
                row, col = row + 1, 0
            col += w
        if col >= width:
            return row + 1, 0
        if upto < len(widths) and col + widths[upto] > width:
            return row + 1, 0
        return row, col

    def _render(self) -> None:
        """Draw the prompt and the whole line again: at once, or (``defer``) at the
        terminal's next :meth:`refresh`."""
        if self.defer:
            self.stale = WHOLE
        else:
            self._draw()

    def _draw(self) -> None:
        """Redraw the prompt and the whole line, then put the cursor back."""
        s = self.screen
        if self._drawn:
            s.up(self._row)
        s.column(0)
        s.erase_below()
        text, widths, start, n = self._display()
        s.write(text)
        end_row, end_col = self._at(widths, n)
        if end_col == 0 and end_row > 0:
            s.newline()
        self._drawn = True
        self._row, self._col = end_row, end_col
        self._put_cursor(widths, start)

    def _put_cursor(self, widths: list[int] | None = None, start: int = -1) -> None:
        if not self._drawn or self.hidden:
            return
        if start < 0:
            _, widths, start, _n = self._display()
        row, col = self._at(widths, start + self.pos)
        if (row, col) == (self._row, self._col):
            return
        s = self.screen
        if row > self._row:
            s.write("\n" * (row - self._row))
        else:
            s.up(self._row - row)
        s.column(col)
        self._row, self._col = row, col

    def _list(self, matches: list[str]) -> None:
        """Candidates in columns under the line, as readline's second Tab does."""
        names = [careful(m[m.rfind("/", 0, len(m) - 1) + 1 :]) for m in matches[:MAX_LISTED]]
        colw = max(max(wcswidth(n) for n in names), 1) + 2
        ncols = max(1, self.width // colw)
        nrows = -(-len(names) // ncols)
        lines = []
        for r in range(nrows):
            row = [names[c * nrows + r] for c in range(ncols) if c * nrows + r < len(names)]
            lines.append("".join(n + " " * (colw - wcswidth(n)) for n in row[:-1]) + row[-1])
        if len(matches) > MAX_LISTED:
            lines.append(f"... and {len(matches) - MAX_LISTED} more")
        self.refresh()
        pos = self.pos
        self.pos = len(self.buf)
        self._put_cursor()
        self.pos = pos
        if self._col:
            self.screen.newline()
        self.screen.write("\n".join(lines))
        self.screen.newline()
        self._drawn = False
        self._render()
