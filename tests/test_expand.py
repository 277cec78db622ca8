"""~ and glob expansion: as a shell does it, and bounded whatever the patterns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shellserver.files.expand import MAX_EXAMINED, Word, expand
from shellserver.files.sandbox import E2BIG
from shellserver.files.tree import Tree


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    root = tmp_path / "home" / "alice"
    (root / "sub").mkdir(parents=True)
    for name in ["a.txt", "b.txt", ".hidden", "sub/c.txt"]:
        (root / name).write_text("")
    return Tree("alice", str(root), str(tmp_path / "tmp"), 10**6)


@pytest.mark.parametrize(
    "word, glob, tilde, expected",
    [
        ("*.txt", True, False, ["a.txt", "b.txt"]),
        ("*", True, False, ["a.txt", "b.txt", "sub"]),
        (".*", True, False, [".hidden"]),
        ("*/*.txt", True, False, ["sub/c.txt"]),
        ("*/c.txt", True, False, ["sub/c.txt"]),  # only where it exists, as in sh
        ("*/", True, False, ["sub/"]),  # directories only
        ("*.txt/", True, False, ["*.txt/"]),  # files are not directories: no match
        ("*/nope", True, False, ["*/nope"]),
        ("*/../*.txt", True, False, ["sub/../a.txt", "sub/../b.txt"]),
        ("nomatch*", True, False, ["nomatch*"]),
        ("~", False, True, ["/home/alice"]),
        ("~/sub", False, True, ["/home/alice/sub"]),
        ("~alice/x", False, True, ["/home/alice/x"]),
        ("~bob/x", False, True, ["~bob/x"]),
        ("~/*.txt", True, True, ["/home/alice/a.txt", "/home/alice/b.txt"]),
        ("~", False, False, ["~"]),
    ],
)
def test_words_expand_as_in_sh(
    tree: Tree, word: str, glob: bool, tilde: bool, expected: list[str]
) -> None:
    assert expand(tree, "", "echo", [Word(word, glob, tilde)]) == expected


def test_each_directory_is_listed_once_and_the_product_is_refused(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(150):
        Path(tree.root, f"d{i:03d}").mkdir()
    listed: list[Any] = []
    real = Tree.listdir

    def listdir(self: Tree, parts: list[str]) -> list[str]:
        listed.append(parts)
        return real(self, parts)

    monkeypatch.setattr(Tree, "listdir", listdir)
    with pytest.raises(Exception, match=E2BIG):  # 150 x 150 x 150 words: stopped at 10,000
        expand(tree, "", "echo", [Word("*/../*/../*", True)])
    assert listed == [[]]


def test_the_work_of_looking_is_bounded_too(tree: Tree) -> None:
    for i in range(300):
        Path(tree.root, f"f{i:03d}").write_text("")
    words = [Word(f"{'?' * k}", True) for k in range(1, 1000)]  # each matches nothing, or little
    with pytest.raises(Exception, match=E2BIG):
        expand(tree, "", "echo", words)
    assert MAX_EXAMINED < 1000 * 304
