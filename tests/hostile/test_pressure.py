"""Pressure before login: password guessing, connection floods, half-open connections."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from hostile.arena import Arena, Peer

pytestmark = pytest.mark.integration


def _answer(peer: Peer, timeout: float = 5.0) -> str:
    """What a guess was answered: ``Login incorrect`` or the lockout."""
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        seen += peer.drain(0.05)
        if b"Login incorrect" in seen or b"Too many failed logins" in seen:
            break
    return seen.decode("utf-8", "replace")


def test_guessing_from_one_address_in_parallel_gets_ten_guesses(arena: Arena) -> None:
    source = arena.source()
    guessers = [arena.connect(source) for _ in range(20)]
    for g in guessers:
        g.expect("login: ")
        g.send_line("alice")
        g.expect("Password: ")
    for g in guessers:
        g.send_line("not-the-password")
    answers = [_answer(g) for g in guessers]
    checked = sum("Login incorrect" in a for a in answers)
    refused = sum("Too many failed logins" in a and "incorrect" not in a for a in answers)
    assert (checked, refused) == (10, 10), answers
    late = arena.connect(source)
    assert "Too many failed logins" in late.expect("later\n")
    arena.bystanders_ok()
    arena.login("alice").close()  # another address is not blocked
    for g in [*guessers, late]:
        g.close()


def test_two_thousand_connections_at_once(arena: Arena) -> None:
    socks: list[socket.socket] = []
    errors: list[BaseException] = []

    def open_many(first: int) -> None:
        try:
            for i in range(first, first + 500):
                s = socket.socket()
                s.bind((f"127.1.{i // 20 // 250}.{i // 20 % 250 + 1}", 0))
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(("127.0.0.1", arena.port))
                socks.append(s)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_many, args=(n * 500,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(socks) == 2000
    time.sleep(0.5)
    arena.bystanders_ok()
    for s in socks:
        s.close()
    arena.bystanders_ok()
    arena.login("bob").close()
    assert "refused" in arena.server.log_text()


def test_half_open_connections_from_ten_addresses_lock_nobody_out_for_long(
    arena: Arena,
) -> None:
    """20 from each of 10 addresses, the whole --max-unauth, each sending a byte now and then
    and reconnecting at once when dropped: a newcomer still gets in within the short grace."""
    sources = [arena.source() for _ in range(10)]
    squatters: list[Peer | None] = [None] * 200
    stop = threading.Event()

    def squat() -> None:
        while not stop.is_set():
            for i, s in enumerate(squatters):
                try:
                    if s is None:
                        squatters[i] = s = Peer(arena.port, sources[i // 20], timeout=1)
                    s.send_bytes(b"a")
                    s.sock.settimeout(0)
                    if s.sock.recv(1 << 16) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:
                    if s is not None:
                        s.close()
                    squatters[i] = None
            stop.wait(0.2)

    attacker = threading.Thread(target=squat)
    attacker.start()
    try:
        time.sleep(1.0)
        arena.bystanders_ok()
        started = time.monotonic()
        got_in = None
        while time.monotonic() - started < 25:
            try:
                c = arena.connect()
                c.expect("login: ", timeout=2)
            except (AssertionError, OSError):
                time.sleep(0.3)
                continue
            c.send_line("bob")
            c.expect("Password: ", timeout=2)
            c.send_line("correct horse")
            c.expect("bob@testhost:~$ ", timeout=2)
            got_in = time.monotonic() - started
            c.close()
            break
        assert got_in is not None and got_in < 15  # the 10 s grace under pressure, not 60 s
        arena.bystanders_ok()
    finally:
        stop.set()
        attacker.join()
        for s in squatters:
            if s is not None:
                s.close()


def test_login_flood_from_one_address_meets_the_per_address_limit(arena: Arena) -> None:
    source = arena.source()
    flood = [arena.connect(source) for _ in range(50)]
    greeted = [c.expect("\n", timeout=5) + c.drain(0.05).decode("utf-8", "replace") for c in flood]
    waiting = sum("shellserver on testhost" in g for g in greeted)
    refused = sum("Too many connections from your address" in g for g in greeted)
    assert waiting <= 20 and waiting + refused == 50, greeted
    arena.bystanders_ok()
    arena.login("bob").close()  # from another address: in at once
    for c in flood:
        c.close()
