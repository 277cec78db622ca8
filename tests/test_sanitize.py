"""util-linux careful text and wall's column wrap."""

from __future__ import annotations

import re

import pytest

from shellserver.text.sanitize import careful, careful_lines
from shellserver.text.wrap import display_width, hard_wrap


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("\x1b[2J", "^[[2J"),
        ("bell\x07", "bell^G"),
        ("a\rb", "a^Mb"),
        ("nul\x00", "nul^@"),
        ("del\x7f", "del^?"),
        ("tab\there", "tab\there"),
        ("line\nnext", "line^Jnext"),
        ("\u009b31m", "\\302\\23331m"),
        (b"\x9b".decode("utf-8", "surrogateescape"), "\\233"),
        (b"ok\xff\xfe".decode("utf-8", "surrogateescape"), "ok\\377\\376"),
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
        ("\u2066iso\u2069", "\\u2066iso\\u2069"),
        ("\ud800", "\\ud800"),
        ("a\u200eb\u200fc\u061cd", "a\\u200eb\\u200fc\\u061cd"),
        ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
        ("zero\u200bwidth\u2060join", "zero\\u200bwidth\\u2060join"),
        ("\ufeffbom soft\u00adhyphen", "\\ufeffbom soft\\u00adhyphen"),
        ("next\u0085line", "next\\302\\205line"),
        (
            "".join(map(chr, range(0x80, 0xA0))),
            "".join(f"\\302\\{c & 0xFF:03o}" for c in range(0x80, 0xA0)),
        ),
        ("\u3164\u115f\u1160\uffa0", "\\u3164\\u115f\\u1160\\uffa0"),
        ("日本\u3164語", "日本\\u3164語"),  # printable to isprintable(), yet invisible
        ("mongol\u180evowel cgj\u034f", "mongol\\u180evowel cgj\\u034f"),
        ("\ufff9anchor\ufffaruby\ufffb", "\\ufff9anchor\\ufffaruby\\ufffb"),
    ],
)
def test_dangerous_characters_are_made_visible(raw: str, shown: str) -> None:
    assert careful(raw) == shown


@pytest.mark.parametrize(
    "text",
    [
        "plain ascii",
        "café",
        "漢字テキスト",
        "😀",
        "👩‍💻",
        "🇫🇷",
        "é",
        "Ελληνικά",
        "עברית",
        "e\u0301",
        "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # Persian: ZWNJ joins nothing
        "\U0001f469\u200d\U0001f467",  # ZWJ: one picture
    ],
)
def test_ordinary_unicode_passes_unchanged(text: str) -> None:
    assert careful(text) == text


def test_every_special_character_fails_the_fast_path_check() -> None:
    specials = [chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]]
    specials += [chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]]
    specials += [chr(c) for c in range(0xDC80, 0xDD00)]
    specials += [chr(c) for c in (0x200E, 0x200F, 0x061C, 0x2028, 0x2029, 0x200B, 0x2060)]
    specials += ["\ufeff", "\u00ad"]
    assert not any(ch.isprintable() for ch in specials)


def test_multi_line_text_keeps_newlines() -> None:
    assert careful_lines("hello\r\nworld\x1b\n") == "hello\nworld^[\n"


def test_display_width() -> None:
    assert display_width("abc") == 3
    assert display_width("漢字") == 4
    assert display_width("e\u0301") == 1
    assert display_width("👩\u200d💻") == 4


def test_hard_wrap_at_79_columns() -> None:
    assert hard_wrap("x" * 79) == ["x" * 79]
    assert hard_wrap("x" * 80) == ["x" * 79, "x"]
    assert hard_wrap("a\n\nb") == ["a", "", "b"]
    assert hard_wrap("") == [""]
    wide = "漢" * 40  # 80 columns: a wide char never straddles the cut
    pieces = hard_wrap(wide)
    assert pieces == ["漢" * 39, "漢"]
    assert all(display_width(p) <= 79 for p in pieces)
    assert hard_wrap("ab" + "é" * 100, 10)[0] == "ab" + "é" * 8


@pytest.mark.parametrize(
    "raw", ["\x1b", "\x9b", b"\xff".decode("utf-8", "surrogateescape"), "\u202e"]
)
@pytest.mark.parametrize("lead", range(70, 80))
def test_hard_wrap_never_cuts_inside_a_notation(raw: str, lead: int) -> None:
    line = careful("x" * lead + raw * 3 + "y" * 10)
    pieces = hard_wrap(line)
    assert "".join(pieces) == line
    assert all(display_width(p) <= 79 for p in pieces)
    for piece in pieces:
        # every backslash in a piece starts a whole notation; no piece ends in half a caret one
        assert "\\" not in re.sub(r"\\[0-7]{3}|\\u[0-9a-f]{4}", "", piece)
        assert not piece.endswith("^") and not piece.startswith("[")


def test_hard_wrap_notation_in_non_ascii_lines() -> None:
    line = careful("é" * 78 + "\x1b[31m")
    assert hard_wrap(line) == ["é" * 78, "^[[31m"]
