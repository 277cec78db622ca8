"""The file commands through the whole stack, on real files in a temp home."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from harness import Client, add_user, held_drains, hold_db_call, make_server
from twisted.internet.defer import Deferred

from shellserver.app.assembly import Assembly
from shellserver.files.homefs import Home
from shellserver.ops.threads import inline_runner
from shellserver.store.accounts import NoSuchUser
from shellserver.wires.telnet.codes import IAC, NAWS, SB, SE


@pytest.fixture
def server(tmp_path: Path) -> Assembly:
    srv = make_server(tmp_path, quota=2000)
    add_user(srv, "alice")
    add_user(srv, "root1", admin=True)
    return srv


@pytest.fixture
def alice(server: Assembly) -> Client:
    assert server.homes is not None
    Deferred.fromCoroutine(server.homes.create("alice"))
    c = Client(server)
    assert "alice@testhost" in c.login("alice")
    return c


def home(server: Assembly, user: str = "alice") -> Path:
    assert server.homes is not None
    return Path(server.homes.root.path) / user


def test_pwd_cd_and_prompt(alice: Client) -> None:
    assert alice.run("pwd") == "/home/alice\nalice@testhost:~$ "
    alice.run("mkdir -p a/b")
    assert alice.run("cd a/b").endswith("alice@testhost:~/a/b$ ")
    assert alice.run("pwd").startswith("/home/alice/a/b\n")
    assert alice.run("cd ..").endswith("~/a$ ")
    assert alice.run("cd /home/alice/a/b").endswith("~/a/b$ ")
    assert alice.run("cd").endswith("alice@testhost:~$ ")
    assert alice.run("cd ../../..").endswith("alice@testhost:~$ ")  # .. stops at home
    assert alice.run("cd nope").startswith("cd: nope: No such file or directory\n")
    alice.run("touch f")
    assert alice.run("cd f").startswith("cd: f: Not a directory\n")
    assert alice.run("cd /etc").startswith("cd: /etc: Permission denied\n")
    assert alice.run("cd ~root1").startswith("cd: ~root1: Permission denied\n")


def test_echo_redirect_and_cat(alice: Client, server: Assembly) -> None:
    assert alice.run("echo hello   world").startswith("hello world\n")
    alice.run("echo first > notes")
    alice.run("echo second >> notes")
    assert (home(server) / "notes").read_text() == "first\nsecond\n"
    assert alice.run("cat notes").startswith("first\nsecond\n")
    alice.run("echo 'a > b' >notes")
    assert alice.run("cat notes").startswith("a > b\n")
    assert alice.run("cat nope").startswith("cat: nope: No such file or directory\n")
    alice.run("mkdir d")
    assert alice.run("cat d").startswith("cat: d: Is a directory\n")
    assert alice.run("echo x > d").startswith("echo: d: Is a directory\n")
    assert alice.run("echo x > /etc/passwd").startswith("echo: /etc/passwd: Permission denied\n")
    assert alice.run("who > f").startswith("who: output redirection is not supported")


def test_cat_sanitises_and_streams(alice: Client, server: Assembly) -> None:
    (home(server) / "evil").write_bytes(b"\x1b]0;owned\x07text\n")
    assert alice.run("cat evil").startswith("^[]0;owned^Gtext\n")
    # large files go out whole, in chunks; a character split between chunks stays whole
    (home(server) / "huge").write_bytes(b"x" * (16 * 1024 - 1) + "é".encode() + b"y" * 10**6)
    out = alice.run("cat huge")
    assert out == "x" * (16 * 1024 - 1) + "é" + "y" * 10**6 + "\nalice@testhost:~$ "


def test_ls_plain_long_all_and_columns(alice: Client, server: Assembly) -> None:
    for name in ["b.txt", "a.txt", ".hidden", "c.md"]:
        alice.run(f"touch {name}")
    alice.run("mkdir dir")
    assert alice.run("ls").startswith("a.txt  b.txt  c.md  dir\n")
    out = alice.run("ls -a")
    assert out.startswith(".  ..  .hidden  a.txt  b.txt  c.md  dir\n")
    long = alice.run("ls -l").splitlines()
    assert long[0].startswith("-rw-------") and long[0].endswith(" a.txt")
    assert long[3].startswith("drwx------") and long[3].endswith(" dir")
    assert alice.run("ls -la").startswith("drwx")
    assert alice.run("ls nope").startswith("ls: cannot access 'nope': No such file or directory\n")
    assert alice.run("ls -z").startswith("ls: invalid option -- 'z'\nUsage: ls")
    assert alice.run("ls --bogus").startswith("ls: unrecognized option '--bogus'\nUsage: ls")
    assert alice.run("rm -r --x\x1b").startswith("rm: unrecognized option '--x^['\nUsage: rm")
    out = alice.run("ls a.txt dir")
    assert out.startswith("a.txt\n\ndir:\n")


def test_ls_columns_follow_the_terminal_width(alice: Client) -> None:
    for i in range(30):
        alice.run(f"touch file-number-{i:02d}")
    wide = alice.run("ls").splitlines()[:-1]
    assert all(len(line) <= 80 for line in wide) and len(wide) < 30
    alice.send_bytes(bytes([IAC, SB, NAWS, 0, 40, 0, 24, IAC, SE]))
    narrow = alice.run("ls").splitlines()[:-1]
    assert all(len(line) <= 40 for line in narrow) and len(narrow) > len(wide)


def test_ls_sanitises_names(alice: Client, server: Assembly) -> None:
    (home(server) / "bad\x1b[2Jname").write_text("")
    assert "bad^[[2Jname" in alice.run("ls")


def test_globs(alice: Client) -> None:
    for name in ["a.txt", "b.txt", "c.md", ".h.txt"]:
        alice.run(f"touch {name}")
    assert alice.run("echo *.txt").startswith("a.txt b.txt\n")
    assert alice.run("echo '*.txt'").startswith("*.txt\n")
    assert alice.run("echo *.none").startswith("*.none\n")
    assert alice.run("echo ?.md [ab].txt").startswith("c.md a.txt b.txt\n")
    alice.run("mkdir d")
    alice.run("touch d/x.txt")
    assert alice.run("echo */*.txt").startswith("d/x.txt\n")
    alice.run("rm *.txt")
    assert alice.run("ls").startswith("c.md  d\n")


def test_mkdir_rmdir_rm(alice: Client, server: Assembly) -> None:
    alice.run("mkdir d")
    assert alice.run("mkdir d").startswith("mkdir: cannot create directory 'd': File exists\n")
    assert alice.run("mkdir x/y").startswith(
        "mkdir: cannot create directory 'x/y': No such file or directory\n"
    )
    alice.run("mkdir -p x/y/z")
    assert (home(server) / "x/y/z").is_dir()
    alice.run("touch d/f")
    assert alice.run("rmdir d").startswith("rmdir: failed to remove 'd': Directory not empty\n")
    assert alice.run("rm d").startswith("rm: cannot remove 'd': Is a directory\n")
    alice.run("rm d/f")
    alice.run("rmdir d")
    assert not (home(server) / "d").exists()
    alice.run("rm -r x")
    assert not (home(server) / "x").exists()
    assert alice.run("rm nope").startswith("rm: cannot remove 'nope': No such file or directory\n")
    assert alice.run("rm -f nope") == "alice@testhost:~$ "
    assert alice.run("rmdir .").startswith("rmdir: failed to remove '.': Permission denied\n")
    assert alice.run("rm -r ~").startswith(
        "rm: cannot remove '/home/alice': Permission denied\n"  # ~ is expanded, as by a shell
    )


def test_mv_and_cp(alice: Client, server: Assembly) -> None:
    alice.run("echo data > a")
    alice.run("cp a b")
    assert (home(server) / "b").read_text() == "data\n"
    alice.run("mkdir d")
    alice.run("mv a d")
    assert (home(server) / "d/a").read_text() == "data\n"
    alice.run("mv b c")
    assert not (home(server) / "b").exists() and (home(server) / "c").exists()
    alice.run("cp c d/a d")  # several sources into a directory
    assert alice.run("cp c").startswith("cp: missing destination file operand after 'c'\nUsage:")
    assert alice.run("cp nope x").startswith("cp: cannot stat 'nope': No such file or directory\n")
    assert alice.run("cp d e").startswith("cp: -r not specified; omitting directory 'd'\n")
    assert alice.run("mv c /home/root1/c").startswith(
        "mv: cannot move 'c' to '/home/root1/c': Permission denied\n"
    )
    assert alice.run("cp c /etc/c").startswith(
        "cp: cannot create regular file '/etc/c': Permission denied\n"
    )
    assert alice.run("cp c c2 c3").startswith("cp: target 'c3': No such file or directory\n")
    assert alice.run("cp c c2 c").startswith("cp: target 'c': Not a directory\n")


def test_quota_on_every_write_path(alice: Client, server: Assembly) -> None:
    line = "x" * 900
    alice.run(f"echo {line} > one")
    alice.run(f"echo {line} > two")
    assert alice.run(f"echo {line} > three").startswith("echo: three: Disk quota exceeded\n")
    assert alice.run(f"echo {line} >> two").startswith("echo: two: Disk quota exceeded\n")
    assert alice.run("cp one copy").startswith("cp: error writing 'copy': Disk quota exceeded\n")
    assert alice.run("cat one > copy").startswith("cat: copy: Disk quota exceeded\n")
    assert alice.run("cat one >> two").startswith("cat: two: Disk quota exceeded\n")
    assert alice.run("cat > copy").startswith("")  # an empty file still fits ...
    alice.send("y" * 900)
    assert alice.run(".").startswith("cat: copy: Disk quota exceeded\n")  # ... its lines do not
    alice.run("rm copy")
    assert (home(server) / "two").read_text() == "x" * 900 + "\n"
    alice.run("echo " + "x" * 197 + " > fill")  # exactly full now
    assert alice.run("touch empty").startswith("touch: cannot touch 'empty': Disk quota exceeded")
    assert sorted(os.listdir(home(server))) == ["fill", "one", "two"]


def test_home_created_and_removed_with_the_account(server: Assembly) -> None:
    c = Client(server)
    c.send("new")
    for line in ["carol", "carolpass1", "carolpass1"]:
        c.send(line)
    assert "carol@testhost" in c.output()
    assert home(server, "carol").is_dir()
    admin = Client(server)
    admin.login("root1")
    admin.send("useradd dave")
    admin.send("davepass12")
    admin.send("davepass12")
    assert home(server, "dave").is_dir()
    admin.run("userdel dave")
    assert not home(server, "dave").exists()


def test_finger_shows_the_plan(alice: Client) -> None:
    assert "No Plan." in alice.run("finger alice")
    alice.run("echo 'Build the best shell server.' > .plan")
    out = alice.run("finger alice")
    assert "Plan:\nBuild the best shell server.\n" in out


def test_cwd_removed_behind_the_session(alice: Client, server: Assembly) -> None:
    alice.run("mkdir gone")
    alice.run("cd gone")
    (home(server) / "gone").rmdir()
    assert alice.run("pwd").startswith("/home/alice/gone\n")
    assert alice.run("ls").startswith("ls: cannot access '.': No such file or directory\n")
    assert alice.run("echo x > f").startswith("echo: f: No such file or directory\n")
    assert alice.run("cd ..").endswith("alice@testhost:~$ ")


def test_quota_shows_usage_kept_up_to_date(alice: Client, server: Assembly) -> None:
    (home(server) / "put-by-operator").write_bytes(b"x" * 100)  # before first use: counted
    server.homes.quota = 10 * 1024**2  # type: ignore[union-attr]
    assert alice.run("quota") == (
        "Disk quota for alice: 100 of 10M used (0%), 1 of 10000 files\nalice@testhost:~$ "
    )
    alice.run("mkdir d")
    alice.run("echo " + "y" * 1000 + " > d/f")
    alice.run("cp d/f g")
    assert alice.run("quota").startswith("Disk quota for alice: 2.1K of 10M used (0%), 4 of")
    alice.run("rm -r d")
    alice.run("mv g h")
    assert alice.run("quota").startswith("Disk quota for alice: 1.1K of 10M used (0%), 2 of")
    assert alice.run("quota x").startswith("Usage: quota\n")


def test_an_operators_files_count_from_the_users_next_first_session(server: Assembly) -> None:
    """The home is measured when the account is made (empty), again at a login with no
    other session of the user open: an operator's file put there in between counts."""
    assert server.homes is not None
    Deferred.fromCoroutine(server.homes.create("alice"))
    (home(server) / "put-by-operator").write_bytes(b"x" * 1500)
    first = Client(server)
    assert "alice@testhost" in first.login("alice")
    assert first.run("quota").startswith("Disk quota for alice: 1.5K of 2.0K used (75%), 1 of")
    assert first.run("cp put-by-operator copy").startswith(
        "cp: error writing 'copy': Disk quota exceeded\n"
    )
    (home(server) / "more").write_bytes(b"x" * 400)
    second = Client(server)  # another session is open: the usage kept is used
    assert "alice@testhost" in second.login("alice")
    assert second.run("quota").startswith("Disk quota for alice: 1.5K of 2.0K used (75%), 1 of")
    first.drop()
    second.drop()
    third = Client(server)
    assert "alice@testhost" in third.login("alice")
    assert third.run("quota").startswith("Disk quota for alice: 1.9K of 2.0K used (95%), 2 of")


