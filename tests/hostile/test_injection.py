"""Escape injection in every user-controlled field reaches others only as notation."""

from __future__ import annotations

import pytest

from hostile.arena import Arena, Peer, assert_clean

#: ESC sequences (clear, retitle, colour), BEL, C1 CSI, bidi override and isolate, a bidi mark,
#: separators and invisible characters: the lot, in one string.
EVIL = "\x1b[2J\x1b]0;pwned\x07\u009b31m\u202eevil\u2066\u200f\u2028\u200b\ufeff\u00ad!"
#: As typed on a command line: quoted, since its OSC sequence holds a ``;``, which unquoted would
#: be a command list (refused: ``sh: pipes and command lists are not supported``).
QUOTED = f"'{EVIL}'"
SHOWN = "^[[2J^[]0;pwned^G\\302\\23331m\\u202eevil\\u2066\\u200f\\u2028\\u200b\\ufeff\\u00ad!"

pytestmark = pytest.mark.integration


def _seen(peer: Peer) -> bytes:
    peer.drain(0.2)
    return peer.raw_seen


def test_write_text(arena: Arena) -> None:
    mallory = arena.register("mallory")
    mallory.run(f"write bob {QUOTED}", "mallory@testhost:~$ ")
    out = arena.bob.expect("!")
    assert SHOWN in out
    assert_clean(_seen(arena.bob))
    arena.bystanders_ok()


def test_wall_and_shutdown_reason(arena: Arena) -> None:
    admin = arena.admin()
    admin.run(f"wall {QUOTED}", "admin@testhost:~$ ")
    assert SHOWN.replace("\\u2028", "") in arena.alice.expect("!").replace("\\u2028", "")
    admin.run(f"shutdown +30 {QUOTED}", "admin@testhost:~$ ")
    arena.bob.expect("!")
    admin.run("shutdown -c", "admin@testhost:~$ ")
    arena.bob.expect("cancelled")
    for who in (arena.alice, arena.bob):
        assert_clean(_seen(who))
    arena.bystanders_ok()


def test_kick_reason_and_admin_notices(arena: Arena) -> None:
    victim = arena.register("victim1")
    admin = arena.admin()
    admin.run(f"kick victim1 {QUOTED}", "admin@testhost:~$ ")
    assert SHOWN in victim.expect("!")
    assert victim.closed()
    assert_clean(victim.raw_seen)
    arena.bystanders_ok()


def test_names_typed_where_a_user_name_goes(arena: Arena) -> None:
    mallory = arena.login("mallory")
    for line in [f"write {QUOTED} hi", f"finger {QUOTED}", f"kick {QUOTED}"]:
        mallory.run(line, "mallory@testhost:~$ ")
    c = arena.connect()
    c.expect("login: ")
    c.send_line("new")
    c.expect("Username: ")
    c.send_line(EVIL)
    c.expect("Username: ")
    c.send_line("")
    c.expect("login: ")
    c.send_line(EVIL)
    c.expect("Password: ")
    c.send_line("whatever1")
    c.expect("Login incorrect")
    assert_clean(_seen(mallory) + _seen(c))
    arena.bystanders_ok()


def test_file_names_in_ls_and_plan_in_finger(arena: Arena) -> None:
    mallory = arena.login("mallory")
    mallory.run("touch 'evil\u202etxt.exe' 'zero\u200bwidth'", "mallory@testhost:~$ ")
    mallory.run(f"touch '{EVIL}'", "mallory@testhost:~$ ")  # refused, and said safely
    out = mallory.run("ls -l", "mallory@testhost:~$ ")
    assert "evil\\u202etxt.exe" in out and "zero\\u200bwidth" in out
    mallory.run(f"echo '{EVIL}' > .plan", "mallory@testhost:~$ ")
    out = arena.alice.run("finger mallory", "alice@testhost:~$ ")
    assert SHOWN in out
    assert_clean(_seen(mallory))
    assert_clean(_seen(arena.alice))
    arena.bystanders_ok()


def test_motd(arena: Arena) -> None:
    c = arena.login("mallory")
    assert b"Welcome^[[2J^[]0;pwned^G \\u202e \\302\\23331m \\377 end" in c.raw_seen.replace(
        b"\r\n", b"\n"
    )
    assert_clean(c.raw_seen)
    arena.bystanders_ok()


def test_room_lines_topics_and_saved_messages(arena: Arena) -> None:
    mallory = arena.register("roomer")
    arena.alice.run("join #den", "alice@testhost:~$ ")
    mallory.run("join #den", "roomer@testhost:~$ ")
    mallory.run(f"say #den {QUOTED}", "roomer@testhost:~$ ")
    assert SHOWN in arena.alice.expect("!")
    mallory.run(f"topic #den {QUOTED}", "roomer@testhost:~$ ")  # refused: not the creator
    arena.alice.run(f"topic #den {QUOTED}", "alice@testhost:~$ ")
    assert SHOWN in mallory.expect("!")
    arena.alice.run("part #den", "alice@testhost:~$ ")
    arena.register("absent1").close()
    mallory.run(f"write absent1 {QUOTED}", "roomer@testhost:~$ ")  # saved, not shown yet
    reader = arena.login("absent1")
    out = reader.run("messages read all", "absent1@testhost:~$ ")
    assert SHOWN in out
    assert_clean(_seen(arena.alice) + _seen(mallory) + _seen(reader))
    arena.bystanders_ok()


#: NEL, the fillers, the combining grapheme joiner and the interlinear annotation controls,
#: between words; ZWJ in an emoji sequence passes (a family is one picture).
HIDDEN = (
    "a\u0085b\u3164c\u115fd\u1160e\uffa0f\u180eg\u034fh\ufff9i\ufffaj\ufffbk"
    " \U0001f469\u200d\U0001f467 fin."
)
HIDDEN_SHOWN = (
    "a\\302\\205b\\u3164c\\u115fd\\u1160e\\uffa0f\\u180eg\\u034fh\\ufff9i\\ufffaj\\ufffbk"
    " \U0001f469\u200d\U0001f467 fin."
)


def test_invisible_fillers_and_nel_reach_others_as_notation(arena: Arena) -> None:
    sender = arena.register("filler")
    prompt = "filler@testhost:~$ "
    sender.run(f"write bob {HIDDEN}", prompt)
    assert HIDDEN_SHOWN in arena.bob.expect("fin.")
    sender.run("join #fill", prompt)  # its creator: may set the topic
    arena.alice.run("join #fill", "alice@testhost:~$ ")
    sender.run(f"say #fill {HIDDEN}", prompt)
    assert HIDDEN_SHOWN in arena.alice.expect("fin.")
    sender.run(f"topic #fill {HIDDEN}", prompt)
    assert HIDDEN_SHOWN in arena.alice.expect("fin.")
    arena.alice.run("part #fill", "alice@testhost:~$ ")
    sender.run(f"echo '{HIDDEN}' > .plan", prompt)
    assert HIDDEN_SHOWN in arena.alice.run("finger filler", "alice@testhost:~$ ")
    arena.register("absent2").close()
    sender.run(f"write absent2 {HIDDEN}", prompt)  # saved, shown at the next login
    reader = arena.login("absent2")
    assert HIDDEN_SHOWN in reader.run("messages read all", "absent2@testhost:~$ ")
    assert_clean(_seen(arena.alice) + _seen(arena.bob) + _seen(reader))
    arena.bystanders_ok()
