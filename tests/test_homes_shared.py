"""Homes shared by several processes (clustered nodes on one data dir): one quota across them.

Two ``Homes`` on one root stand for two nodes (each its own usage cache; the
``flock`` is per open file, so it excludes them in one process as it would
across processes); a last test runs real processes writing at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath

from shellserver.files import walk
from shellserver.files.homefs import Homes
from shellserver.files.sandbox import EDQUOT, FsError
from shellserver.files.tree import Tree
from shellserver.ops.threads import inline_runner


def result(d: Any) -> Any:
    box: list[Any] = []
    Deferred.fromCoroutine(d).addBoth(box.append)
    assert box
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


def node(root: Path, quota: int = 1000) -> Homes:
    return Homes(FilePath(str(root)), quota, inline_runner, shared=True)


def write(homes: Homes, name: str, size: int, append: bool = False) -> None:
    result(homes.home("alice").run(Tree.write, [name], b"x" * size, append))


def test_a_write_on_one_node_counts_on_the_other(tmp_path: Path) -> None:
    root = tmp_path / "data" / "home"
    a, b = node(root), node(root)
    write(a, "one", 10)
    write(b, "two", 10)  # b has measured the home now: 20 bytes
    write(a, "one", 600)  # a replaces its 10 bytes with 600: 610
    with pytest.raises(FsError) as e:
        write(b, "three", 600)  # b's own count (20) would let this through
    assert e.value.reason == EDQUOT
    write(b, "two", 300, append=True)  # 910: still fits, and b counts it
    with pytest.raises(FsError):
        write(a, "four", 100)
    assert walk.measure(str(root / "alice")).bytes == 910


def test_a_measurement_at_login_that_finds_an_operators_file_tells_the_other_node(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data" / "home"
    a, b = node(root), node(root)
    write(a, "one", 10)
    write(b, "two", 10)  # both have measured: 20 bytes
    (root / "alice" / "put-by-operator").write_bytes(b"x" * 900)
    d = a.measure_again("alice")  # alice's first session starts on a
    assert d is not None and d.called
    with pytest.raises(FsError) as e:
        write(b, "three", 100)  # b's own count (20) would let this through
    assert e.value.reason == EDQUOT
    assert node(root).measure_again("alice") is None  # never measured there: nothing to do


def test_reads_do_not_make_the_other_node_measure_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data" / "home"
    a, b = node(root), node(root)
    write(a, "one", 10)
    result(b.home("alice").run(Tree.listdir, []))
    measured: list[str] = []
    real = walk.measure
    monkeypatch.setattr(walk, "measure", lambda path: measured.append(path) or real(path))
    for _ in range(3):
        result(a.home("alice").run(Tree.listdir, []))
        result(b.home("alice").run(Tree.read, ["one"], 100))
    assert measured == []
    write(a, "one", 20)
    result(b.home("alice").run(Tree.listdir, []))
    assert measured == [str(root / "alice")]  # a change: b measures once


def test_a_home_deleted_through_one_node_is_measured_again_by_the_other(tmp_path: Path) -> None:
    root = tmp_path / "data" / "home"
    a, b = node(root), node(root)
    write(b, "big", 900)
    aside = result(a.set_aside("alice"))
    result(a.purge(aside))
    result(a.create("alice"))
    write(b, "big", 900)  # b's count (900) is stale: the home is new and empty


def test_a_home_unshared_keeps_no_lock_files(tmp_path: Path) -> None:
    root = tmp_path / "data" / "home"
    alone = Homes(FilePath(str(root)), 1000, inline_runner)
    result(alone.home("alice").run(Tree.write, ["f"], b"x", False))
    assert not (tmp_path / "data" / "homelocks").exists()
    write(node(root), "g", 1)
    assert os.listdir(tmp_path / "data" / "homelocks") == ["alice"]


WRITER = """
import os, sys, time
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath
from shellserver.files.sandbox import FsError
from shellserver.files.tree import Tree
from shellserver.files.homefs import Homes
from shellserver.ops.threads import inline_runner

homes = Homes(FilePath(sys.argv[1]), 100_000, inline_runner, shared=True)
refused = 0
print("ready", flush=True)
while not os.path.exists(sys.argv[3]):  # all start writing together
    time.sleep(0.001)
for i in range(200):
    time.sleep(0.0005)
    box = []
    job = homes.home("alice").run(Tree.write, [f"{sys.argv[2]}-{i % 7}"], b"x" * 1000, True)
    Deferred.fromCoroutine(job).addBoth(box.append)
    if hasattr(box[0], "raiseException"):
        box[0].trap(FsError)
        refused += 1
print(refused)
"""


def test_processes_writing_at_once_stay_within_the_quota(tmp_path: Path) -> None:
    root = tmp_path / "data" / "home"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), name, str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("p", "q", "r")
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    go.touch()
    refused = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        refused.append(int(out))
    used = walk.measure(str(root / "alice")).bytes
    assert used <= 100_000  # unshared, each process would have let ~100 KB through: 300 KB
    assert used == (600 - sum(refused)) * 1000


def test_homes_given_their_own_root_keep_temp_files_trash_and_locks_inside_it(
    tmp_path: Path,
) -> None:
    """``--homes DIR`` may be a mount point: what must share its filesystem (temp files
    renamed into a home, the trash) or be seen by other machines (locks) lives inside it,
    under names no user can have."""
    mount = tmp_path / "mnt"
    homes = Homes(FilePath(str(mount)), 1000, inline_runner, shared=True, inside=True)
    assert (homes.tmp, homes.trash, homes.locks) == tuple(
        str(mount / name) for name in (".tmp", ".trash", ".locks")
    )
    write(homes, "one", 10)
    assert (mount / ".locks" / "alice").is_file() and not (tmp_path / "homelocks").exists()
    beside = node(tmp_path / "data" / "home")
    assert beside.locks == str(tmp_path / "data" / "homelocks")
