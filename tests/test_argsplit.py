"""Shell-like splitting: quotes, escapes, redirection, glob marks, errors."""

from __future__ import annotations

import random

import pytest

from shellserver.shell.argsplit import (
    CommandLine,
    NotSupported,
    SplitError,
    _split_general,
    split_line,
)


@pytest.mark.parametrize(
    "line, words",
    [
        ("who", ("who",)),
        ("  write   bob  hi  ", ("write", "bob", "hi")),
        ("echo 'a  b' c", ("echo", "a  b", "c")),
        ('echo "a \\"q\\" \\\\ \\n"', ("echo", 'a "q" \\ \\n')),
        ("echo a\\ b", ("echo", "a b")),
        ("echo \"\" ''", ("echo", "", "")),
        ("echo pre'mid'\"post\"", ("echo", "premidpost")),
        ("echo trailing\\", ("echo", "trailing\\")),
        ("echo '>' \">>\" \\>", ("echo", ">", ">>", ">")),
        ("echo\ttab", ("echo", "tab")),
        (
            "echo ';' \"|\" \\; '&&' a\\|b '||' & $HOME",
            ("echo", ";", "|", ";", "&&", "a|b", "||", "&", "$HOME"),
        ),
        ("echo fish&chips a&", ("echo", "fish&chips", "a&")),
    ],
)
def test_words(line: str, words: tuple[str, ...]) -> None:
    parsed = split_line(line)
    assert parsed.words == words
    assert parsed.redirect is None


@pytest.mark.parametrize(
    "line, words, redirect",
    [
        ("echo hi > f", ("echo", "hi"), (">", "f")),
        ("echo hi >f", ("echo", "hi"), (">", "f")),
        ("echo hi> f", ("echo", "hi"), (">", "f")),
        ("echo hi>>f", ("echo", "hi"), (">>", "f")),
        ("echo a >> 'my file'", ("echo", "a"), (">>", "my file")),
        ("> f echo hi", ("echo", "hi"), (">", "f")),
    ],
)
def test_redirections(line: str, words: tuple[str, ...], redirect: tuple[str, str]) -> None:
    parsed = split_line(line)
    assert (parsed.words, parsed.redirect) == (words, redirect)


def test_glob_marks_only_unquoted() -> None:
    parsed = split_line("ls *.txt '*.md' a\\* b?c [ab] \"x*\"")
    assert parsed.words == ("ls", "*.txt", "*.md", "a*", "b?c", "[ab]", "x*")
    assert parsed.globs == (False, True, False, False, True, True, False)


@pytest.mark.parametrize(
    "line, message",
    [
        ("echo 'open", "syntax error: unterminated quote"),
        ('echo "open', "syntax error: unterminated quote"),
        ("echo >", "syntax error near unexpected token `newline'"),
        ("echo > > f", "syntax error near unexpected token `>'"),
        ("echo >a >b", "syntax error: only one redirection is supported"),
    ],
)
def test_errors(line: str, message: str) -> None:
    with pytest.raises(SplitError) as e:
        split_line(line)
    assert str(e.value) == message


@pytest.mark.parametrize(
    "line",
    [
        "ls | grep x",
        "echo hi | cat",
        "ls -l; cat f",
        "ls;",
        "a|b",
        "true && false",
        "true&&false",
        "false || true",
        "echo 'quoted' | cat",
        "echo a >f; ls",
    ],
)
def test_pipes_and_lists_are_refused(line: str) -> None:
    with pytest.raises(NotSupported) as e:
        split_line(line)
    assert (e.value.program, str(e.value)) == ("sh", "pipes and command lists are not supported")


def test_fast_path_matches_general_path() -> None:
    lines = ["who", "write bob hello there", "  a  b ", "", "x", "mesg n"]
    tildes = ["ls ~", "cd ~/a", "write bob hi ~m1~", "echo a~b ~ x~", "~ ~~ a"]
    for line in lines + tildes:
        assert split_line(line) == _split_general(line)


def test_tilde_marks_only_at_word_start() -> None:
    parsed = split_line("ls ~/a b~ ~")
    assert parsed.tildes == (False, True, False, True)


def test_any_input_raises_nothing_but_split_error() -> None:
    rng = random.Random(1234)
    alphabet = "ab~ \t'\"\\><*?[]$;|&\x00\x1b\u202eé漢\udc9b"
    for _ in range(5000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        try:
            parsed = split_line(line)
        except SplitError:
            continue
        assert isinstance(parsed, CommandLine)
        assert len(parsed.words) == len(parsed.globs)
        assert parsed == _split_general(line)
