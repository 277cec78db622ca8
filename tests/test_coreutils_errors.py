"""File commands fail as GNU coreutils does: the same text for the same mistake.

Each row: commands that set the scene (valid both here and in sh), the command
that fails, and the error coreutils 9 prints for it. The table is checked
against the shell server, and, where GNU coreutils is installed, against the
real programs, so a row can only hold coreutils' own words.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import Client, add_user, make_server
from twisted.internet.defer import Deferred

ROWS: list[tuple[list[str], str, str]] = [
    # cp
    (["touch b"], "cp b b", "cp: 'b' and 'b' are the same file"),
    (["mkdir d"], "cp d e", "cp: -r not specified; omitting directory 'd'"),
    ([], "cp x y", "cp: cannot stat 'x': No such file or directory"),
    (["touch f"], "cp f f/x", "cp: cannot stat 'f/x': Not a directory"),
    (["touch f"], "cp f nope/x",
     "cp: cannot create regular file 'nope/x': No such file or directory"),
    (["mkdir -p d/f", "touch f"], "cp f d",
     "cp: cannot overwrite directory 'd/f' with non-directory"),
    (["touch a b"], "cp a b c", "cp: target 'c': No such file or directory"),
    (["touch a b c"], "cp a b c", "cp: target 'c': Not a directory"),
    (["mkdir -p d/e"], "cp -r d d/x", "cp: cannot copy a directory, 'd', into itself, 'd/x'"),
    (["mkdir -p d/e"], "cp -r d d", "cp: cannot copy a directory, 'd', into itself, 'd/d'"),
    (["mkdir -p d/e", "touch f"], "cp -r d f",
     "cp: cannot overwrite non-directory 'f' with directory 'd'"),
    ([], "cp -r x y", "cp: cannot stat 'x': No such file or directory"),
    # mv
    (["touch b"], "mv b b", "mv: 'b' and 'b' are the same file"),
    (["mkdir -p a/b", "touch b"], "mv b a",
     "mv: cannot overwrite directory 'a/b' with non-directory"),
    (["mkdir -p a/b", "touch b"], "mv a/b .",
     "mv: cannot overwrite non-directory './b' with directory 'a/b'"),
    (["mkdir a"], "mv a a/b", "mv: cannot move 'a' to a subdirectory of itself, 'a/b'"),
    (["mkdir -p a/b"], "mv a a/b", "mv: cannot move 'a' to a subdirectory of itself, 'a/b/a'"),
    (["mkdir d"], "mv d d", "mv: cannot move 'd' to a subdirectory of itself, 'd/d'"),
    (["mkdir -p a c/a/z"], "mv a c", "mv: cannot move 'a' to 'c/a': Directory not empty"),
    ([], "mv x y", "mv: cannot stat 'x': No such file or directory"),
    (["touch f"], "mv f/x y", "mv: cannot stat 'f/x': Not a directory"),
    (["touch f"], "mv f f/x", "mv: cannot stat 'f/x': Not a directory"),
    (["touch f"], "mv f nope/x", "mv: cannot move 'f' to 'nope/x': No such file or directory"),
    (["touch a b"], "mv a b c", "mv: target 'c': No such file or directory"),
    (["touch a b c"], "mv a b c", "mv: target 'c': Not a directory"),
    # rm, rmdir
    (["mkdir d"], "rm d", "rm: cannot remove 'd': Is a directory"),
    ([], "rm x", "rm: cannot remove 'x': No such file or directory"),
    (["touch f"], "rm f/x", "rm: cannot remove 'f/x': Not a directory"),
    (["mkdir d"], "rm -r .", "rm: refusing to remove '.' or '..' directory: skipping '.'"),
    (["mkdir d"], "rm -r d/..", "rm: refusing to remove '.' or '..' directory: skipping 'd/..'"),
    (["mkdir -p d/e"], "rmdir d", "rmdir: failed to remove 'd': Directory not empty"),
    ([], "rmdir x", "rmdir: failed to remove 'x': No such file or directory"),
    (["touch f"], "rmdir f", "rmdir: failed to remove 'f': Not a directory"),
    # mkdir, touch
    (["mkdir d"], "mkdir d", "mkdir: cannot create directory 'd': File exists"),
    ([], "mkdir x/y", "mkdir: cannot create directory 'x/y': No such file or directory"),
    (["touch f"], "mkdir f/x", "mkdir: cannot create directory 'f/x': Not a directory"),
    (["touch f"], "mkdir -p f/x", "mkdir: cannot create directory 'f': Not a directory"),
    (["touch f"], "mkdir -p f", "mkdir: cannot create directory 'f': File exists"),
    ([], "touch x/y", "touch: cannot touch 'x/y': No such file or directory"),
    (["touch f"], "touch f/x", "touch: cannot touch 'f/x': Not a directory"),
    # cat, ls
    (["mkdir d"], "cat d", "cat: d: Is a directory"),
    ([], "cat x", "cat: x: No such file or directory"),
    (["touch f"], "cat f/x", "cat: f/x: Not a directory"),
    ([], "ls x", "ls: cannot access 'x': No such file or directory"),
    (["touch f"], "ls f/x", "ls: cannot access 'f/x': Not a directory"),
]  # fmt: skip


@pytest.mark.parametrize("setup, line, error", ROWS, ids=[r[1] for r in ROWS])
def test_the_shell_server_says_it(tmp_path: Path, setup: list[str], line: str, error: str) -> None:
    server = make_server(tmp_path)
    add_user(server, "alice")
    assert server.homes is not None
    Deferred.fromCoroutine(server.homes.create("alice"))
    c = Client(server)
    c.login("alice")
    for step in setup:
        assert c.run(step) == "alice@testhost:~$ ", step
    assert c.run(line) == f"{error}\nalice@testhost:~$ "


def _gnu_coreutils() -> bool:
    mv = shutil.which("mv")
    if mv is None:
        return False
    version = subprocess.run([mv, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"GNU coreutils\)? (\d+)", version)
    return m is not None and int(m.group(1)) >= 9


@pytest.mark.skipif(not _gnu_coreutils(), reason="needs GNU coreutils 9 or newer")
def test_coreutils_says_the_same(tmp_path: Path) -> None:
    wrong = []
    for i, (setup, line, error) in enumerate(ROWS):
        where = tmp_path / str(i)
        where.mkdir()
        script = "; ".join([*setup, f"{line} 2>&1"])
        got = subprocess.run(
            ["sh", "-c", script], cwd=where, capture_output=True, text=True,
            env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        ).stdout  # fmt: skip
        if got != error + "\n":
            wrong.append((line, got))
    assert not wrong
