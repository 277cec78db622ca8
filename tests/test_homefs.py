"""The sandbox: no typed path reaches outside the user's own home."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath

from shellserver.files.homefs import Homes
from shellserver.files.sandbox import EACCES, EDQUOT
from shellserver.files.tree import Tree
from shellserver.ops.threads import inline_runner


def result(d: Any) -> Any:
    box: list[Any] = []
    Deferred.fromCoroutine(d).addBoth(box.append)
    assert box
    if hasattr(box[0], "raiseException"):
        box[0].raiseException()
    return box[0]


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    """A data dir with alice's and bob's homes, a secret outside, and planted symlinks."""
    root = tmp_path / "data" / "home"
    alice = root / "alice"
    bob = root / "bob"
    for d in (alice / "sub" / "deep", bob):
        d.mkdir(parents=True)
    (bob / "secret").write_text("bob's")
    (tmp_path / "data" / "accounts.sqlite3").write_text("db")
    (tmp_path / "outside").write_text("outside")
    (alice / "notes.txt").write_text("hello\n")
    os.symlink(tmp_path / "outside", alice / "link-out")
    os.symlink(bob, alice / "sub" / "to-bob")
    os.symlink("/etc", alice / "etc")
    os.symlink("notes.txt", alice / "inner-link")
    homes = Homes(FilePath(str(root)), 10_000, inline_runner)
    return {"home": homes.home("alice").tree, "homes": homes, "tmp": tmp_path, "alice": alice}


HOSTILE = [
    "../bob/secret",
    "../../accounts.sqlite3",
    "../../../outside",
    "/home/bob/secret",
    "/home/bob",
    "/etc/passwd",
    "/",
    "/home",
    "/home/alice/../bob/secret",
    "~bob/secret",
    "~bob",
    "~root/.ssh",
    "link-out",
    "link-out/x",
    "sub/to-bob/secret",
    "sub/to-bob",
    "etc/passwd",
    "etc",
    "inner-link",
    "./sub/../link-out",
    "sub/deep/../../link-out",
    "nul\x00byte",
    "ctl\x1b[31m",
    "del\x7f",
    "c1\u009b",
    "x" * 10_000,
    "a/" * 3000,
    "bad\udc9b",
    "/home/alice/link-out",
    "~/link-out",
    "~alice/sub/to-bob/secret",
]


@pytest.mark.parametrize("typed", HOSTILE)
def test_hostile_paths_never_read_or_write_outside(world: dict[str, Any], typed: str) -> None:
    home: Tree = world["home"]
    tmp: Path = world["tmp"]
    before = {p: p.read_bytes() for p in [tmp / "outside", tmp / "data/home/bob/secret"]}
    outcomes = []
    for op in (
        lambda parts: home.read(parts, 100),
        lambda parts: home.write(parts, b"pwned"),
        lambda parts: home.write(parts, b"pwned", append=True),
        lambda parts: home.touch(parts),
        lambda parts: home.mkdir(parts),
        lambda parts: home.remove(parts, recursive=True),
        lambda parts: home.listdir(parts),
        lambda parts: home.rename(parts, ["moved"]),
        lambda parts: home.rename(["notes.txt"], parts),
    ):
        try:
            got = op(home.resolve("sub", typed))
        except Exception as e:  # every failure must be a clean FsError
            assert type(e).__name__ == "FsError", repr(e)
            outcomes.append(e.reason)  # type: ignore[attr-defined]
            continue
        if isinstance(got, bytes):
            assert got == b"hello\n" or b"bob" not in got
    for path, content in before.items():
        assert path.read_bytes() == content
    assert not (tmp / "data/home/bob/moved").exists()
    assert os.path.realpath(world["alice"]).startswith(str(tmp / "data/home/alice"))
    assert outcomes, "at least one operation must have been refused"


@pytest.mark.parametrize(
    "typed, parts",
    [
        ("..", []),
        ("../..", []),
        ("/home/alice", []),
        ("/home/alice/", []),
        ("/home/alice/sub", ["sub"]),
        ("~", []),
        ("~/sub/./deep", ["sub", "deep"]),
        ("~alice/sub", ["sub"]),
        ("deep", ["sub", "deep"]),
        ("../notes.txt", ["notes.txt"]),
        ("漢字 ok", ["sub", "漢字 ok"]),
    ],
)
def test_lexical_resolution_stays_inside(
    world: dict[str, Any], typed: str, parts: list[str]
) -> None:
    assert world["home"].resolve("sub", typed) == parts


def test_absolute_and_other_homes_are_permission_denied(world: dict[str, Any]) -> None:
    home: Tree = world["home"]
    for typed in ["/etc/passwd", "/home/bob/x", "~bob", "/home/alicex"]:
        with pytest.raises(Exception, match=EACCES):
            home.resolve("", typed)


def test_symlinks_planted_behind_our_back_are_refused(world: dict[str, Any]) -> None:
    home: Tree = world["home"]
    alice: Path = world["alice"]
    os.symlink(world["tmp"] / "outside", alice / "sub" / "deep" / "late")
    with pytest.raises(Exception, match=EACCES):
        home.read(["sub", "deep", "late"], 10)
    # a directory swapped for a symlink after it was entered
    (alice / "sub" / "deep" / "late").unlink()
    os.rename(alice / "sub" / "deep", alice / "deep-moved")
    os.symlink(world["tmp"], alice / "sub" / "deep")
    with pytest.raises(Exception, match=EACCES):
        home.listdir(["sub", "deep"])
    with pytest.raises(Exception, match=EACCES):
        home.write(["sub", "deep", "outside"], b"x")
    assert (world["tmp"] / "outside").read_text() == "outside"


def test_cd_then_directory_removed(world: dict[str, Any]) -> None:
    home: Tree = world["home"]
    cwd = "sub/deep"
    (world["alice"] / "sub" / "deep").rmdir()
    with pytest.raises(Exception, match="No such file or directory"):
        home.listdir(home.resolve(cwd, "."))
    with pytest.raises(Exception, match="No such file or directory"):
        home.write(home.resolve(cwd, "f"), b"x")
    assert home.resolve(cwd, "..") == ["sub"]
    assert home.listdir(home.resolve(cwd, "..")) == ["to-bob"]


def test_quota_refuses_and_leaves_nothing_partial(world: dict[str, Any]) -> None:
    home: Tree = world["home"]
    used = home.used().bytes
    room = home.quota - used
    home.write(["big"], b"x" * (room - 10))
    with pytest.raises(Exception, match=EDQUOT):
        home.write(["more"], b"y" * 11)
    assert not (world["alice"] / "more").exists()
    with pytest.raises(Exception, match=EDQUOT):
        home.write(["big"], b"z" * 11, append=True)
    assert (world["alice"] / "big").read_bytes() == b"x" * (room - 10)
    with pytest.raises(Exception, match=EDQUOT):
        home.copy(["big"], ["copy"])
    assert not (world["alice"] / "copy").exists()
    home.write(["big"], b"small")  # replacing frees room
    home.copy(["big"], ["copy"])
    assert not [p for p in os.listdir(world["alice"]) if p.endswith(".tmp")]


def test_touch_over_quota(world: dict[str, Any]) -> None:
    home: Tree = world["home"]
    used = home.used().bytes
    home.write(["fill"], b"x" * (home.quota - used))
    with pytest.raises(Exception, match=EDQUOT):
        home.touch(["new"])
    home.touch(["fill"])  # existing files may still be touched


class HeldRunner:
    """A runner that holds each job until the test runs them, in order."""

    def __init__(self) -> None:
        self.pending: list[tuple[Deferred[Any], Any, tuple[Any, ...]]] = []

    def __call__(self, f: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((d, f, args))
        return d

    def run_all(self) -> None:
        while self.pending:
            d, f, args = self.pending.pop(0)
            d.callback(f(*args))


def test_every_job_runs_through_the_runner_one_per_home_at_a_time(
    world: dict[str, Any],
) -> None:
    """Jobs of one home wait for each other; another home's jobs do not wait for them."""
    runner = HeldRunner()
    pending = runner.pending
    homes = Homes(world["homes"].root, 10**7, runner)
    alice, bob = homes.home("alice"), homes.home("bob")
    done: list[Any] = []
    for h, parts in ((alice, ["a"]), (alice, ["b"]), (bob, ["c"])):
        Deferred.fromCoroutine(h.run(Tree.touch, parts)).addBoth(done.append)
    assert [args[0].user for _, _, args in pending] == ["alice", "bob"]  # alice's second waits
    runner.run_all()
    assert done == [None, None, None]
    assert sorted(os.listdir(world["alice"])) >= ["a", "b"]
    assert alice.tree.used().entries == 9


