"""Attacks on the terminal and the editor: resize floods on every wire, ^R floods, big histories.

What a client can repeat at no cost (a resize, a search key) must cost the server
bounded work, and the redraws it causes at most one per session per 50 ms; a
session's history is bounded in bytes. Each attack runs against a real server
(telnet, SSH and the browser listener) with the stall probe watching.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from realserver import PASSWORD

from hostile.arena import Arena, Peer, arena_with
from hostile.test_web import RawWeb, masked, web_sign_up

IAC, SB, SE, WILL, DO = 255, 250, 240, 251, 253
ECHO, SGA, NAWS = 1, 3, 31
LINE = "".join(chr(ord("a") + i % 26) for i in range(4000))
FLOOD = Path(__file__).with_name("sshflood.py")

pytestmark = pytest.mark.integration


#: The arena with an SSH listener (and what the attacks here need) besides telnet.
arena = arena_with(
    "hostile-terminal",
    "--ssh",
    "tcp:0:interface=127.0.0.1",
    "--web",
    "tcp:0:interface=127.0.0.1",
    "--cmd-rate",
    "0",
)


def char_login(arena: Arena, name: str) -> Peer:
    """A telnet client in character mode (it takes WILL ECHO and WILL SGA), with NAWS."""
    peer = arena.connect()
    peer.send_bytes(bytes((IAC, DO, ECHO, IAC, DO, SGA, IAC, WILL, NAWS)))
    peer.expect("login: ")
    peer.send_bytes(name.encode() + b"\r")
    peer.expect("Password: ")
    peer.send_bytes(PASSWORD.encode() + b"\r")
    peer.expect(f"{name}@testhost:~$ ")
    return peer


def received(peer: Peer, quiet: float = 1.0) -> int:
    """Bytes that arrive until the line is quiet for ``quiet`` seconds."""
    return len(peer.drain(quiet))


def naws(cols: int, rows: int) -> bytes:
    return bytes((IAC, SB, NAWS)) + struct.pack(">HH", cols, rows) + bytes((IAC, SE))


def test_telnet_naws_flood_over_a_long_line(arena: Arena) -> None:
    arena.register("nawsy").close()
    peer = char_login(arena, "nawsy")
    peer.send_bytes(LINE.encode())
    peer.drain(0.5)
    flood = b"".join(naws(60 + i % 7, 20 + i % 3) for i in range(3000))
    with arena.watch():
        for i in range(0, len(flood), 4500):  # 500 subnegotiations a packet
            peer.send_bytes(flood[i : i + 4500])
        back = received(peer)
    # Before: every NAWS drew the 4,000-character line again (3000 x 4 KB).
    assert back < 5 * len(LINE), back
    peer.send_bytes(b"\x03exit\r")
    arena.bystanders_ok()


def test_browser_resize_frames_over_a_long_line(arena: Arena) -> None:
    page = web_sign_up(RawWeb(arena.server.web_port, arena.source()), "webby")
    page.keys(LINE)
    page.expect(LINE[-30:])
    frames = b"".join(masked(f"1{60 + i % 7} {20 + i % 3}".encode()) for i in range(3000))
    with arena.watch():
        for i in range(0, len(frames), 4000):
            page.send(frames[i : i + 4000])
        page.sock.settimeout(1.0)
        back = 0
        try:
            while chunk := page.sock.recv(65536):
                back += len(chunk)
        except TimeoutError:
            pass
    assert back < 5 * len(LINE), back
    page.close()
    arena.bystanders_ok()


def ssh_flood(arena: Arena, user: str, count: int, *pty: int) -> int:
    (port,) = arena.server.listening("ssh")
    args = [str(port), user, PASSWORD, str(count), *map(str, pty)]
    run = subprocess.run(
        [sys.executable, str(FLOOD), *args], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return int(run.stdout.split()[0])


def test_ssh_window_change_flood_over_a_long_line(arena: Arena) -> None:
    arena.register("sshy").close()
    with arena.watch():
        back = ssh_flood(arena, "sshy", 5000)
    # Before: every window change drew the line again (5000 x 4 KB, 5.5 s of stall).
    assert back < 5 * len(LINE), back
    arena.bystanders_ok()


def test_ssh_huge_pty_and_term_then_resizes(arena: Arena) -> None:
    arena.register("hugepty").close()
    with arena.watch():
        back = ssh_flood(arena, "hugepty", 3000, 65535, 65535, 5000)
    assert back < 5 * len(LINE), back
    arena.bystanders_ok()


def test_reverse_search_floods(arena: Arena) -> None:
    arena.register("searcher").close()
    peer = char_login(arena, "searcher")
    history = "".join(f"echo {i:03} " + "y" * 990 + "\r" for i in range(300))
    for i in range(0, len(history), 20_000):
        peer.send_bytes(history[i : i + 20_000].encode())
        peer.drain(0.1)
    peer.drain(1.0)
    with arena.watch():
        # A query that fails, then ^R again and again: each used to search it all again.
        peer.send_bytes(b"\x12zq")
        for _ in range(16):
            peer.send_bytes(b"\x12" * 4096)
            time.sleep(0.01)
        peer.send_bytes(b"\x07")  # ^G: the search abandoned
        # A query that matches, then a key that makes it fail and a Backspace, over and over:
        # each such key searches the whole history (64 KiB at most); past a budget per
        # 50 ms the keys wait, and only the attacker's own session is slowed. (Without that
        # budget these 64 Ki keys stall the bystander 500-700 ms; 8 Ki of them did not.)
        peer.send_bytes(b"\x12y")
        for _ in range(8):
            peer.send_bytes(b"z\x7f" * 8192)
            time.sleep(0.01)
        read_for(peer, 1.0)
    peer.close()
    arena.bystanders_ok()


def read_for(peer: Peer, seconds: float) -> int:
    """What arrives in ``seconds`` (a session drawing every 50 ms is never quiet)."""
    got = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        peer.sock.settimeout(left)
        try:
            chunk = peer.sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        got += len(chunk)
    return got


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def answered(peer: Peer, text: bytes, timeout: float = 30.0) -> None:
    """Read until ``text`` has arrived (in all the peer has seen)."""
    deadline = time.monotonic() + timeout
    while text not in peer.raw_seen:
        assert time.monotonic() < deadline, f"never saw {text!r}: {peer.raw_seen[-300:]!r}"
        peer.drain(0.1)


def test_forty_sessions_with_big_histories_stay_bounded(arena: Arena) -> None:
    assert arena.server.proc is not None
    pid = arena.server.proc.pid
    users = [f"hist{i}" for i in range(8)]
    for user in users:
        arena.register(user).close()
    peers = [char_login(arena, users[i % 8]) for i in range(40)]
    before = rss(pid)
    # Lines of 1,000 bytes that cost the shell little ("#000: command not found").
    lines = "".join(f"#{i:03} " + "h" * 994 + "\r" for i in range(500)).encode()
    with arena.watch():
        for chunk in range(0, len(lines), 5_000):  # five lines a session at a time
            for peer in peers:
                peer.send_bytes(lines[chunk : chunk + 5_000])
            for peer in peers:
                peer.drain(0.001)
        for peer in peers:  # every line taken: the last one answered
            answered(peer, b"#499: command not found")
    grown = rss(pid) - before
    print(f"\nserver RSS grew {grown / 2**20:.1f} MiB for 40 sessions")
    # 500 lines of 1 KB each were 20 MB of history for 40 sessions; now 64 KiB a session.
    assert grown < 40 * 64 * 1024 * 2 + 8 * 1024 * 1024, grown
    for peer in peers:
        peer.send_bytes(b"exit\r")
        assert peer.closed()
    arena.bystanders_ok()