@pytest.mark.parametrize(
    "size, shown",
    [(0, "0"), (1023, "1023"), (1024, "1.0K"), (1228, "1.2K"), (1229, "1.3K"), (1300000, "1.3M"),
     (10 * 1024**2, "10M"), (10 * 1024**2 + 1, "11M"), (5 * 1024**3, "5.0G")],
)  # fmt: skip
def test_sizes_read_like_ls_h(size: int, shown: str) -> None:
    from shellserver.shell.commands.files import human

    assert human(size) == shown


def test_tilde_expands_as_in_a_shell(alice: Client) -> None:
    alice.run("mkdir sub")
    assert alice.run("echo ~ ~/x ~alice/y '~' \\~ a~").startswith(
        "/home/alice /home/alice/x /home/alice/y ~ ~ a~\n"
    )
    assert alice.run("echo ~root1").startswith("~root1\n")
    alice.run("cd sub")
    alice.run("touch ~/top")
    assert alice.run("ls ~").startswith("sub  top\n")
    out = alice.run("ls -l .. ~")
    assert out.startswith("..:\n-rw") or out.startswith("..:\ndrwx")
    assert "\n\n/home/alice:\n" in out  # a blank line between sections, as ls does


def test_cat_writes_typed_lines_until_dot_or_eof(alice: Client, server: Assembly) -> None:
    alice.run("cat > notes")
    alice.send("first line")
    alice.send("ünïcödé ☃")
    alice.send(".")
    assert alice.output().endswith("alice@testhost:~$ ")
    assert (home(server) / "notes").read_text() == "first line\nünïcödé ☃\n"
    alice.run("cat >> notes")
    alice.send("more")
    alice.send_bytes(b"\x04")  # ^D on an empty line ends it too
    assert alice.output().endswith("alice@testhost:~$ ")
    assert (home(server) / "notes").read_text() == "first line\nünïcödé ☃\nmore\n"
    alice.run("cat >> notes")
    alice.send("kept")
    alice.send_bytes(b"\x03")  # ^C ends it as well, keeping what was typed
    assert alice.output().endswith("alice@testhost:~$ ")
    assert (home(server) / "notes").read_text().endswith("more\nkept\n")
    (home(server) / "notes").write_text("first line\nünïcödé ☃\nmore\n")
    alice.run("cat notes notes > twice")
    assert (home(server) / "twice").read_text() == 2 * "first line\nünïcödé ☃\nmore\n"
    assert alice.run("cat twice > twice").startswith("cat: twice: input file is output file\n")
    assert alice.run("cat > /etc/x").startswith("cat: /etc/x: Permission denied\n")


