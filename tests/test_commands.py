"""Commands through the whole stack (telnet bytes to hub and back), without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Client, add_user, held_drains, make_server, make_server_with, online

from shellserver.app.assembly import Assembly
from shellserver.shell.adminops import broadcast_message
from shellserver.wires.telnet.encode import encode


@pytest.fixture
def server(tmp_path: Path) -> Assembly:
    return make_server_with(tmp_path, ("alice", "bob"))


def test_unknown_command_and_usage(server: Assembly) -> None:
    a = online(server, "alice")
    assert a.run("frobnicate now").startswith("frobnicate: command not found\n")
    assert a.run("mesg maybe").startswith("Usage: mesg [y|n]\n")
    assert a.run("write").startswith("Usage: write USER [TTY] [TEXT...]\n")
    assert a.run('echo "unterminated').startswith("shellserver: syntax error")


def test_escape_in_unknown_command_is_sanitised(server: Assembly) -> None:
    a = online(server, "alice")
    assert a.run("\x1b[2Jx").startswith("^[[2Jx: command not found")


def test_admin_commands_are_refused_to_users(server: Assembly) -> None:
    a = online(server, "alice")
    for cmd in ["wall hi", "kick bob", "useradd carol", "userdel bob", "lock bob", "unlock bob"]:
        name = cmd.split()[0]
        assert a.run(cmd).startswith(f"{name}: permission denied\n")


def test_help_lists_and_explains(server: Assembly) -> None:
    a = online(server, "alice")
    out = a.run("help")
    assert "write" in out and "who" in out and "wall" not in out
    listed = {line.split()[0]: line for line in out.splitlines()[1:-2]}
    assert listed["exit"].split(None, 1)[1].startswith("Log out")
    assert listed["logout"].split(None, 1)[1] == "Same as exit."
    assert listed["quit"].split(None, 1)[1] == "Same as exit."
    assert list(listed) == sorted(listed)
    # each summary is a whole sentence (or cut at a word with an ellipsis), within the width
    assert all(line.rstrip().endswith((".", "…", ")")) for line in listed.values()), listed
    assert all(len(line) <= 80 for line in listed.values())
    assert listed["ignore"].split(None, 1)[1].startswith("Ignore USER")
    assert "wall" in online(server, "root1").run("help")
    assert a.run("help write").startswith("Usage: write USER [TTY] [TEXT...]\n")
    assert "Administrators only" in a.run("help kick")
    assert a.run("help nope").startswith("help: no help for nope")


def test_long_who_w_and_rooms_wait_for_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    server = make_server(tmp_path, max_sessions=0)
    add_user(server, "alice")
    a = online(server, "alice")
    others = [online(server, "alice") for _ in range(400)]  # 400 rows: about 24 KB
    for i, c in enumerate(others):  # and 400 rooms with topics: about 40 KB of "rooms"
        c.run(f"join #room{i:03d}")
        c.run(f"topic #room{i:03d} {'t' * 80}")
    waits = held_drains(monkeypatch)
    for line, rows in [("who", 403), ("w", 404), ("rooms", 402)]:  # with header and prompt
        got = a.run(line)
        assert 0 < len(got.encode()) <= 17 * 1024 and waits  # one chunk, then it waits for room
        while waits:
            waits.pop().callback(None)
            got += a.output()
        assert got.endswith("alice@testhost:~$ ") and len(got.splitlines()) == rows, line


def test_who_and_w(server: Assembly) -> None:
    a = online(server, "alice", peer="10.1.1.1")
    online(server, "bob", peer="10.2.2.2")
    out = a.run("who")
    lines = out.splitlines()
    assert lines[0].split() == ["USER", "TTY", "LOGIN", "IDLE", "MESG"]
    assert lines[1].startswith("alice") and "tel/0" in lines[1]
    assert lines[2].startswith("bob") and "tel/1" in lines[2]
    assert "10.2.2.2" not in out
    admin = online(server, "root1")
    assert "10.2.2.2" in admin.run("who")
    out = a.run("w")
    assert " up " in out.splitlines()[0] and "3 sessions" in out and "3 users" in out
    assert "WHAT" in out


def test_idle_column(server: Assembly) -> None:
    a = online(server, "alice")
    online(server, "bob")
    server.clock.advance(125)  # type: ignore[attr-defined]
    row = [line for line in a.run("who").splitlines() if line.startswith("bob")][0]
    assert " 0:02 " in row


def test_whoami_id_date_uptime_clear(server: Assembly) -> None:
    a = online(server, "alice")
    assert a.run("whoami").startswith("alice\n")
    assert a.run("id").startswith("user=alice role=user\n")
    assert len(a.run("date").splitlines()[0].split()) == 6
    assert "1 session" in a.run("uptime")
    assert a.run("clear").startswith("\x1b[H\x1b[2J")


def test_mesg(server: Assembly) -> None:
    a = online(server, "alice")
    assert a.run("mesg").startswith("is y\n")
    a.run("mesg n")
    assert a.run("mesg").startswith("is n\n")
    assert "-" in [line for line in a.run("who").splitlines() if "alice" in line][0]


def test_write_one_line(server: Assembly) -> None:
    a = online(server, "alice")
    b = online(server, "bob")
    a.run("write bob hello there")
    out = b.output()
    assert out.startswith("\nMessage from alice@testhost on tel/0 at ")
    assert "hello there\nEOF\nbob@testhost:~$ " in out


def test_write_multi_line_until_dot_and_ctrl_d(server: Assembly) -> None:
    a = online(server, "alice")
    b = online(server, "bob")
    a.run("write bob")
    assert "Message from alice" in b.output()
    a.send("first")
    assert b.output() == "\r\x1b[Kfirst\nbob@testhost:~$ "
    a.send("second")
    assert b.output() == "\r\x1b[Ksecond\nbob@testhost:~$ "
    a.send("third")
    a.send("fourth")  # in the same reactor turn: one block under one prompt
    assert b.output() == "\r\x1b[Kthird\nfourth\nbob@testhost:~$ "
    a.send(".")
    assert "EOF" in b.output()
    assert a.output().endswith("alice@testhost:~$ ")
    a.run("write bob")
    a.send("again")
    a.send_bytes(b"\x04")
    out = b.output()
    assert "again" in out and "EOF" in out
    assert a.output().endswith("alice@testhost:~$ ")


def test_write_sanitises_text(server: Assembly) -> None:
    a = online(server, "alice")
    b = online(server, "bob")
    a.send_bytes(
        b"write bob '\x1b]0;pwned\x07' \xc2\x9b \x9b \xe2\x80\xae caf\xc3\xa9 \xf0\x9f\x98\x80\r\n"
    )
    out = b.output()
    assert "^[]0;pwned^G \\302\\233 \\233 \\u202e café 😀" in out
    assert "\x1b" not in out


def test_only_existing_tty_kinds_are_ttys(server: Assembly) -> None:
    a = online(server, "alice")
    b = online(server, "bob")
    assert a.run("write bob ab/12 hi") == "alice@testhost:~$ "
    assert "\nab/12 hi\nEOF\n" in b.output()
    for kind in ("tel", "ssh", "web"):
        assert a.run(f"write bob {kind}/9 hi").startswith(
            f"write: bob is not logged in on {kind}/9"
        )
    assert a.run("write bob tel/1 hi") == "alice@testhost:~$ "
    assert "\nhi\nEOF\n" in b.output()


def test_wall_without_text_is_a_usage_error(server: Assembly) -> None:
    a = online(server, "alice")
    admin = online(server, "root1")
    for line in ["wall", 'wall ""', "wall '   '", "wall '' ' '"]:
        assert admin.run(line).startswith("Usage: wall TEXT...\n"), line
    assert a.output() == ""


def test_write_errors(server: Assembly) -> None:
    a = online(server, "alice")
    assert a.run("write carol hi").startswith("write: carol is not logged in\n")
    b = online(server, "bob")
    b.run("mesg n")
    assert a.run("write bob hi").startswith("write: bob has messages disabled\n")
    b.run("mesg y")
    assert a.run("write bob tel/9 hi").startswith("write: bob is not logged in on tel/9\n")
    a.run("mesg n")
    assert a.run("write bob hi").startswith("write: you have write permission turned off\n")


def test_write_target_choice(server: Assembly) -> None:
    a = online(server, "alice")
    b1 = online(server, "bob")  # tel/1
    b2 = online(server, "bob")  # tel/2
    b3 = online(server, "bob")  # tel/3
    server.clock.advance(100)  # type: ignore[attr-defined]
    b2.run("whoami")  # least idle
    b3.run("mesg n")  # more recent still, but refuses messages
    out = a.run("write bob hi")
    assert out.startswith("write: bob is logged in more than once; writing to tel/2\n")
    assert "hi" in b2.output()
    assert "hi" not in b1.output() and "hi" not in b3.output()
    a.run("write bob tel/1 direct")
    assert "direct" in b1.output()


def test_write_to_a_client_that_stopped_reading_tells_the_sender(tmp_path: Path) -> None:
    server = make_server(tmp_path, max_output=8000)
    add_user(server, "alice")
    add_user(server, "bob")
    a = online(server, "alice")
    b = online(server, "bob")
    b.protocol.pauseProducing()
    big = "x" * 3000
    told = ""
    for _ in range(5):
        told = a.run(f"write bob {big}")
        if "not reading" in told:
            break
    assert "write: bob is not reading; message dropped" in told


def test_wall_reaches_everyone_even_mesg_n(server: Assembly) -> None:
    a = online(server, "alice")
    b = online(server, "bob")
    b.run("mesg n")
    admin = online(server, "root1")
    outputs = [admin.run("wall " + "word " * 30), a.output(), b.output()]
    for out in outputs:
        lines = out.splitlines()
        i = next(n for n, line in enumerate(lines) if line.startswith("Broadcast message"))
        assert lines[i].startswith("Broadcast message from root1@testhost (tel/2) (")
        assert lines[i + 1] == ""
        assert all(len(line) <= 79 for line in lines[i + 2 :])
        assert "word word" in out


def test_broadcast_keeps_line_breaks_and_sanitises_each_line() -> None:
    msg = broadcast_message("root1", "testhost", "control", 0.0, "one\n\x1b[31mtwo\r")
    lines = msg.encoded("tel", encode).decode().split("\r\n")
    assert lines[1:] == ["", "one", "^[[31mtwo^M", ""]


def test_kick(server: Assembly) -> None:
    b = online(server, "bob")
    b2 = online(server, "bob")
    admin = online(server, "root1")
    assert admin.run("kick bob spamming").startswith("kick: ended 2 sessions of bob\n")
    for c in (b, b2):
        assert c.output().endswith("You have been logged out by root1: spamming\n")  # no prompt
        assert c.disconnecting
    assert admin.run("kick nobody").startswith("kick: nobody is not logged in\n")


def test_exit_aliases_and_ctrl_d(server: Assembly) -> None:
    for word in ["exit", "logout", "quit"]:
        c = online(server, "alice")
        assert c.run(word).startswith("logout")
        assert c.disconnecting
    c = online(server, "alice")
    c.send_bytes(b"\x04")
    assert c.disconnecting


def test_passwd(server: Assembly) -> None:
    a = online(server, "alice")
    a.send("passwd")
    a.send("password1")
    a.send("newpassword")
    a.send("newpassword")
    assert "password updated successfully" in a.output()
    a.drop()
    c = Client(server)
    assert "alice@testhost" in c.login("alice", "newpassword")


def test_passwd_wrong_old_password(server: Assembly) -> None:
    a = online(server, "alice")
    a.send("passwd")
    a.send("not-it-at-all")
    server.clock.advance(1)  # type: ignore[attr-defined]
    assert "wrong password" in a.output()


def test_useradd_userdel_lock_unlock(server: Assembly) -> None:
    admin = online(server, "root1")
    admin.send("useradd carol")
    admin.send("carolpass1")
    admin.send("carolpass1")
    assert "useradd: created user account carol" in admin.output()
    assert admin.run("useradd carol").startswith("useradd: user 'carol' already exists")
    assert admin.run("useradd Bad!").startswith("useradd: Usernames are")
    assert admin.run("useradd root").startswith("useradd: That name is reserved")
    carol = online(server, "carol", password="carolpass1")
    assert admin.run("lock carol").startswith("lock: carol is locked")
    assert "locked by root1" in carol.output() and carol.disconnecting
    assert "locked" in Client(server).login("carol", "carolpass1")
    admin.run("unlock carol")
    assert "carol@testhost" in Client(server).login("carol", "carolpass1")
    assert admin.run("userdel carol").startswith("userdel: deleted carol")
    assert admin.run("userdel carol").startswith("userdel: user 'carol' does not exist")
    assert admin.run("lock root1").startswith("lock: you cannot do that to your own account")


def test_the_last_administrator_is_refused_in_a_session(tmp_path: Path) -> None:
    server = make_server_with(tmp_path, ("alice",), admins=("root1", "root2"))
    admin = online(server, "root1")
    # root1's account is locked behind its session's back (the store's own rule lets it:
    # root2 remains), so root2 is now the last administrator who can log in.
    server.store.db.set_locked("root1", True)
    assert admin.run("userdel root2").startswith("userdel: root2 is the last administrator\n")
    assert admin.run("lock root2").startswith("lock: root2 is the last administrator\n")
    root2 = server.store.db.get("root2")
    assert root2 is not None and root2.is_admin and not root2.locked
    assert "root2@testhost" in Client(server).login("root2")  # its home and account untouched
    assert admin.run("lock alice").startswith("lock: alice is locked\n")  # others as before


def test_initial_admin_password_goes_once_admin_changes_it(tmp_path: Path) -> None:
    spent = tmp_path / "initial-admin-password"
    spent.write_text("password1\n")
    server = make_server_with(tmp_path, ("alice",), admins=("admin",), initial_password=str(spent))
    a = online(server, "alice")  # another account's password change leaves it
    a.send("passwd")
    a.send("password1")
    a.send("newpassword")
    a.send("newpassword")
    assert "password updated successfully" in a.output() and spent.exists()
    admin = online(server, "admin")
    admin.send("passwd")
    admin.send("password1")
    admin.send("newpassword")
    admin.send("newpassword")
    assert "password updated successfully" in admin.output()
    assert not spent.exists()


def test_useradd_admin_role(server: Assembly) -> None:
    admin = online(server, "root1")
    admin.send("useradd dave --admin")
    admin.send("davepass12")
    admin.send("davepass12")
    assert "created admin account dave" in admin.output()


def test_finger_and_last(server: Assembly) -> None:
    a = online(server, "alice", peer="10.1.1.1")
    out = a.run("finger bob")
    assert "Login: bob" in out and "Never logged in." in out
    b = online(server, "bob", peer="10.2.2.2")
    out = a.run("finger bob")
    assert "On since" in out and "on tel/1" in out and "10.2.2.2" not in out
    b.run("exit")
    b.drop()
    out = a.run("finger bob")
    assert "Last login" in out
    out = a.run("last")
    lines = out.splitlines()
    assert lines[0].startswith("bob") and "-   " in lines[0]
    assert (
        lines[1].startswith("alice") and "still logged in" in lines[1] and "10.1.1.1" in lines[1]
    )
    assert a.run("finger ghost").startswith("finger: ghost: no such user.")


def test_command_rate_limit(tmp_path: Path) -> None:
    server = make_server(tmp_path, cmd_burst=3, cmd_rate=1.0)
    add_user(server, "alice")
    a = online(server, "alice")
    outs = [a.run("whoami") for _ in range(4)]
    assert all(o.startswith("alice") for o in outs[:3])
    assert "too many commands" in outs[3]
    server.clock.advance(1)  # type: ignore[attr-defined]
    assert a.run("whoami").startswith("alice")


def test_multi_line_write_is_paced_by_the_same_bucket(tmp_path: Path) -> None:
    server = make_server(tmp_path, cmd_burst=3, cmd_rate=2.0)
    add_user(server, "alice")
    add_user(server, "bob")
    a, b = online(server, "alice"), online(server, "bob")
    a.run("write bob")  # one token
    b.output()
    for n in range(6):
        a.send(f"line {n}")
    assert b.output().count("line ") == 2  # the rest of the burst
    server.clock.advance(0.5)  # type: ignore[attr-defined]
    assert b.output().count("line ") == 1  # then two a second, none lost
    server.clock.advance(1.5)  # type: ignore[attr-defined]
    got = b.output()
    assert [f"line {n}" in got for n in range(3, 6)] == [True] * 3
    a.send(".")
    server.clock.advance(1)  # type: ignore[attr-defined]
    assert "EOF" in b.output()
    assert a.output().endswith("alice@testhost:~$ ")


def test_long_line_is_refused_with_one_message(server: Assembly) -> None:
    a = online(server, "alice")
    a.send("x" * 5000)
    out = a.output()
    assert out.count("Line too long") == 1
    assert a.run("whoami").startswith("alice")


def test_idle_timeout_warns_then_logs_out(server: Assembly) -> None:
    from shellserver.hub.idle import IdleWatch

    a = online(server, "alice")
    watch = IdleWatch(server.hub, 600)
    clock = server.clock
    clock.advance(539)  # type: ignore[attr-defined]
    watch.scan(clock.seconds())
    assert a.output() == ""
    clock.advance(1)  # type: ignore[attr-defined]
    watch.scan(clock.seconds())
    assert "logged out in a minute" in a.output()
    watch.scan(clock.seconds())
    assert a.output() == ""  # warned once
    clock.advance(60)  # type: ignore[attr-defined]
    watch.scan(clock.seconds())
    out = a.output()
    assert out.endswith("Idle for 10 minutes; logging you out.\n") and a.disconnecting  # no prompt


@pytest.mark.parametrize(
    "timeout, warned_at, said",
    [
        (20, 10, "in 10 seconds"),  # half a short timeout, not "a minute" at login
        (90, 45, "in 45 seconds"),
        (119, 59.5, "in 59 seconds"),  # seen by the scan at 60 s
        (120, 60, "in a minute"),
        (3600, 3540, "in a minute"),
    ],
)
def test_idle_warning_comes_in_time_and_says_the_time_left(
    server: Assembly, timeout: int, warned_at: float, said: str
) -> None:
    """The scan as the service runs it (a looping call at the watch's period), on a Clock."""
    from twisted.internet.task import LoopingCall

    from shellserver.hub.idle import IdleWatch

    clock = server.clock
    a = online(server, "alice")
    watch = IdleWatch(server.hub, timeout)
    scan = LoopingCall(lambda: watch.scan(clock.seconds()))
    scan.clock = clock  # type: ignore[assignment]
    scan.start(watch.period, now=False)
    heard: list[tuple[float, str]] = []
    while not a.disconnecting and clock.seconds() < 2 * timeout:  # type: ignore[attr-defined]
        clock.advance(0.5)  # type: ignore[attr-defined]
        out = a.output()
        if out:
            heard.append((clock.seconds(), out))  # type: ignore[attr-defined]
    scan.stop()
    (when, warning), (gone, logout) = heard
    assert 0 <= when - warned_at < watch.period  # seen by the first scan after its time
    assert f"you will be logged out {said}.\n" in warning
    assert 0 <= gone - timeout < watch.period and "logging you out" in logout


@pytest.mark.parametrize(
    "timeout, said", [(62, "1 minute"), (120, "2 minutes"), (30, "30 seconds"), (1, "1 second")]
)
def test_idle_logout_counts_its_noun(server: Assembly, timeout: int, said: str) -> None:
    from shellserver.hub.idle import IdleWatch

    a = online(server, "alice")
    server.clock.advance(timeout)  # type: ignore[attr-defined]
    IdleWatch(server.hub, timeout).scan(server.clock.seconds())
    assert f"Idle for {said}; logging you out." in a.output()


def test_disconnect_detaches_and_records_logout(server: Assembly) -> None:
    a = online(server, "alice")
    b = online(server, "bob")
    b.drop()
    assert a.run("write bob hi").startswith("write: bob is not logged in")
    records = []
    server.store.history("bob", 5).addCallback(records.extend)
    assert records[0].logout is not None
    c = online(server, "bob")
    assert "tel/1" in [line for line in a.run("who").splitlines() if "bob" in line][0]
    c.drop()


def test_admin_names_in_lock_and_userdel_notices_are_sanitised(server: Assembly) -> None:
    from twisted.internet.defer import Deferred

    from shellserver.shell import adminops

    alice = online(server, "alice")
    bob = online(server, "bob")
    evil = "ev\x1b]0;owned\x07il\u202e"
    Deferred.fromCoroutine(adminops.set_locked(server.admin, evil, "control", "alice", True))
    Deferred.fromCoroutine(adminops.delete_user(server.admin, evil, "control", "bob"))
    shown = "ev^[]0;owned^Gil\\u202e"
    assert f"Your account has been locked by {shown}." in alice.output()
    assert f"Your account has been deleted by {shown}." in bob.output()


def test_a_writer_hanging_up_mid_write_ends_it_with_eof(server: Assembly) -> None:
    a = online(server, "alice")
    b = online(server, "bob")
    a.send("write bob")
    a.send("hello there")
    assert "hello there" in b.output()
    a.drop()
    assert "EOF\n" in b.output()


def test_write_stamp_is_the_local_minute_of_each_message() -> None:
    import time

    from shellserver.shell.commands.messaging import _Stamp

    stamp = _Stamp()
    for when in (0.0, 59.9, 60.0, 1_700_000_000.5, 1_700_000_059.0, 1_700_000_060.0, 86_399.0):
        assert stamp.at(when) == time.strftime("%H:%M", time.localtime(when))
