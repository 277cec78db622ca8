"""Hostile SFTP clients (the real ``ssh -s host sftp`` fed packets by hand) against the real
server, while bystanders keep being answered."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest
from test_ssh_integration import ssh_args, user_key

from hostile.arena import Arena, arena_with

pytestmark = pytest.mark.integration
MiB = 1024 * 1024

arena = arena_with("hostile-sftp", "--ssh", "tcp:0:interface=127.0.0.1", "--quota", "20M")

_started: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _kill_clients() -> Iterator[None]:
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def sftp_channel(arena: Arena, user: str) -> subprocess.Popen[bytes]:
    """``ssh -s USER@host sftp`` with its key planted in the home as an operator would."""
    arena.register(user).close()
    key = user_key(arena.server, "id_hostile")
    ssh_dir = arena.server.data / "home" / user / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_bytes(key.with_suffix(".pub").read_bytes())
    proc = subprocess.Popen(
        [*ssh_args(arena.server, "-s", key=key), f"{user}@127.0.0.1", "sftp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    _started.append(proc)
    return proc


def send(proc: subprocess.Popen[bytes], kind: int, body: bytes) -> None:
    assert proc.stdin is not None
    proc.stdin.write(struct.pack(">LB", len(body) + 1, kind) + body)
    proc.stdin.flush()


def receive(proc: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    assert proc.stdout is not None
    head = proc.stdout.read(5)
    assert len(head) == 5, "the server closed the channel"
    return head[4], proc.stdout.read(struct.unpack(">L", head[:4])[0] - 1)


def open_file(proc: subprocess.Popen[bytes], name: bytes, flags: int) -> bytes:
    send(proc, 3, struct.pack(">L", 1) + ns(name) + struct.pack(">LL", flags, 0))
    kind, data = receive(proc)
    assert kind == 102, data
    return data[8:]


def ns(data: bytes) -> bytes:
    return struct.pack(">L", len(data)) + data


def test_flooding_stalled_and_hostile_sftp_clients_never_stall_a_bystander(arena: Arena) -> None:
    """Three clients at once: one asks for a 40 MB file in one go and never reads, one sends
    a flood of garbage, realpath and refused requests, one uploads as fast as it can into its
    quota. The bystanders' round trips stay under the stall limit, and the server grows by far
    less than the file."""
    reader = sftp_channel(arena, "reader")
    flooder = sftp_channel(arena, "flooder")
    writer = sftp_channel(arena, "writer")
    big = arena.server.data / "home" / "reader" / "big.bin"
    with open(big, "wb") as f:
        for _ in range(40):
            f.write(os.urandom(MiB))
    for proc in (reader, flooder, writer):
        send(proc, 1, struct.pack(">L", 3))
        assert receive(proc)[0] == 2  # VERSION: the channel is up
    handle = open_file(reader, b"big.bin", 1)
    upload = open_file(writer, b"up.bin", 2 | 8 | 16)
    before = arena.server.rss()
    rng = random.Random(3)
    with arena.watch():
        for n in range(40 * MiB // 32768):  # the whole file asked for, nothing read
            read = ns(handle) + struct.pack(">QL", n * 32768, 32768)
            send(reader, 5, struct.pack(">L", 10 + n) + read)
        deadline = time.monotonic() + 3
        n = 0
        while time.monotonic() < deadline:
            n += 1
            kind = rng.choice([16, 17, 20, 99, 3, 11])
            junk = ns(b"../" * 50) + rng.randbytes(rng.randrange(0, 20))
            send(flooder, kind, struct.pack(">L", n) + junk)
            if n % 8 == 0:  # the writer reads its answers: it is not the one stalling
                write = ns(upload) + struct.pack(">Q", n * 4096) + ns(b"w" * 32768)
                send(writer, 6, struct.pack(">L", n) + write)
                assert receive(writer)[0] == 101
        peak = arena.server.rss()
    assert peak - before < 24 * MiB, (before, peak)
    arena.bystanders_ok()
    assert "Traceback" not in arena.server.log_text()