def test_cat_typed_lines_respect_the_quota(alice: Client, server: Assembly) -> None:
    alice.run("cat > big")
    for _ in range(200):  # typed text is written every 16 KiB: the quota is met on the way
        alice.send("z" * 99)
    out = alice.output()
    assert "cat: big: Disk quota exceeded\n" in out
    alice.send("rm -r *")  # still typed into cat, not run
    alice.send(".")
    assert alice.output().endswith("alice@testhost:~$ ")
    assert (home(server) / "big").exists()
    assert os.path.getsize(home(server) / "big") <= 2000


def test_nesting_is_limited_to_64_levels(alice: Client, server: Assembly) -> None:
    deep = "/".join(["d"] * 64)
    assert alice.run(f"mkdir -p {deep}") == "alice@testhost:~$ "
    assert alice.run(f"mkdir {deep}/e").startswith(
        f"mkdir: cannot create directory '{deep}/e': Too many levels of directories (at most 64)\n"
    )
    assert alice.run("mkdir -p " + "/".join(["x"] * 2000)).startswith(
        "mkdir: cannot create directory 'x/x/x"
    )
    assert not (home(server) / "x").exists()
    alice.run("mkdir -p a/b")
    assert alice.run(f"mv a {'/'.join(['d'] * 63)}").startswith("mv: cannot move 'a' to ")
    assert alice.run(f"mv a {'/'.join(['d'] * 62)}") == "alice@testhost:~$ "


