"""A message in character mode over a short line draws it again from a string the editor
keeps (``LineEditor.redraw_row``): the bytes must be exactly those the general drawing
builds part by part, and anything not plain ASCII on one row must take the general path."""

from __future__ import annotations

import pyte
import pytest
from test_terminal import FakeWire

from shellserver.terminal import keys
from shellserver.terminal.discipline import PACE, Redraws, Terminal
from shellserver.terminal.editor import ERASE_ROW, LineEditor
from shellserver.terminal.screen import Screen
from shellserver.text.message import Message

BENCH_PROMPT = "someone@benchhost:~$ "

#: (prompt, keys typed, window width, whether the kept string may be used)
CASES = [
    ("$ ", "", 80, True),
    ("", "", 80, True),
    ("", "ls", 20, True),
    (BENCH_PROMPT, "", 80, True),
    (BENCH_PROMPT, "hello world", 80, True),
    (BENCH_PROMPT, "write bob  two  spaces ~!@#$%^&*()_+{}|:<>?", 80, True),
    ("$ ", "x" * 77, 80, True),  # 79 columns: the row is not full
    ("$ ", "x" * 78, 80, False),  # 80 columns: the cursor waits on the next row
    ("$ ", "x" * 17, 20, True),
    ("$ ", "x" * 18, 20, False),
    ("$ ", "x" * 45, 20, False),  # three rows
    ("$ ", "x" * 300, 500, True),
    ("$ ", "héllo", 80, False),  # not ASCII
    ("$ ", "日本語", 80, False),  # wide
    ("$ ", "e\u0301", 80, False),  # a combining mark
    ("$ ", "🙂 ok", 80, False),  # an emoji, two columns
    ("λ> ", "ls", 80, False),  # a prompt not ASCII
    ("日本> ", "", 80, False),
    ("$ ", "abc" + keys.LEFT, 80, False),  # the cursor not at the end
    ("$ ", "abc" + keys.LEFT + keys.RIGHT, 80, True),  # back at the end
    ("$ ", "abcd\x7f", 80, True),  # Backspace at the end
    ("$ ", "abc\x01", 80, False),  # ^A: the cursor at the start
    ("$ ", "\x12", 80, False),  # a ^R search shows its own prompt
]


