"""What a client can repeat costs bounded work and at most one redraw per session per
``PACE``: resizes, messages, edits of a long line, ^R search keys; and the history is bounded."""

from __future__ import annotations

import gc
from pathlib import Path

import pyte
import pytest
from harness import Client, add_user, make_server
from test_terminal import FakeWire, result

from shellserver.terminal.discipline import PACE, SEARCH_BUDGET, Redraws, Terminal
from shellserver.terminal.editor import HISTORY, HISTORY_BYTES, HISTORY_LINE, MAX_QUERY, LineEditor
from shellserver.terminal.screen import Screen
from shellserver.text.message import Message

LINE = "".join(chr(ord("a") + i % 26) for i in range(4000))
#: The start of a whole-line redraw: the prompt, then the line.
DRAWN = "$ " + LINE[:50]


def char_mode(lines: list[str] | None = None) -> tuple[Terminal, FakeWire]:
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    term.mode_changed(True)
    ran = [] if lines is None else lines
    term.set_handler(lambda line: ran.append(line) and None, lambda: "$ ")
    wire.out.clear()
    return term, wire


def sent(wire: FakeWire) -> str:
    data = b"".join(wire.out).decode()
    wire.out.clear()
    return data


def drawn(wire: FakeWire, text: str, cols: int, rows: int = 60) -> pyte.Screen:
    screen = pyte.Screen(cols, rows)
    pyte.Stream(screen).feed(text.replace("\r\n", "\n").replace("\n", "\r\n"))
    return screen


def test_a_resize_flood_is_one_redraw_per_interval_and_the_last_size_wins() -> None:
    term, wire = char_mode()
    term.text_received(LINE)
    editor = term._editor
    assert editor is not None
    all_out = sent(wire)
    for i in range(10_000):  # all in one interval: the clock does not move
        wire.width = 60 + i % 7
        term.resized()
    flood = sent(wire)
    assert flood.count(DRAWN) == 1  # the first resize drew at once; the rest wait
    assert len(flood) < 2 * len(LINE) + 1000
    wire.width = 123
    term.resized()
    assert sent(wire).count(DRAWN) == 0
    wire.clock.advance(PACE)  # one redraw at the end of the interval, at the last size
    tick = sent(wire)
    assert tick.count(DRAWN) == 1
    assert editor.width == 123 == term.width
    shown = drawn(wire, all_out + flood + tick, 123)
    rows = [r.rstrip() for r in shown.display if r.strip()]
    assert "".join(rows) == "$ " + LINE
    assert all(len(r) == 123 for r in rows[:-1])  # wrapped at the size last reported
    wire.clock.advance(PACE * 10)
    wire.width = 80
    term.resized()  # a while later: drawn at once again
    assert sent(wire).count(DRAWN) == 1


def test_typing_at_the_end_of_the_line_is_never_delayed() -> None:
    term, wire = char_mode()
    for ch in "hello":
        term.text_received(ch)
        assert sent(wire) == ch


def test_edits_in_the_middle_of_a_long_line_redraw_once_per_interval() -> None:
    lines: list[str] = []
    term, wire = char_mode(lines)
    term.text_received(LINE[:3000])
    before = sent(wire)
    for _ in range(1000):  # each its own packet: ^A, a letter, ^E
        term.text_received("\x01")
        term.text_received("x")
        term.text_received("\x05")
    flood = sent(wire)
    assert len(flood) < 2 * 4100, len(flood)  # at most the first redraw, not 1000 of them
    wire.clock.advance(PACE)
    tick = sent(wire)
    shown = drawn(wire, before + flood + tick, 80, rows=100)
    text = "".join(r.rstrip() for r in shown.display if r.strip())
    assert text == "$ " + "x" * 1000 + LINE[:3000]
    term.text_received("\r")  # the line runs as typed
    assert lines == ["x" * 1000 + LINE[:3000]]


def test_cursor_moves_cost_no_walk_over_the_line_per_key(monkeypatch: pytest.MonkeyPatch) -> None:
    term, wire = char_mode()
    term.text_received("日本語" * 600)  # wide characters: placing the cursor walks the line
    sent(wire)
    editor = term._editor
    assert editor is not None
    calls = 0
    real = LineEditor._display

    def counted(self: LineEditor) -> tuple[str, list[int] | None, int, int]:
        nonlocal calls
        calls += 1
        return real(self)

    monkeypatch.setattr(LineEditor, "_display", counted)
    for _ in range(500):
        term.text_received("\x02")
        term.text_received("\x06\x02")
    assert calls <= 2
    wire.clock.advance(PACE)
    assert calls <= 3
    assert editor.pos == len(editor.buf) - 500