def test_expansion_is_bounded_like_arg_max(alice: Client, server: Assembly) -> None:
    for i in range(100):
        (home(server) / f"file-{i:03d}-{'n' * 100}").write_text("")
    assert alice.run("echo * * * * * * * * * *").count("file-") == 1000
    stars = " ".join(["*"] * 30)  # 3,000 names of ~110 bytes: over 256 KiB
    assert alice.run(f"echo {stars}") == "echo: Argument list too long\nalice@testhost:~$ "
    assert alice.run(f"rm {stars}") == "rm: Argument list too long\nalice@testhost:~$ "
    assert len(os.listdir(home(server))) == 100


def test_a_home_holds_at_most_10000_entries(alice: Client, server: Assembly) -> None:
    server.homes.home("alice").tree.used().entries = 9999  # type: ignore[union-attr]
    assert alice.run("touch one") == "alice@testhost:~$ "
    assert alice.run("touch two").startswith("touch: cannot touch 'two': Disk quota exceeded\n")
    assert alice.run("mkdir d").startswith("mkdir: cannot create directory 'd': Disk quota")


def test_non_ascii_names(alice: Client, server: Assembly) -> None:
    alice.run("mkdir 日本 'ça va'")
    alice.run("echo ☃ > 日本/雪だるま.txt")
    assert alice.run("ls").startswith("ça va  日本\n")
    assert alice.run("cat 日本/*.txt").startswith("☃\n")
    assert alice.run("mv 日本 'ça va'") == "alice@testhost:~$ "
    assert (home(server) / "ça va" / "日本" / "雪だるま.txt").read_text() == "☃\n"