def test_a_new_quota_keeps_the_home_behind_the_same_queue(world: dict[str, Any]) -> None:
    """A job queued before the quota changed and one after still run one at a time."""
    runner = HeldRunner()
    pending = runner.pending
    homes = Homes(world["homes"].root, 10**7, runner)
    Deferred.fromCoroutine(homes.home("alice").run(Tree.touch, ["a"]))
    homes.quota = 2 * 10**7
    after = homes.home("alice")
    Deferred.fromCoroutine(after.run(Tree.touch, ["b"]))
    assert len(pending) == 1  # the second waits for the first
    runner.run_all()
    assert after.tree.quota == 2 * 10**7 and after.tree.used().entries == 9


def test_plan_is_sanitised_and_cut(world: dict[str, Any]) -> None:
    homes: Homes = world["homes"]
    assert result(homes.plan("alice")) == "No Plan."
    (world["alice"] / ".plan").write_bytes(b"hacking \x1b[2J\n" + b"p" * 5000)
    plan = result(homes.plan("alice"))
    assert plan.startswith("Plan:\nhacking ^[[2J\n") and len(plan) < 4200


def test_userdel_moves_the_home_aside_then_removes_it(world: dict[str, Any]) -> None:
    homes: Homes = world["homes"]
    data: Path = world["tmp"] / "data"
    aside = result(homes.set_aside("alice"))
    assert not world["alice"].exists() and aside.startswith(str(data / "trash"))
    result(homes.restore("alice", aside))  # the account could not be deleted: back it comes
    assert (world["alice"] / "notes.txt").read_text() == "hello\n"
    aside = result(homes.set_aside("alice"))
    result(homes.purge(aside))
    assert os.listdir(data / "trash") == []
    assert (world["tmp"] / "outside").exists()
    assert (data / "home/bob/secret").exists()