def test_enter_after_a_deferred_redraw_waits_for_it_and_keeps_its_place() -> None:
    lines: list[str] = []
    term, wire = char_mode(lines)
    term.text_received("echo one")
    wire.width = 40
    term.resized()  # drawn at once
    wire.width = 50
    term.resized()  # deferred
    term.text_received("\x01X\r echo two\r")
    assert lines == []  # the Enter waits for the redraw, the keys after it too
    wire.clock.advance(PACE)
    assert lines == ["Xecho one", " echo two"]


def test_a_message_flood_redraws_a_long_line_once_per_interval() -> None:
    term, wire = char_mode()
    term.text_received(LINE)
    sent(wire)
    for i in range(300):  # one message a turn, all within one interval
        assert term.notify(Message.of(f"msg {i}\n"))
        wire.clock.advance(0)
    flood = sent(wire)
    assert all(f"msg {i}" in flood for i in range(300))
    assert flood.count(DRAWN) <= 1
    wire.clock.advance(PACE)
    assert sent(wire).count(DRAWN) == 1


def test_the_pending_redraw_goes_with_the_connection() -> None:
    term, wire = char_mode()
    term.text_received(LINE)
    for width in (40, 50):
        wire.width = width
        term.resized()
    assert wire.clock.getDelayedCalls()
    term.connection_lost()
    assert not [c for c in wire.clock.getDelayedCalls() if c.active()]


# -- ^R ------------------------------------------------------------------------------


def editor_with_history(lines: list[str]) -> tuple[LineEditor, Screen]:
    screen = Screen()
    ed = LineEditor(screen, width=80)
    for line in lines:
        ed.remember(line)
    ed.start("$ ")
    screen.take()
    return ed, screen


def test_a_failing_search_costs_nothing_more_per_key() -> None:
    ed, _ = editor_with_history([f"{i:03} " + "y" * 1000 for i in range(HISTORY)])
    ed.key("\x12")
    ed.key("z")  # searches the whole history once
    once = ed.work
    assert 0 < once <= HISTORY_BYTES
    for _ in range(5000):
        ed.key("z")
        ed.key("\x12")
    assert ed.work == once
    assert len(ed._search or "") == MAX_QUERY  # the query is bounded too


def test_each_key_searches_on_from_the_current_match() -> None:
    history = ["make all", "echo first", "ls", "echo second", "cat notes"]
    ed, _ = editor_with_history(history)
    ed.key("\x12")
    ed.key("e")
    assert ed.buf == "cat notes"  # "e" in "notes"
    ed.work = 0
    ed.key("c")  # "ec": on from "cat notes", first found in "echo second"
    assert ed.buf == "echo second"
    ed.work = 0
    ed.key("h")
    assert ed.buf == "echo second" and ed.work == len("echo second")  # still there: one line
    ed.key("\x12")
    assert ed.buf == "echo first"
    ed.key("\x7f")  # Backspace goes back to the search before the last key
    assert ed.buf == "echo second"
    ed.key("\x7f")
    ed.key("\x7f")
    assert ed.buf == "cat notes" and ed._search == "e"
    ed.key("\x05")  # any other key ends the search on the line found
    assert ed._search is None and ed.buf == "cat notes"


def test_search_work_past_the_budget_waits_for_the_next_interval() -> None:
    term, wire = char_mode()
    editor = term._editor
    assert editor is not None
    for i in range(HISTORY):
        editor.remember(f"{i:03}" + "a" * 120)
    # "a" matches at once; "ab" matches nowhere, so each "b" scans the whole history,
    # and each Backspace goes back to "a" for the next "b" to scan again.
    term.text_received("\x12a")
    editor.work = 0
    for _ in range(300):
        term.text_received("b")
        term.text_received("\x7f")
    assert editor.work <= SEARCH_BUDGET + HISTORY_BYTES
    assert term._pending  # the rest waits: a whole scan or two per interval
    for _ in range(300):
        wire.clock.advance(PACE)
        assert editor.work <= SEARCH_BUDGET + HISTORY_BYTES
    assert not term._pending and editor._search == "a"


# -- the history's bounds ---------------------------------------------------------------


def test_history_is_bounded_in_bytes_oldest_out_first() -> None:
    ed = LineEditor(Screen())
    for i in range(1000):
        ed.remember(f"{i:04} " + "é" * 400)  # 805 bytes each
    assert ed.history_bytes <= HISTORY_BYTES
    assert ed.history_bytes == sum(len(line.encode()) for line in ed.history)
    assert ed.history[-1].startswith("0999") and len(ed.history) == HISTORY_BYTES // 805
    ed.remember("x" * (HISTORY_LINE + 1))  # too long to keep: runs, is not kept
    assert ed.history[-1].startswith("0999")
    ed.remember("x" * HISTORY_LINE)
    assert ed.history[-1] == "x" * HISTORY_LINE