def test_userdel_is_all_or_nothing(server: Assembly, alice: Client) -> None:
    admin = Client(server)
    admin.login("root1")
    alice.run("echo keep > notes")
    stray = home(server, "ghost")  # a home with no account: userdel refuses and leaves it
    stray.mkdir()
    (stray / "f").write_text("x")
    assert admin.run("userdel ghost").startswith("userdel: user 'ghost' does not exist\n")
    assert (stray / "f").read_text() == "x"
    (home(server) / "deep").mkdir()
    d = home(server) / "deep"
    for _ in range(50):
        d = d / "d"
        d.mkdir()
    assert admin.run("userdel alice").startswith("userdel: deleted alice\n")
    assert not home(server).exists()
    trash = home(server).parent.parent / "trash"
    assert os.listdir(trash) == []
    add_user(server, "alice")  # the name again: an empty home
    Deferred.fromCoroutine(server.homes.create("alice"))  # type: ignore[union-attr]
    again = Client(server)
    again.login("alice")
    assert again.run("ls -a") == ".  ..\nalice@testhost:~$ "


def test_planted_links_are_shown_and_removable_never_followed(
    alice: Client, server: Assembly
) -> None:
    os.symlink("/etc/passwd", home(server) / "planted")
    out = alice.run("ls -l")
    assert out.startswith("lrwxrwxrwx") and " planted\n" in out
    assert alice.run("cat planted").startswith("cat: planted: Permission denied\n")
    assert alice.run("echo x > planted").startswith("echo: planted: Permission denied\n")
    assert alice.run("rm planted") == "alice@testhost:~$ "
    assert not os.path.lexists(home(server) / "planted")
    assert os.path.exists("/etc/passwd")


def test_long_output_goes_out_as_the_client_takes_it(
    alice: Client, server: Assembly, monkeypatch: pytest.MonkeyPatch
) -> None:

    for i in range(1000):  # ls -l: about 90 KB
        (home(server) / f"name-{i:04d}-{'x' * 40}").write_text("")
    (home(server) / "big").write_bytes(b"line of text\n" * 20_000)
    waits = held_drains(monkeypatch)
    for line, lines in [("ls -l", 1001), ("cat big", 20_000)]:
        got = alice.run(line)
        assert 0 < len(got.encode()) <= 17 * 1024  # one chunk, then it waits for room
        assert waits and os.listdir(home(server).parent.parent / "tmp") == []  # spilled unlinked
        while waits:
            waits.pop().callback(None)
            got += alice.output()
        assert got.endswith("alice@testhost:~$ ") and len(got.splitlines()) == lines + 1


