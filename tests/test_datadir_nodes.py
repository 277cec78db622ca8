"""One data dir, several nodes: one lock per node name, and none beside a server alone.

The holders are other processes (real ``flock`` across processes), started
with a tiny script that takes the lock, says so, and keeps it until its
standard input closes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from twisted.python.filepath import FilePath

from shellserver.ops.datadir import DataDir, DataDirLocked

HOLDER = """
import sys
from twisted.python.filepath import FilePath
from shellserver.ops.datadir import DataDir, DataDirLocked
node = sys.argv[2] or None
d = DataDir(FilePath(sys.argv[1]), node)
d.create()
try:
    d.lock()
except DataDirLocked as e:
    print("refused:", e, flush=True)
    raise SystemExit(1)
print("alone" if d.alone else "beside others", flush=True)
d.end_startup()
sys.stdin.read()
"""


@contextmanager
def holder(data: Path, node: str | None) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the data dir (alone) or a node's place in it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data), node or ""],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    assert line in ("alone\n", "beside others\n"), line
    proc.line = line.strip()  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()


def datadir(data: Path, node: str | None = None) -> DataDir:
    d = DataDir(FilePath(str(data)), node)
    d.create()
    return d


def test_nodes_of_different_names_share_the_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with holder(data, "a") as a:
        assert a.line == "alone"  # type: ignore[attr-defined]
        b = datadir(data, "b")
        b.lock()
        assert not b.alone  # a runs: its open login records are not left over
        assert b.running_nodes() == ["a", "b"]
        assert (data / "node-b.lock").read_text() == f"{os.getpid()}\n"
        b.unlock()
        assert datadir(data).running_nodes() == ["a"]
    assert datadir(data).running_nodes() == []


def test_two_nodes_of_one_name_refuse_each_other(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with (
        holder(data, "a") as a,
        pytest.raises(
            DataDirLocked,
            match=rf"^another shellserver node a is running on {data} \(pid {a.pid}\)$",
        ),
    ):
        datadir(data, "a").lock()
    d = datadir(data, "a")  # and once it is gone, the name is free
    d.lock()
    assert d.alone
    d.unlock()


def test_a_server_alone_and_nodes_exclude_each_other(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with holder(data, None) as alone:
        with pytest.raises(
            DataDirLocked,
            match=rf"^a shellserver that is not clustered is running on {data} "
            rf"\(pid {alone.pid}\); stop it first$",
        ):
            datadir(data, "a").lock()
        assert datadir(data).running_nodes() == []  # the refused node left nothing held
    with (
        holder(data, "a"),
        holder(data, "b"),
        pytest.raises(
            DataDirLocked, match=rf"^shellserver nodes are running on {data} \(a, b\); stop them"
        ),
    ):
        datadir(data).lock()


def test_is_locked_sees_a_server_alone_and_any_node(tmp_path: Path) -> None:
    """The CLI asks is_locked() before changing the store directly: nodes count too."""
    data = tmp_path / "data"
    d = datadir(data)
    assert not d.is_locked()
    with holder(data, None):
        assert d.is_locked()
    assert not d.is_locked()
    with holder(data, "a"):
        assert d.is_locked()
        with pytest.raises(DataDirLocked):  # and the CLI's own lock is refused meanwhile
            datadir(data).lock()
    assert not d.is_locked()


def test_nodes_start_one_after_another(tmp_path: Path) -> None:
    """Until end_startup() (store migrated, first admin made), the next node waits."""
    data = tmp_path / "data"
    first = datadir(data, "a")
    first.lock()
    script = HOLDER.replace("sys.stdin.read()", "")
    waiting = subprocess.Popen(
        [sys.executable, "-c", script, str(data), "b"], stdout=subprocess.PIPE, text=True
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(0.5)
        first.end_startup()
        assert waiting.wait(10) == 0
        assert waiting.stdout is not None and waiting.stdout.read() == "beside others\n"
    finally:
        waiting.kill()
        waiting.wait()
        if waiting.stdout is not None:
            waiting.stdout.close()
        first.unlock()


def test_the_control_socket_is_the_nodes(tmp_path: Path) -> None:
    assert datadir(tmp_path).control_socket.basename() == "control.sock"
    assert datadir(tmp_path, "web1").control_socket.basename() == "control-web1.sock"