def test_a_session_with_a_full_history_is_freed_when_its_connection_goes(
    tmp_path: Path,
) -> None:
    server = make_server(tmp_path)
    add_user(server, "alice")
    c = Client(server)
    c.send_bytes(bytes((255, 253, 1, 255, 253, 3)))  # DO ECHO, DO SGA: character mode
    c.send_bytes(b"alice\rpassword1\r")
    c.output()
    for i in range(100):
        c.send_bytes(f"#{i:03} ".encode() + b"h" * 900 + b"\r")
    c.send_bytes(LINE[:3000].encode())
    c.send_bytes(bytes((255, 250, 31, 0, 60, 0, 20, 255, 240)))  # NAWS 60x20: drawn at once
    c.send_bytes(bytes((255, 250, 31, 0, 70, 0, 20, 255, 240)))  # another: a redraw pending
    (session,) = result(server.hub.sessions())
    terminal = c.protocol.receiver
    assert isinstance(terminal, Terminal) and terminal._editor is not None
    assert 0 < terminal._editor.history_bytes <= HISTORY_BYTES
    # Slotted classes take no weak references: look for the same objects among the live ones.
    ids = {id(terminal), id(terminal._editor)}
    del terminal, session
    # Freed by reference counting alone: the server freezes what survives a full collection
    # (ops/gcpolicy.py), so what only the collector could free would stay until its rescan.
    gc.collect()
    gc.disable()
    try:
        c.drop()
        alive = [
            o for o in gc.get_objects() if isinstance(o, Terminal | LineEditor) and id(o) in ids
        ]
    finally:
        gc.enable()
    assert alive == []
    assert not [call for call in c.clock.getDelayedCalls() if call.active() and call.time < 1]


def test_a_message_in_character_mode_is_one_write_with_the_line_drawn_again() -> None:
    term, wire = char_mode()
    term.text_received("hello world\x1b[D\x1b[D\x1b[D")  # the cursor three from the end
    before = sent(wire)
    wire.clock.advance(PACE)  # the last whole drawing long ago: the next is drawn at once
    assert term.notify(Message.of("Broadcast from bob: hi"))
    assert wire.out == []  # held till the end of the turn
    wire.clock.advance(0)
    assert len(wire.out) == 1  # erased, the message, the line again: one write
    block = sent(wire)
    assert block.startswith("\r\x1b[JBroadcast from bob: hi\r\n")
    assert block.endswith("$ hello world\r\x1b[10C")
    shown = drawn(wire, before + block, 80)
    assert [r.rstrip() for r in shown.display[:2]] == ["Broadcast from bob: hi", "$ hello world"]
    assert (shown.cursor.y, shown.cursor.x) == (1, 10)
    term.text_received("X")  # editing goes on where the cursor was
    wire.clock.advance(PACE)  # (the line after an insertion is drawn again once per interval)
    shown = drawn(wire, before + block + sent(wire), 80)
    assert shown.display[1].rstrip() == "$ hello woXrld"


def test_a_long_line_wrapped_is_erased_whole_before_the_message() -> None:
    term, wire = char_mode()
    wire.width = 20
    term.resized()
    term.text_received("x" * 45)  # three rows: "$ " and 45 characters at 20 columns
    before = sent(wire)
    wire.clock.advance(PACE)
    term.notify(Message.of("hi"))
    wire.clock.advance(0)
    assert len(wire.out) == 1
    shown = drawn(wire, before + sent(wire), 20)
    rows = [r.rstrip() for r in shown.display if r.strip()]
    assert rows == ["hi", "$ " + "x" * 18, "x" * 20, "x" * 7]


def test_a_held_message_the_wire_drops_leaves_the_line_as_drawn() -> None:
    term, wire = char_mode()
    term.text_received("abc")
    before = sent(wire)
    wire.clock.advance(PACE)
    assert term.notify(Message.of("lost"))
    wire.accept = False  # the client stopped reading before the end of the turn
    wire.clock.advance(0)
    assert wire.out == []
    wire.accept = True
    term.text_received("d")
    shown = drawn(wire, "$ " + before + sent(wire), 80)
    assert [r.rstrip() for r in shown.display if r.strip()] == ["$ abcd"]


def test_a_message_then_own_output_in_the_same_turn_keeps_their_order() -> None:
    term, wire = char_mode()
    term.text_received("ab")
    before = sent(wire)
    wire.clock.advance(PACE)
    term.notify(Message.of("first"))
    term.write("second\n")  # own output before the end of the turn: the message goes first
    wire.clock.advance(PACE)  # the line's second drawing in the interval waits for its end
    shown = drawn(wire, before + sent(wire), 80)
    assert [r.rstrip() for r in shown.display if r.strip()] == ["first", "second", "$ ab"]