def test_cp_r_copies_trees_within_quota_and_depth(alice: Client, server: Assembly) -> None:
    alice.run("mkdir -p 日本/東京/渋谷 empty")
    alice.run("echo ☃ > 日本/東京/雪")
    alice.run("echo x > 日本/a")
    assert alice.run("cp -r 日本 copy") == "alice@testhost:~$ "
    assert (home(server) / "copy/東京/雪").read_text() == "☃\n"
    assert (home(server) / "copy/東京/渋谷").is_dir() and (home(server) / "copy/a").exists()
    assert alice.run("cp -R 日本 empty") == "alice@testhost:~$ "  # into an existing directory
    assert (home(server) / "empty/日本/東京/雪").exists()
    on_disk = sum(len(dirs) + len(files) for _, dirs, files in os.walk(home(server)))
    assert on_disk == 16
    assert alice.run("quota").startswith("Disk quota for alice: 18 of 2.0K used (0%), 16 of")
    alice.run("echo " + "z" * 1980 + " > fill")
    assert alice.run("cp -r 日本 more").startswith(
        "cp: error writing 'more': Disk quota exceeded\n"
    )
    assert not (home(server) / "more").exists()
    alice.run("rm fill")
    alice.run("mkdir -p " + "/".join(["d"] * 62))
    assert alice.run(f"cp -r 日本 {'/'.join(['d'] * 62)}").startswith(
        "cp: cannot create directory '" + "/".join(["d"] * 62) + "/日本': Too many levels"
    )


def test_cp_r_never_follows_a_link_planted_in_the_destination(
    alice: Client, server: Assembly, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    alice.run("mkdir -p src/sub dst/src")
    alice.run("echo x > src/sub/f")
    os.symlink(outside, home(server) / "dst/src/sub")
    alice.run("cp -r src dst")
    assert os.listdir(outside) == []


def test_cat_keeps_the_typed_lines_when_the_connection_drops(
    alice: Client, server: Assembly
) -> None:
    """Like cat on a terminal that hangs up: every line already entered is in the file."""
    alice.run("cat > notes")
    alice.send("typed before the line dropped")
    alice.drop()
    assert (home(server) / "notes").read_text() == "typed before the line dropped\n"


def test_an_unexpected_disk_error_is_one_line_for_cat_into_a_file(
    alice: Client, server: Assembly, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's chmod under the home (an OSError no job expects) is told, never crashes."""
    alice.run("echo a > a")
    tree = server.homes.home("alice").tree  # type: ignore[union-attr]
    tree.usage = None  # measured again on next use, which fails

    def measure(path: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("shellserver.files.tree.walk.measure", measure)
    for line in ["cat a > b", "ls"]:
        out = alice.run(line)
        assert "internal error" not in out, (line, out)
        assert out.endswith("alice@testhost:~$ "), (line, out)


@pytest.mark.parametrize("deleted", [True, False])
def test_a_session_working_during_userdel_never_strands_the_home(
    server: Assembly, alice: Client, deleted: bool
) -> None:
    """While the account is deleted the home is away: a command there finds nothing and makes
    nothing, so the home is gone for good, or back whole if the account could not be deleted."""
    admin = Client(server)
    admin.login("root1")
    alice.run("echo keep > notes")
    pending = hold_db_call(server, "delete")
    admin.run("userdel alice")  # the home is set aside; the store has not answered yet
    out = alice.run("touch new")
    assert out.startswith("touch: cannot touch 'new': No such file or directory\n"), out
    server.store.run_db = inline_runner
    if deleted:
        pending.callback(None)
        assert not home(server).exists()
    else:
        pending.errback(NoSuchUser("alice"))
        assert "userdel: user 'alice' does not exist" in admin.output()
        assert os.listdir(home(server)) == ["notes"]
        assert alice.run("cat notes") == "keep\nalice@testhost:~$ "
    assert os.listdir(home(server).parent.parent / "trash") == []


def test_touch_names_the_file_it_could_not_touch(
    alice: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose time cannot be set (an operator's chattr) is named, as coreutils does."""
    alice.run("touch f")

    def utime(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("shellserver.files.tree.os.utime", utime)
    assert alice.run("touch f") == (
        "touch: cannot touch 'f': Permission denied\nalice@testhost:~$ "
    )


def test_a_failing_read_of_long_output_is_one_line(
    alice: Client, server: Assembly, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long output waits in a temp file; if reading it back fails, that is said, not a crash."""
    for i in range(1500):
        (home(server) / f"file-with-a-longish-name-{i:04d}").touch()
    real = Home.io

    def io(self: Home, f: Any, *args: Any) -> Any:
        if f is os.read:
            raise OSError(5, "Input/output error")
        return real(self, f, *args)

    monkeypatch.setattr(Home, "io", io)
    assert alice.run("ls -l") == "ls: Input/output error\nalice@testhost:~$ "
