"""The key parser and the line editor without any wire; character mode in the terminal."""

from __future__ import annotations

import sys
from pathlib import Path

import pyte
from harness import Client, add_user, make_server
from test_terminal import FakeWire, result

from shellserver.terminal import keys
from shellserver.terminal.discipline import MAX_PENDING, Redraws, Terminal
from shellserver.terminal.editor import LineEditor
from shellserver.terminal.keys import KeyParser
from shellserver.terminal.screen import Screen


def test_sequences_text_and_control_keys() -> None:
    p = KeyParser()
    assert p.feed("ab\x1b[Dc\x01") == ["ab", keys.LEFT, "c", "\x01"]
    assert p.feed("\x1b") == []  # a lone ESC waits for the next character
    assert p.feed("OA\x1b[3~\x1bb\x1b[1;5C") == [keys.UP, keys.DELETE, keys.WORD_LEFT, "\x1bf"]
    assert p.feed("\x1b\x03") == [keys.UNKNOWN, "\x03"]  # ESC before a control key: dropped


def test_unknown_and_overlong_sequences_are_never_text() -> None:
    p = KeyParser()
    got = p.feed("\x1b[99;99;99;99;99;99;99;99;99;99;99~x\x1b[5~\x1b]y")
    assert got == [keys.UNKNOWN, "x", keys.UNKNOWN, keys.UNKNOWN, "y"]


def render(ed: LineEditor, screen: Screen, cols: int = 20) -> pyte.Screen:
    shown = pyte.Screen(cols, 6)
    pyte.Stream(shown).feed(screen.take().replace("\n", "\r\n"))
    return shown


def test_wrapped_line_redraw_keeps_the_cursor() -> None:
    screen = Screen()
    ed = LineEditor(screen, width=20)
    ed.start("$ ")
    for k in ["abcdefghij", "日本語", "klmnopqrstu", "\x02", "\x02"]:
        ed.key(k)
    ed.suspend()
    ed.redraw()
    shown = render(ed, screen)
    assert [line.rstrip() for line in shown.display[:2]] == ["$ abcdefghij日本語kl", "mnopqrstu"]
    assert (shown.cursor.y, shown.cursor.x) == (1, 7)


def test_a_wide_character_at_the_edge_starts_the_next_row() -> None:
    for keys_typed in (["a" * 17 + "日x"], ["a" * 17, "日x"], ["a" * 17, "日x", "\x0c"]):
        screen = Screen()
        ed = LineEditor(screen, width=20)
        ed.start("$ ")
        for k in keys_typed:
            ed.key(k)
        shown = render(ed, screen)
        assert shown.display[0].rstrip() == "$ " + "a" * 17
        assert shown.display[1].rstrip() == "日x"
        assert (shown.cursor.y, shown.cursor.x) == (1, 3)


def test_the_line_is_capped_with_a_bell() -> None:
    screen = Screen()
    ed = LineEditor(screen, max_bytes=10)
    ed.start("")
    ed.key("ééééé")
    screen.take()
    ed.key("x")
    assert ed.buf == "ééééé" and screen.take() == "\x07"


def term_in_char_mode() -> tuple[Terminal, FakeWire]:
    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    term.mode_changed(True)
    term.set_handler(lambda line: None, lambda: "$ ")
    return term, wire


def test_lone_escapes_unknown_sequences_and_a_huge_paste_stay_bounded() -> None:
    term, wire = term_in_char_mode()
    wire.text()
    for _ in range(1000):
        term.text_received("\x1b")
        term.text_received("\x1b\x1b")
    term.text_received("\x1b[9999z" * 10_000)
    out = wire.text()
    assert "\x07" in out and "9999" not in out
    term.text_received("y" * 1024 * 1024)  # a 1 MB paste into one line
    editor = term._editor
    assert editor is not None and len(editor.buf) == 4096
    assert "\x07" in wire.text()
    assert sys.getsizeof(editor.buf) < 8192


def test_keys_typed_while_a_command_runs_are_held_bounded_then_replayed() -> None:
    from twisted.internet.defer import Deferred

    wire = FakeWire()
    term = Terminal(wire, Redraws(wire.clock))
    term.mode_changed(True)
    gate: Deferred[None] = Deferred()
    ran: list[str] = []

    def handler(line: str) -> Deferred[None] | None:
        ran.append(line)
        return gate if line == "slow" else None

    term.set_handler(handler, lambda: "$ ")
    term.text_received("slow\r")
    term.text_received("a\rb\r" + "z" * (2 * MAX_PENDING))
    assert term._pending_len <= MAX_PENDING
    gate.callback(None)
    assert ran == ["slow", "a", "b"]
    assert term._editor is not None and term._editor.buf == "z" * 4096


def idle_cost(character: bool) -> float:
    import tracemalloc

    wires = [FakeWire() for _ in range(200)]
    redraws = Redraws(wires[0].clock)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    terms = []
    for wire in wires:
        term = Terminal(wire, redraws)
        if character:
            term.mode_changed(True)
        terms.append(term)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return sum(s.size_diff for s in after.compare_to(before, "filename")) / len(terms)


def test_an_idle_character_mode_session_costs_a_few_hundred_bytes_more() -> None:
    line, char = idle_cost(False), idle_cost(True)
    print(f"idle terminal: line mode {line:.0f} B, character mode {char:.0f} B")
    assert char - line < 1024, (line, char)


def test_terminal_type_and_window_size_reach_the_session(tmp_path: Path) -> None:
    server = make_server(tmp_path)
    add_user(server, "alice")
    c = Client(server)
    c.send_bytes(
        bytes([255, 251, 24])  # WILL TTYPE
        + bytes([255, 250, 24, 0])
        + b"VT220"
        + bytes([255, 240])
        + bytes([255, 250, 31, 0, 40, 0, 12, 255, 240])  # NAWS 40x12
    )
    c.login("alice")
    (session,) = result(server.hub.sessions())
    assert (session.term, session.width, session.height) == ("vt220", 40, 12)
    c.output()
    c.send("touch " + " ".join(f"file{i:02}" for i in range(12)))
    listing = c.run("ls").splitlines()
    assert len(listing) > 2 and all(len(line) <= 40 for line in listing)


def test_history_keeps_500_shell_lines_and_never_lines_read_by_a_command() -> None:
    term, _ = term_in_char_mode()
    for i in range(510):
        term.text_received(f"echo {i}\r")
    editor = term._editor
    assert editor is not None
    assert len(editor.history) == 500 and editor.history[0] == "echo 10"
    d = term.read_line("")  # as write does for its message lines
    term.text_received("secret message line\r")
    assert result(d) == "secret message line"
    assert "secret message line" not in editor.history
    assert term.character_mode
