"""Garbage on the wire, floods and abrupt disconnects: the attacker may lose its connection,
nobody else notices."""

from __future__ import annotations

import contextlib
import random
import socket
import time

import pytest
from realserver import sign_up

from hostile.arena import Arena, Peer

pytestmark = pytest.mark.integration
IAC, SB, SE, NAWS = 255, 250, 240, 31


def test_one_megabyte_line(arena: Arena) -> None:
    c = arena.register("bigline")
    c.send_bytes(b"x" * (1 << 20) + b"\r\nwhoami\r\n")
    out = c.expect("bigline\n", timeout=20)
    assert out.count("Line too long") == 1
    arena.bystanders_ok()


@pytest.mark.parametrize("logged_in", [False, True])
def test_binary_and_iac_garbage(arena: Arena, logged_in: bool) -> None:
    rng = random.Random(1234)
    c = arena.register(f"garbage{int(logged_in)}") if logged_in else arena.connect()
    noise = bytes(
        rng.choice([IAC, IAC, SB, SE, 0, 13, 10, 0x1B, *range(256)]) for _ in range(1 << 16)
    )
    with contextlib.suppress(OSError):  # dropped for it: allowed
        c.send_bytes(noise)
    arena.bystanders_ok()
    c.close()


def test_endless_subnegotiation(arena: Arena) -> None:
    c = arena.register("subneg")
    c.send_bytes(bytes([IAC, SB, NAWS]))
    for _ in range(16):
        c.send_bytes(b"\x00\x50" * 32768)  # 1 MiB of a window size that never ends
    arena.bystanders_ok()
    c.send_bytes(bytes([IAC, SE]) + b"\r\nwhoami\r\n")
    assert "subneg" in c.expect("subneg\n", timeout=10)


def test_cr_nul_and_other_line_ends(arena: Arena) -> None:
    c = arena.register("crnul")
    c.send_bytes(b"whoami\r\x00")
    c.expect("crnul\n")
    c.send_bytes(b"echo one\recho two\necho three\r\n")
    c.expect("three\n")
    arena.bystanders_ok()


def _sink(arena: Arena, name: str) -> Peer:
    """A logged-in client that stops reading, with the smallest receive buffer."""
    c = Peer.__new__(Peer)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((arena.source(), 0))
    sock.connect(("127.0.0.1", arena.port))
    sock.settimeout(10)
    c.sock, c.buffer, c.raw_seen = sock, b"", b""
    return sign_up(c, name)


def test_never_reading_clients_during_wall_and_write_floods(arena: Arena) -> None:
    sinks = [_sink(arena, f"sink{i}") for i in range(3)]
    admin = arena.admin()
    writers = [arena.register(f"flooder{i}") for i in range(5)]
    text = "w" * 3000
    admin.send_bytes(b"".join(f"wall {text}\r\n".encode() for _ in range(30)))
    for w in writers:
        # 5 x 40 x 3 KB to sink0 (a paste of 70 lines runs the command bucket's burst of
        # 40; the rest are refused), over the kernel's send buffer (64 KiB, booked twice),
        # the transport's (64 KiB) and --max-output (256 KiB) together, which fill in that
        # order: 600 KB, with the walls' 90 KB, against about 450 KB.
        w.send_bytes(b"".join(f"write sink0 {text}\r\n".encode() for _ in range(70)))
    arena.bystanders_ok()  # during the flood
    time.sleep(0.3)
    arena.bystanders_ok()
    out = b""
    deadline = time.monotonic() + 15  # a loaded machine may take a while to fill sink0
    while b"sink0 is not reading; message dropped" not in out and time.monotonic() < deadline:
        for w in writers:
            out += w.drain(0.2)
    assert b"sink0 is not reading; message dropped" in out
    for c in [*sinks, admin, *writers]:
        c.close()
    arena.bystanders_ok()


def test_command_flood(arena: Arena) -> None:
    c = arena.register("cmdflood")
    c.send_bytes(b"who\r\n" * 2000)
    arena.bystanders_ok()
    out = c.drain(0.5)
    assert b"too many commands; slow down" in out or b"Too much typed ahead" in out
    arena.bystanders_ok()
    c.close()


def test_disconnects_mid_login_registration_and_write(arena: Arena) -> None:
    c = arena.connect()
    c.expect("login: ")
    c.send_line("alice")
    c.expect("Password: ")
    c.close()  # mid-login
    c = arena.connect()
    c.expect("login: ")
    c.send_line("new")
    c.expect("Username: ")
    c.send_line("halfway")
    c.expect("Password: ")
    c.send_line("correct horse")
    c.expect("Password again: ")
    c.close()  # mid-registration: no account is made
    writer = arena.register("leaver")
    writer.send_line("write bob")
    writer.send_line("first line from leaver")
    arena.bob.expect("first line from leaver")
    writer.close()  # mid-write: bob is told it ended
    arena.bob.expect("EOF")
    arena.bystanders_ok()
    c = arena.connect()
    c.expect("login: ")
    c.send_line("halfway")
    c.expect("Password: ")
    c.send_line("correct horse")
    c.expect("Login incorrect", timeout=5)
    c.close()
