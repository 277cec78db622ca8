"""util-linux "careful" text: what may reach another person's terminal.

Printable text of any script and TAB pass; other C0 controls and DEL become
caret notation, C1 controls the octal of their UTF-8 bytes, invalid input
bytes (kept as lone surrogates by ``surrogateescape``) their octal, and bidi
overrides/isolates/marks, line and paragraph separators and the invisible
characters ``\\u202e`` notation, so nobody can move another person's cursor,
retitle their window, reverse their text or hide part of it.
"""

from __future__ import annotations

#: Invisible, yet printable to ``str.isprintable``: the Hangul fillers and the
#: combining grapheme joiner. Every other character shown in notation is not
#: printable, so plain text still costs one scan (and ASCII no more than that).
_PRINTABLE_HIDDEN = "\u115f\u1160\u3164\uffa0\u034f"


def _hides(text: str) -> bool:
    """Whether ``text`` holds one of :data:`_PRINTABLE_HIDDEN`: five substring scans in C,
    none at all in Latin-1 text (CPython knows no such character can be there)."""
    return (
        "\u3164" in text
        or "\u115f" in text
        or "\u1160" in text
        or "\uffa0" in text
        or "\u034f" in text
    )


#: Shown as ``\\uXXXX``: bidi overrides and isolates, the bidi marks (LRM, RLM, ALM),
#: the line and paragraph separators, and the invisible zero-width space, word
#: joiner, BOM and soft hyphen, the fillers (Hangul, Mongolian vowel separator),
#: the combining grapheme joiner and the interlinear annotation controls: each can hide,
#: reorder or fake text that someone else reads as another person's words.
#: ZWJ/ZWNJ pass: emoji and scripts need them.
_NOTATION = (
    frozenset(range(0x202A, 0x202F))
    | frozenset(range(0x2066, 0x206A))
    | frozenset((0x200E, 0x200F, 0x061C, 0x2028, 0x2029, 0x200B, 0x2060, 0xFEFF, 0x00AD))
    | frozenset(map(ord, _PRINTABLE_HIDDEN))
    | frozenset((0x180E, 0xFFF9, 0xFFFA, 0xFFFB))
)


def _char(ch: str, keep_newlines: bool) -> str:
    o = ord(ch)
    if o < 0x20:
        if ch == "\t" or (keep_newlines and ch == "\n"):
            return ch
        return "^" + chr(o + 0x40)
    if o == 0x7F:
        return "^?"
    if 0x80 <= o <= 0x9F:
        return "".join(f"\\{b:03o}" for b in ch.encode("utf-8"))
    if 0xDC80 <= o <= 0xDCFF:
        return f"\\{o - 0xDC00:03o}"
    if 0xD800 <= o <= 0xDFFF or o in _NOTATION:
        return f"\\u{o:04x}"
    return ch


def careful(text: str, keep_newlines: bool = False) -> str:
    """Text one person chose, made safe to show on another's terminal (names, messages, paths,
    the command being run): every path that shows such text calls it, so plain text must cost
    one scan and come back as the same object."""
    # isprintable() is False for every character treated above but the few printable
    # invisible ones, looked for only in text that is not ASCII.
    if text.isprintable() and (text.isascii() or not _hides(text)):
        return text
    return "".join([_char(ch, keep_newlines) for ch in text])


def careful_lines(text: str) -> str:
    """Multi-line text (motd, .plan): newlines kept, CR LF read as one."""
    return careful(text.replace("\r\n", "\n"), keep_newlines=True)