def test_a_new_account_never_inherits_a_leftover_home(world: dict[str, Any]) -> None:
    homes: Homes = world["homes"]
    result(homes.create("alice"))
    assert os.listdir(world["alice"]) == []
    assert homes.home("alice").tree.used().entries == 0


def deep_tree(base: Path, depth: int) -> int:
    """A chain ``d/d/d/…`` deeper than PATH_MAX, made with relative steps; returns entries."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
            new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
    finally:
        os.close(fd)
    return depth * 2


@pytest.fixture
def fast_tmp(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs directory where there is one: thousands of mkdirs cost seconds on some disks."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    where = Path(tempfile.mkdtemp(dir=shm))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_deep_trees_are_measured_and_removed_without_recursion(fast_tmp: Path) -> None:
    root = fast_tmp / "data" / "home"
    alice = root / "alice"
    (alice / "top").mkdir(parents=True)
    (alice / "notes").write_bytes(b"12345")
    entries = deep_tree(alice / "top", 2100)  # 4200+ bytes of path, > recursion limit
    homes = Homes(FilePath(str(root)), 10**7, inline_runner)
    tree = homes.home("alice").tree
    assert (tree.used().bytes, tree.used().entries) == (5, 2 + entries)
    tree.remove(["top"], recursive=True)
    assert not (alice / "top").exists()
    assert (tree.used().bytes, tree.used().entries) == (5, 1)
    (alice / "top").mkdir()
    deep_tree(alice / "top", 2100)
    result(homes.purge(result(homes.set_aside("alice"))))  # userdel of a deep home
    assert not alice.exists()
    assert os.listdir(fast_tmp / "data" / "trash") == []


def test_a_home_that_is_a_symlink_is_refused(world: dict[str, Any]) -> None:
    root: Path = world["tmp"] / "data" / "home"
    os.symlink(root / "bob", root / "eve")
    eve = Homes(FilePath(str(root)), 10_000, inline_runner).home("eve").tree
    for op in (
        lambda: eve.read(["secret"], 100),
        lambda: eve.write(["x"], b"pwned"),
        lambda: eve.listdir([]),
        lambda: eve.used(),
    ):
        with pytest.raises(Exception, match=EACCES):
            op()
    assert os.listdir(root / "bob") == ["secret"]


def test_temporary_files_never_take_a_name_the_user_can_take(world: dict[str, Any]) -> None:
    tree: Tree = world["home"]
    for name in (f".victim.{os.getpid()}.tmp", ".victim.tmp", "victim.tmp"):
        tree.mkdir([name])
    tree.write(["victim"], b"x")
    tree.copy(["victim"], ["copy"])
    assert (world["alice"] / "copy").read_bytes() == b"x"
    assert os.listdir(world["tmp"] / "data" / "tmp") == []


def test_disk_full_says_no_space_and_is_logged_once_a_minute(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from twisted.internet.task import Clock
    from twisted.logger import globalLogPublisher

    clock = Clock()
    homes = Homes(world["homes"].root, 10**7, inline_runner, clock)
    home = homes.home("alice")
    real_replace = os.replace

    def full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        for _ in range(3):
            with pytest.raises(Exception, match="No space left on device"):
                result(home.run(Tree.write, ["f"], b"x"))
        clock.advance(61)
        with pytest.raises(Exception, match="No space left on device"):
            result(home.run(Tree.write, ["f"], b"x"))
    finally:
        globalLogPublisher.removeObserver(logged.append)
        monkeypatch.setattr(os, "replace", real_replace)
    assert len([e for e in logged if "no space left" in e.get("log_format", "")]) == 2
    assert home.tree.used().entries == 7  # nothing was counted for the failed writes


def test_an_unexpected_os_error_is_still_one_clean_line(world: dict[str, Any]) -> None:
    home = world["homes"].home("alice")

    def job(tree: Tree) -> None:
        os.utime(os.path.join(tree.root, "gone"))

    with pytest.raises(Exception, match="No such file or directory") as caught:
        result(home.run(job))
    assert type(caught.value).__name__ == "FsError"
    result(home.run(Tree.touch, ["after"]))  # the home's queue goes on
