"""The sandbox: no typed path reaches outside the user's own home."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.python.filepath import FilePath

from shellserver.homefs import EACCES, EDQUOT, Home, Homes
from shellserver.threads import inline_runner


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
    return {"home": homes.home("alice"), "homes": homes, "tmp": tmp_path, "alice": alice}


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
    home: Home = world["home"]
    tmp: Path = world["tmp"]
    before = {p: p.read_bytes() for p in [tmp / "outside", tmp / "data/home/bob/secret"]}
    outcomes = []
    for op in (
        lambda parts: result(home.read(parts, 100)),
        lambda parts: result(home.write(parts, b"pwned")),
        lambda parts: result(home.write(parts, b"pwned", append=True)),
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
    home: Home = world["home"]
    for typed in ["/etc/passwd", "/home/bob/x", "~bob", "/home/alicex"]:
        with pytest.raises(Exception, match=EACCES):
            home.resolve("", typed)


def test_symlinks_planted_behind_our_back_are_refused(world: dict[str, Any]) -> None:
    home: Home = world["home"]
    alice: Path = world["alice"]
    os.symlink(world["tmp"] / "outside", alice / "sub" / "deep" / "late")
    with pytest.raises(Exception, match=EACCES):
        result(home.read(["sub", "deep", "late"], 10))
    # a directory swapped for a symlink after it was entered
    (alice / "sub" / "deep" / "late").unlink()
    os.rename(alice / "sub" / "deep", alice / "deep-moved")
    os.symlink(world["tmp"], alice / "sub" / "deep")
    with pytest.raises(Exception, match=EACCES):
        home.listdir(["sub", "deep"])
    with pytest.raises(Exception, match=EACCES):
        result(home.write(["sub", "deep", "outside"], b"x"))
    assert (world["tmp"] / "outside").read_text() == "outside"


def test_cd_then_directory_removed(world: dict[str, Any]) -> None:
    home: Home = world["home"]
    cwd = "sub/deep"
    (world["alice"] / "sub" / "deep").rmdir()
    with pytest.raises(Exception, match="No such file or directory"):
        home.listdir(home.resolve(cwd, "."))
    with pytest.raises(Exception, match="No such file or directory"):
        result(home.write(home.resolve(cwd, "f"), b"x"))
    assert home.resolve(cwd, "..") == ["sub"]
    assert home.listdir(home.resolve(cwd, "..")) == ["to-bob"]


def test_quota_refuses_and_leaves_nothing_partial(world: dict[str, Any]) -> None:
    home: Home = world["home"]
    used, _ = home.usage()
    room = home.quota - used
    result(home.write(["big"], b"x" * (room - 10)))
    with pytest.raises(Exception, match=EDQUOT):
        result(home.write(["more"], b"y" * 11))
    assert not (world["alice"] / "more").exists()
    with pytest.raises(Exception, match=EDQUOT):
        result(home.write(["big"], b"z" * 11, append=True))
    assert (world["alice"] / "big").read_bytes() == b"x" * (room - 10)
    with pytest.raises(Exception, match=EDQUOT):
        result(home.copy(["big"], ["copy"]))
    assert not (world["alice"] / "copy").exists()
    result(home.write(["big"], b"small"))  # replacing frees room
    result(home.copy(["big"], ["copy"]))
    assert not [p for p in os.listdir(world["alice"]) if p.endswith(".tmp")]


def test_touch_over_quota(world: dict[str, Any]) -> None:
    home: Home = world["home"]
    used, _ = home.usage()
    result(home.write(["fill"], b"x" * (home.quota - used)))
    with pytest.raises(Exception, match=EDQUOT):
        home.touch(["new"])
    home.touch(["fill"])  # existing files may still be touched


def test_large_files_go_through_the_io_runner(world: dict[str, Any]) -> None:
    calls: list[str] = []

    def runner(f: Any, *args: Any) -> Any:
        calls.append(f.__name__)
        return inline_runner(f, *args)

    home = Homes(world["homes"].root, 10**7, runner).home("alice")
    result(home.write(["big"], b"x" * 100_000))
    assert result(home.read(["big"], 10**6)) == b"x" * 100_000
    assert calls == ["_replace", "_read"]
    result(home.write(["small"], b"x"))
    assert calls == ["_replace", "_read"]


def test_plan_is_sanitised_and_cut(world: dict[str, Any]) -> None:
    homes: Homes = world["homes"]
    assert result(homes.plan("alice")) == "No Plan."
    (world["alice"] / ".plan").write_bytes(b"hacking \x1b[2J\n" + b"p" * 5000)
    plan = result(homes.plan("alice"))
    assert plan.startswith("Plan:\nhacking ^[[2J\n") and len(plan) < 4200


def test_delete_home(world: dict[str, Any]) -> None:
    homes: Homes = world["homes"]
    homes.delete("alice")
    assert not world["alice"].exists()
    assert (world["tmp"] / "outside").exists()
    assert (world["tmp"] / "data/home/bob/secret").exists()