class Recorded:
    """``LineEditor.redraw_row`` wrapped, to see which path each message took."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, off: bool = False) -> None:
        self.answers: list[str | None] = []
        real = LineEditor.redraw_row

        def redraw_row(editor: LineEditor) -> str | None:
            kept = None if off else real(editor)
            self.answers.append(kept)
            return kept

        monkeypatch.setattr(LineEditor, "redraw_row", redraw_row)


def deliver(prompt: str, typed: str, width: int) -> tuple[bytes, bytes, str]:
    """A character-mode terminal showing ``prompt`` and ``typed`` at ``width``: what it
    sent before, the one block of a message arriving at a human pace, and the line."""
    wire = FakeWire()
    wire.width = width
    term = Terminal(wire, Redraws(wire.clock))
    term.mode_changed(True)
    term.resized()
    term.set_handler(lambda line: None, lambda: prompt)
    term.text_received(typed)
    wire.clock.advance(PACE)  # any deferred drawing done
    wire.clock.advance(2 * PACE)  # and the last whole drawing long ago
    before = b"".join(wire.out)
    wire.out.clear()
    assert term.notify(Message.of("Broadcast from bob: hi"))
    wire.clock.advance(0)
    assert len(wire.out) == 1
    return before, wire.out[0], term.leftover()[1]


@pytest.mark.parametrize(("prompt", "typed", "width", "kept"), CASES)
def test_the_kept_row_sends_the_bytes_of_the_general_drawing(
    monkeypatch: pytest.MonkeyPatch, prompt: str, typed: str, width: int, kept: bool
) -> None:
    with monkeypatch.context() as m:
        general = Recorded(m, off=True)
        before, expected, _ = deliver(prompt, typed, width)
    assert general.answers == [None]
    fast = Recorded(monkeypatch)
    before_again, got, line = deliver(prompt, typed, width)
    assert before_again == before
    assert got == expected
    assert fast.answers == [ERASE_ROW + prompt + line if kept else None]
    assert b"\x1b[JBroadcast from bob: hi\r\n" in got


def test_the_kept_row_follows_edits_prompts_and_resizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """One terminal, a message after each change: the kept string is made again whenever
    the line, the prompt or the width changed, and the screen shows the same as the
    general path's."""
    steps = [
        ("type", ""),  # the empty line under the first prompt
        ("type", "\r"),  # the same empty line under the next
        ("type", "ab"),
        ("type", "c"),
        ("type", "\x7f"),
        ("type", "\r"),  # the command runs; a new prompt
        ("type", "xyz"),
        ("width", 21),
        ("width", 20),  # "% xyz" plus the message's redraw still fits
        ("type", "\x15"),  # ^U: the line empty again
        ("type", "q" * 17),  # 19 columns at 20
        ("type", "q"),  # 20: the general path
        ("type", "\x7f"),
        ("type", "\r"),
        ("type", "k"),
    ]

    def run(off: bool) -> tuple[bytes, list[str | None]]:
        with monkeypatch.context() as m:
            rec = Recorded(m, off=off)
            order = iter(["$ ", "> ", "% ", "longer prompt> "])
            wire = FakeWire()
            term = Terminal(wire, Redraws(wire.clock))
            term.mode_changed(True)
            term.set_handler(lambda line: None, lambda: next(order))
            for what, arg in steps:
                if what == "type":
                    assert isinstance(arg, str)
                    term.text_received(arg)
                else:
                    assert isinstance(arg, int)
                    wire.width = arg
                    term.resized()
                wire.clock.advance(PACE)  # a deferred drawing done
                wire.clock.advance(2 * PACE)  # and the last whole drawing long ago
                assert term.notify(Message.of(f"after {what} {arg!r}"))
                wire.clock.advance(0)
            return b"".join(wire.out), rec.answers

    expected, none = run(off=True)
    assert set(none) == {None}
    got, answers = run(off=False)
    assert got == expected
    assert [a is not None for a in answers] == [
        True,
        True,
        True,
        True,
        True,
        True,
        True,
        True,
        True,
        True,
        True,
        False,
        True,
        True,
        True,
    ]
    screen = pyte.Screen(20, 60)
    pyte.Stream(screen).feed(got.decode())
    assert screen.display[screen.cursor.y].rstrip() == "longer prompt> k"


def test_the_kept_row_needs_an_empty_screen_and_a_line_drawn() -> None:
    """Output the editor holds back (a bell), a line not yet drawn, a deferred cursor move,
    a hidden answer, a control character: none may be skipped over, so the general path
    draws them."""
    screen = Screen()
    ed = LineEditor(screen, width=80)
    ed.defer = True
    ed.start("$ ")
    ed.key("abc")
    screen.take()
    assert ed.redraw_row() == ERASE_ROW + "$ abc"
    screen.bell()
    assert ed.redraw_row() is None
    screen.take()
    ed.suspend()
    screen.take()
    assert ed.redraw_row() is None  # erased, not drawn again yet
    ed.redraw()
    ed.refresh()
    screen.take()
    assert ed.redraw_row() == ERASE_ROW + "$ abc"
    ed.key(keys.LEFT)
    ed.key(keys.END)  # back at the end, but the cursor's move not drawn yet
    assert ed.stale
    assert ed.redraw_row() is None
    ed.refresh()
    assert ed.redraw_row() == ERASE_ROW + "$ abc"
    ed.finish()
    ed.start("Password: ", hidden=True)
    ed.key("secret")
    screen.take()
    assert ed.redraw_row() is None
    ed.finish()
    ed.start("$ ")
    ed.type_in("a\x01b")  # a control character shown as its escape
    screen.take()
    assert ed.redraw_row() is None
