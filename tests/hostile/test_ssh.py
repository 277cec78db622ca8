"""Hostile SSH clients (conch, in their own processes) against the real server.

The module's arena is the hostile suite's, plus an ``--ssh`` listener. Memory is
the server's resident set (``VmRSS`` in ``/proc``), read before, during and after.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realserver import PASSWORD
from twisted.conch.ssh.keys import Key

from hostile.arena import Arena, arena_with

pytestmark = pytest.mark.integration
ATTACK = Path(__file__).with_name("sshattack.py")
MiB = 1024 * 1024


#: The arena with an SSH listener (and what the attacks here need) besides telnet.
arena = arena_with("hostile-ssh", "--ssh", "tcp:0:interface=127.0.0.1", "--cmd-rate", "0")


def ssh_port(arena: Arena) -> int:
    deadline = time.monotonic() + 10
    while not arena.server.listening("ssh"):
        assert time.monotonic() < deadline, arena.server.log_text()
        time.sleep(0.05)
    return arena.server.listening("ssh")[0]


def rss(arena: Arena) -> int:
    """The server's resident set in bytes."""
    assert arena.server.proc is not None
    status = Path(f"/proc/{arena.server.proc.pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    assert m, status
    return int(m.group(1)) * 1024


#: Attack processes started by this module, killed after each test even when it fails.
_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _kill_attackers() -> Iterator[None]:
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def attack(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(ATTACK), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    _started.append(proc)
    return proc


def member(arena: Arena, name: str) -> None:
    """An account for an attacker, registered by telnet as anyone would."""
    arena.register(name).close()


def test_a_huge_window_that_never_reads_is_held_to_max_output_and_aborted(
    arena: Arena,
) -> None:
    """A client advertises a 4 GiB window, types ``cat big`` 60 times and never reads: the
    server holds at most ``--max-output`` for it (the socket's backpressure pauses the
    channel whatever its window), aborts it after 10 s stalled, and its memory is back after.

    Before: every ``cat`` ran and its output queued in the transport (60 MiB here, 520 MB
    for 598 of them), kept after the connection closed."""
    member(arena, "mallory")
    home = arena.server.data / "home" / "mallory"
    home.mkdir(exist_ok=True)
    (home / "big").write_bytes((b"x" * 127 + b"\n") * (MiB // 128))
    port = ssh_port(arena)
    before = rss(arena)
    peak = before
    with arena.watch():
        client = attack(
            "flood", str(port), arena.source(), "mallory", PASSWORD, "cat big", "60",
            "200", "50", "xterm",
        )  # fmt: skip
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline().strip() == "flooding"
        start = time.monotonic()
        while time.monotonic() - start < 4:
            peak = max(peak, rss(arena))
            time.sleep(0.1)
    print(f"\nRSS {before / MiB:.1f} → peak {peak / MiB:.1f} MiB while flooding")
    # --max-output (256 KiB) + the transport's 64 KiB + one 16 KiB piece, plus a constant
    # for the allocator and the session's own objects: far below one more MiB per cat.
    assert peak - before < 12 * MiB
    # The stall abort: the session ends within 10 s (and a little) of the client stalling.
    deadline = time.monotonic() + 15
    while "mallory logged out from ssh/" not in arena.server.log_text():
        peak = max(peak, rss(arena))
        assert time.monotonic() < deadline, "the stalled SSH client was never aborted"
        time.sleep(0.2)
    client.stdin.write("close\n")
    client.stdin.flush()
    client.wait(10)
    after = rss(arena)
    print(f"RSS {before / MiB:.1f} → peak {peak / MiB:.1f} → after {after / MiB:.1f} MiB")
    assert peak - before < 12 * MiB and after - before < 12 * MiB
    arena.bystanders_ok()


def cpu_seconds(arena: Arena) -> float:
    assert arena.server.proc is not None
    fields = Path(f"/proc/{arena.server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_resizes_of_a_huge_pty_over_a_long_line_from_a_client_that_takes_nothing(
    arena: Arena,
) -> None:
    """A 65535×65535 pty with a 5,000-character TERM, a 4,000-character line, then 5,000
    ``window-change`` requests from a client whose window is full and never widened. The
    SSH wire keeps the size and redraws once when the client reads again; what it holds
    stays bounded and the server's work stays linear. Before: every redraw was appended to
    conch's channel buffer (``buf += data``: quadratic), the server at 100 % CPU for
    minutes."""
    member(arena, "stretch")
    before, cpu_before = rss(arena), cpu_seconds(arena)
    with arena.watch():
        client = attack(
            "resize", str(ssh_port(arena)), arena.source(), "stretch", PASSWORD,
            "65535", "65535", "5000", "4000", "5000", "4096",
        )  # fmt: skip
        assert client.stdout is not None and client.stdin is not None
        assert client.stdout.readline().strip() == "sent"
        time.sleep(1)  # the server reads the requests
    cpu = cpu_seconds(arena) - cpu_before
    peak = rss(arena)
    client.stdin.write("close\n")
    client.stdin.flush()
    client.wait(10)
    print(f"\nserver CPU {cpu:.2f} s; RSS {before / MiB:.1f} → {peak / MiB:.1f} MiB")
    assert cpu < 5
    assert peak - before < 12 * MiB
    arena.bystanders_ok()


def ed25519_blob() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return Key(ed25519.Ed25519PrivateKey.generate()).public().blob()  # type: ignore[no-any-return]


def test_public_key_queries_are_few_per_connection_and_parse_the_file_once(
    arena: Arena, tmp_path: Path
) -> None:
    """10 connections × 800 queries (no signature) for a key listed in a 64 KiB
    authorized_keys: each connection is closed after 6 queries, the file is parsed once,
    and nobody waits. Before: all 8,000 were answered, each reading and parsing the file
    (337 ms stall, RSS +500 MB)."""
    member(arena, "keyed")
    blob = ed25519_blob()
    listed = Key.fromString(blob).toString("openssh") + b" listed\n"
    filler = b"".join(
        Key.fromString(ed25519_blob()).toString("openssh") + b" filler\n" for _ in range(700)
    )
    data = (filler + listed)[-64 * 1024 :]
    data = data[data.index(b"\n") + 1 :]  # whole lines only
    assert listed in data and len(data) <= 64 * 1024
    ssh_dir = arena.server.data / "home" / "keyed" / ".ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_bytes(data)
    blobfile = tmp_path / "blob"
    blobfile.write_bytes(blob)
    before = rss(arena)
    with arena.watch():
        client = attack("queries", str(ssh_port(arena)), arena.source(), "keyed",
                        str(blobfile), "10", "800")  # fmt: skip
        out, _ = client.communicate(timeout=60)
    ok, failed, dropped = map(int, out.split()[1:])
    print(f"\nanswered {ok} PK_OK, {failed} failures; {dropped} connections dropped")
    assert dropped == 10
    assert ok <= 10 * 6  # MAX_KEY_QUERIES a connection
    assert rss(arena) - before < 12 * MiB
    assert arena.server.log_text().count("closed after 6 public key queries") == 10
    # A client within the limit gets its answers: the listed key is recognised.
    client = attack("queries", str(ssh_port(arena)), arena.source(), "keyed",
                    str(blobfile), "1", "6")  # fmt: skip
    out, _ = client.communicate(timeout=60)
    assert out.split() == ["answered", "6", "0", "0"]
    arena.bystanders_ok()


def test_malformed_key_blobs_are_one_rate_limited_line_not_tracebacks(arena: Arena) -> None:
    """Public-key requests whose key blobs do not parse: each drops its connection, the log
    gets one line per address per minute, and no traceback. Before: a traceback
    (``Unhandled Error``) or an error line per blob."""
    member(arena, "fuzzer")
    source = arena.source()
    with arena.watch():
        client = attack("malformed", str(ssh_port(arena)), source, "fuzzer", "200")
        out, _ = client.communicate(timeout=90)
    words = out.split()
    connections, dropped = int(words[3]), int(words[5])
    print(f"\n{out.strip()}")
    assert connections >= 4 and dropped == connections  # every one was dropped
    text = arena.server.log_text()
    assert "Traceback" not in text and "Unhandled Error" not in text
    assert "Unsupported key type" not in text
    lines = [line for line in text.splitlines() if f"malformed packet from {source}" in line]
    assert len(lines) == 1, lines
    arena.bystanders_ok()
