"""Distributed password guessing: one account, many addresses (issue figure: 40 addresses had
400 SSH password guesses checked against one account in 10 s).

Each address stays under its own lockout (10 failures in 10 minutes), so the
account's own pace is what holds: after 10 failures from any addresses, one
password check per 10 s, each answered with the normal ``Login incorrect``;
the owner's key login and a login from an address that logged in before are
not slowed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from realserver import PASSWORD

from hostile.arena import Arena, Peer, arena_with

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).with_name("shellserver"))
ATTACK = 8.0  # seconds
#: Checks the attack may have had: the 10 before the pace, then one per 10 s (and one spare).
ALLOWED = 10 + int(ATTACK // 10) + 2


#: The arena with an SSH listener (and what the attacks here need) besides telnet.
arena = arena_with("guessing", "--ssh", "tcp:0:interface=127.0.0.1", "--cmd-rate", "0")


def _checked(arena: Arena, user: str) -> int:
    return arena.server.log_text().count(f"failed login for {user} from ")


def _read_until(c: Peer, wants: tuple[bytes, ...], stop: threading.Event) -> bytes | None:
    """Read until one of ``wants`` arrives (which one), None when closed or stopped."""
    c.sock.settimeout(0.2)
    seen = b""
    while not stop.is_set():
        for want in wants:
            if want in seen:
                return want
        try:
            chunk = c.sock.recv(1 << 16)
        except TimeoutError:
            continue
        except OSError:
            return None
        if not chunk:
            return None
        seen += chunk
    return None


def _telnet_guesser(arena: Arena, source: str, user: str, stop: threading.Event) -> None:
    """Wrong passwords for ``user`` from ``source``, reconnecting after every close."""
    while not stop.is_set():
        try:
            c = Peer(arena.port, source, timeout=5)
        except OSError:
            stop.wait(0.5)
            continue
        try:
            while _read_until(c, (b"login: ",), stop):
                c.send_line(user)
                if not _read_until(c, (b"Password: ",), stop):
                    break
                c.send_line("not-the-password")
                if _read_until(c, (b"Login incorrect", b"Too many"), stop) != b"Login incorrect":
                    break
        except OSError:
            pass
        finally:
            c.close()


def test_distributed_telnet_guessing_from_forty_addresses_is_paced(arena: Arena) -> None:
    arena.register("dora", source="127.0.0.1").close()  # her address, in the login history
    before = _checked(arena, "dora")
    stop = threading.Event()
    guessers = [
        threading.Thread(target=_telnet_guesser, args=(arena, arena.source(), "dora", stop))
        for _ in range(40)
    ]
    with arena.watch():
        for g in guessers:
            g.start()
        time.sleep(ATTACK / 2)
        started = time.monotonic()  # the owner, from where she logged in before: not slowed
        arena.login("dora", source="127.0.0.1").close()
        owner_took = time.monotonic() - started
        time.sleep(ATTACK / 2)
        stop.set()
        for g in guessers:
            g.join()
    checked = _checked(arena, "dora") - before
    print(f"\n{checked} guesses checked in {ATTACK:.0f} s; the owner got in in {owner_took:.2f} s")
    assert 10 <= checked <= ALLOWED
    assert owner_took < 2.0
    assert "password attempts for dora are paced" in arena.server.log_text()
    arena.bystanders_ok()


# -- SSH ------------------------------------------------------------------------------------

SSH = shutil.which("ssh")
needs_ssh = pytest.mark.skipif(
    SSH is None or shutil.which("ssh-keygen") is None,
    reason="the OpenSSH client (ssh, ssh-keygen) is not installed (apt install openssh-client)",
)


def _ssh_args(arena: Arena, source: str, *extra: str) -> list[str]:
    return [
        SSH or "ssh", "-F", "/dev/null", "-p", str(arena.server.listening("ssh")[0]),
        "-b", source,
        "-o", f"UserKnownHostsFile={arena.server.workdir / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=10",
        "-o", "LogLevel=ERROR", *extra,
    ]  # fmt: skip


def _ssh_guesser(arena: Arena, source: str, user: str, stop: threading.Event) -> None:
    """OpenSSH with wrong passwords for ``user`` from ``source``, three a connection."""
    pexpect = pytest.importorskip("pexpect")
    args = _ssh_args(
        arena, source,
        "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
        "-o", "NumberOfPasswordPrompts=3", f"{user}@127.0.0.1", "true",
    )  # fmt: skip
    while not stop.is_set():
        child = pexpect.spawn(args[0], args[1:], timeout=0.5)
        try:
            while not stop.is_set():
                i = child.expect(["password: ", pexpect.EOF, pexpect.TIMEOUT])
                if i == 0:
                    child.sendline("not-the-password")
                elif i == 1:
                    break
        finally:
            child.close(force=True)


@needs_ssh
def test_distributed_ssh_guessing_is_paced_and_the_owners_key_is_not(arena: Arena) -> None:
    pytest.importorskip("pexpect")
    arena.register("erin", source="127.0.0.1").close()
    key = arena.server.workdir / "erin_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    added = subprocess.run(
        [CLI, "--data", str(arena.server.data), "addkey", "erin"],
        input=key.with_suffix(".pub").read_bytes(), capture_output=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    before = _checked(arena, "erin")
    stop = threading.Event()
    guessers = [
        threading.Thread(target=_ssh_guesser, args=(arena, arena.source(), "erin", stop))
        for _ in range(20)
    ]
    with arena.watch():
        for g in guessers:
            g.start()
        time.sleep(ATTACK / 2)
        started = time.monotonic()  # a fresh address, with her key: not slowed
        owner = subprocess.run(
            _ssh_args(
                arena, arena.source(), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-i", str(key), "erin@127.0.0.1", "echo", "key-login-ok",
            ),
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        owner_took = time.monotonic() - started
        time.sleep(ATTACK / 2)
        stop.set()
        for g in guessers:
            g.join()
    checked = _checked(arena, "erin") - before
    print(f"\n{checked} SSH guesses checked in {ATTACK:.0f} s; key login in {owner_took:.2f} s")
    assert "key-login-ok" in owner.stdout, owner.stderr
    assert owner_took < 3.0
    assert 10 <= checked <= ALLOWED
    arena.bystanders_ok()


def test_a_paced_account_still_answers_login_incorrect(arena: Arena) -> None:
    """The pace is not a lockout and tells nothing new: the same words, later."""
    arena.register("fern", source="127.0.0.1").close()
    # Ten wrong passwords from ten addresses at once (each waits out its own failure delay).
    guessers = [arena.connect() for _ in range(10)]
    try:
        for c in guessers:
            c.expect("login: ")
            c.send_line("fern")
            c.expect("Password: ")
        for c in guessers:
            c.send_line("not-the-password")
        for c in guessers:
            c.expect("Login incorrect\nlogin: ", timeout=5)
    finally:
        for c in guessers:
            c.close()
    with contextlib.closing(arena.connect()) as late:
        late.expect("login: ")
        late.send_line("fern")
        late.expect("Password: ")
        late.send_line("not-the-password")
        assert late.expect("login: ", timeout=5).strip() == "Login incorrect\nlogin:"
        with contextlib.closing(arena.connect()) as owner_elsewhere:  # right password: its turn
            owner_elsewhere.expect("login: ")
            owner_elsewhere.send_line("fern")
            owner_elsewhere.expect("Password: ")
            owner_elsewhere.send_line(PASSWORD)
            started = time.monotonic()
            owner_elsewhere.expect("fern@testhost:~$ ", timeout=15)
            assert 5 < time.monotonic() - started < 12
    arena.bystanders_ok()
