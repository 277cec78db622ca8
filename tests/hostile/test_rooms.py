"""Rooms as a weapon: hundreds of sessions that never read, joining one room at once, then
flooded with long lines, then all gone at once. Every room line is one message for all
members (sanitised and encoded once); handing it to hundreds of members is paced, a slice
per reactor turn (shellserver/hub/fanout.py), so the bystanders are served throughout, and a
member that does not read costs no more than its capped buffers."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realserver import PASSWORD, RealServer, sign_in

from hostile.arena import Arena, Peer
from hostile.test_own_output import vmrss

pytestmark = pytest.mark.integration

#: Sessions that never read (the issue's attack had 500; sized down, still hundreds).
MUTES = 250
MAX_OUTPUT = 64 * 1024
#: What Twisted's transport holds for a client before it pauses us (its ``bufferSize``);
#: past it, the session's ``--max-output`` cap applies.
TRANSPORT = 64 * 1024
#: What else the server may grow by meanwhile: the fan-outs waiting, allocator slack.
CONSTANT = 24 * 1024 * 1024
CLI = str(Path(sys.executable).with_name("shellserver"))


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
    """A server of its own: the mutes' accounts made offline (cheap hashes), a small output
    cap, any number of sessions per user."""
    work: Path = tmp_path_factory.mktemp("rooms")
    accounts = "".join(f"m{i:03}:{PASSWORD}\n" for i in range(MUTES))
    made = subprocess.run(
        [CLI, "--data", str(work / "data"), "newusers", "--hash-cost", "4"],
        input=accounts, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    server = RealServer(
        work, "--max-registrations", "0", "--max-output", str(MAX_OUTPUT), "--max-sessions", "0"
    ).start()
    try:
        yield Arena(server)
    finally:
        server.stop()


def _mute(arena: Arena, name: str, source: str) -> Peer:
    """Logged in with the smallest receive buffer; never reads again after this."""
    c = Peer.__new__(Peer)
    c.sock = socket.socket()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.sock.bind((source, 0))
    c.sock.connect(("127.0.0.1", arena.port))
    c.sock.settimeout(10)
    c.buffer, c.raw_seen = b"", b""
    return sign_in(c, name, PASSWORD)


def _joined(seen: str) -> list[str]:
    return re.findall(r"\[#big\] (m\d+) has joined", seen)


def _read_until(c: Peer, done: object, timeout: float) -> str:
    """What ``c`` reads until ``done(text so far)`` holds."""
    text, deadline = "", time.monotonic() + timeout
    while not done(text):  # type: ignore[operator]
        assert time.monotonic() < deadline, text[-500:]
        text += c.drain(0.1).decode("utf-8", "replace").replace("\r\n", "\n")
    return text


def test_hundreds_that_never_read_join_one_room_then_are_flooded_then_leave(
    arena: Arena,
) -> None:
    assert arena.server.proc is not None
    pid = arena.server.proc.pid
    olga = arena.register("olga")  # a member who reads: she must see every line, in order
    speakers = [arena.register(f"s{i}") for i in range(3)]
    for c, name in [(olga, "olga")] + [(s, f"s{i}") for i, s in enumerate(speakers)]:
        assert "has joined" in c.run("join #big", f"{name}@testhost:~$ ")
    sources = [arena.source() for _ in range(MUTES // 10 + 1)]
    mutes = [_mute(arena, f"m{i:03}", sources[i // 10]) for i in range(MUTES)]
    olga.drain()
    before = vmrss(pid)

    # 1. They all join within a tenth of a second: n² / 2 deliveries, paced.
    with arena.watch():
        started = time.monotonic()
        for m in mutes:
            m.send_bytes(b"join #big\r\n")
        assert time.monotonic() - started < 0.1
        seen = _read_until(olga, lambda t: len(_joined(t)) >= MUTES, 60)
    assert sorted(_joined(seen)) == [f"m{i:03}" for i in range(MUTES)]  # each once
    arena.bystanders_ok()

    # 2. Three members paste 40 lines of 1 KB each: 120 KB to each of 250 members who do not
    # read. Olga reads every line, each speaker's in the order it was said.
    with arena.watch():
        for i, s in enumerate(speakers):
            s.send_bytes(
                b"".join(f"say #big {i}:{n:02} {'x' * 1000}\r\n".encode() for n in range(40))
            )
        seen = _read_until(olga, lambda t: len(re.findall(r"\] s\d: ", t)) >= 120, 60)
    for i in range(3):
        said = re.findall(rf"\[#big\] s{i}: {i}:(\d\d) x{{1000}}\n", seen)
        assert said == [f"{n:02}" for n in range(40)], (i, said)
    grown = vmrss(pid) - before
    bound = MUTES * (MAX_OUTPUT + TRANSPORT) + CONSTANT
    print(f"\nRSS grew by {grown / 2**20:.1f} MiB (bound {bound / 2**20:.1f} MiB)")
    assert grown < bound, (grown, bound)
    arena.bystanders_ok()

    # 3. All of them gone at once: each leaves the room, announced to the rest.
    with arena.watch():
        for m in mutes:
            m.close()
        _read_until(olga, lambda t: t.count(" has left\n") >= MUTES, 60)
    arena.bystanders_ok()
    assert "Traceback" not in arena.server.log_text()
