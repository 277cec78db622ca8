"""The hostile suite's arena: one real server per module, attackers and two bystanders.

Every attack ends with :meth:`Arena.bystanders_ok`: two sessions that were
logged in before it still get a ``who`` answered and a ``write`` delivered
within a second. Attackers connect from their own loopback addresses
(127.0.0.0/8 is all loopback on Linux), so a lockout or a per-address limit
they trigger never touches the bystanders on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from realserver import PASSWORD, RawClient, RealServer, sign_in, sign_up

#: How long a bystander may wait for an answer after (or during) an attack.
BYSTANDER_DEADLINE = 1.0
#: The worst round trip the stall probe may see while an attack runs (see :meth:`Arena.watch`).
STALL_LIMIT = 0.1
PROBE = Path(__file__).with_name("stallprobe.py")
#: Bytes that must never reach another person's terminal raw.
DANGEROUS = [
    b"\x1b",
    b"\x07",
    b"\x9b",
    *(chr(c).encode() for c in (0x202E, 0x2066, 0x200E, 0x200F, 0x061C, 0x2028, 0x2029)),
    *(chr(c).encode() for c in (0x200B, 0x2060, 0xFEFF, 0x00AD)),
    # NEL (a C1 control), the invisible fillers, the combining grapheme joiner and the
    # interlinear annotation controls.
    *(chr(c).encode() for c in (0x0085, 0x3164, 0x115F, 0x1160, 0xFFA0, 0x180E, 0x034F)),
    *(chr(c).encode() for c in (0xFFF9, 0xFFFA, 0xFFFB)),
]

#: The server's own sequence: erase the prompt line before showing a message under it.
SERVER_OWN = b"\r\x1b[K"

pytestmark = pytest.mark.integration


class Peer(RawClient):
    """A raw client (never negotiates) from a chosen loopback address; keeps all it saw."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
        self.buffer = b""
        self.raw_seen = b""

    def drain(self, quiet: float = 0.05) -> bytes:
        """Everything that arrives until the line is quiet for ``quiet`` seconds."""
        got = b""
        self.sock.settimeout(quiet)
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
        except (TimeoutError, BlockingIOError):
            pass
        except ConnectionResetError:
            pass
        self.raw_seen += got
        self.buffer = b""
        return got

    def run(self, line: str, prompt: str, timeout: float = 10.0) -> str:
        """Type ``line`` (after reading what was pending) and read its output up to ``prompt``."""
        self.drain(0.02)
        self.send_bytes(line.encode("utf-8", "surrogateescape") + b"\r\n")
        return self.expect(prompt, timeout)


def assert_clean(data: bytes) -> None:
    """No escape, C1 control or invisible/bidi character reached the terminal raw."""
    data = data.replace(b"\xff\xff", b"").replace(SERVER_OWN, b"")
    for bad in DANGEROUS:
        assert bad not in data, (bad, data[-400:])


class Arena:
    def __init__(self, server: RealServer) -> None:
        self.server = server
        self.port = server.port
        self._marks = itertools.count()
        self._sources = itertools.count(10)
        self.alice = self.register("alice", source="127.0.0.1")
        self.bob = self.register("bob", source="127.0.0.1")

    def source(self) -> str:
        """A fresh loopback address for an attacker."""
        n = next(self._sources)
        return f"127.0.{n // 250}.{n % 250 + 2}"

    def connect(self, source: str | None = None) -> Peer:
        return Peer(self.port, source or self.source())

    def register(self, name: str, source: str | None = None) -> Peer:
        return sign_up(self.connect(source), name, PASSWORD)

    def login(self, name: str, password: str = PASSWORD, source: str | None = None) -> Peer:
        return sign_in(self.connect(source), name, password)

    def admin(self, source: str | None = None) -> Peer:
        return self.login("admin", self.server.admin_password(), source)

    def bystanders_ok(self) -> None:
        """The two bystanders get ``who`` and a ``write`` through within a second."""
        a, b = self.alice, self.bob
        # What is pending for them (earlier messages) is read first: on loopback it is there
        # within a few ms; the mark below is the check, whatever else arrives.
        a.drain(0.01)
        b.drain(0.01)
        mark = f"mark-{next(self._marks)}"
        start = time.monotonic()
        a.send_line("who")
        a.send_line(f"echo {mark}")
        out = a.expect(f"{mark}\n", BYSTANDER_DEADLINE)
        assert "bob " in out and "alice " in out, out
        a.send_line(f"write bob {mark}")
        b.expect(mark, BYSTANDER_DEADLINE - (time.monotonic() - start) + 0.5)
        assert time.monotonic() - start < 2 * BYSTANDER_DEADLINE

    @contextlib.contextmanager
    def watch(self, limit: float = STALL_LIMIT) -> Iterator[Stall]:
        """Measure the worst bystander round trip while the ``with`` block attacks.

        A session of its own (``carol``, registered on first use) runs in a child
        process and sends ``echo`` every 100 ms; at the end of the block the worst
        round trip is in the yielded :class:`Stall` and must be under ``limit``.
        """
        if not getattr(self, "_carol", False):
            self.register("carol", source="127.0.0.1").close()
            self._carol = True
        probe = subprocess.Popen(
            [sys.executable, str(PROBE), str(self.port), "carol", PASSWORD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert probe.stdin is not None and probe.stdout is not None
        stall = Stall()
        try:
            assert probe.stdout.readline().strip() == "ready"
            yield stall
            probe.stdin.write("stop\n")
            probe.stdin.flush()
            worst, count = probe.stdout.readline().split()
            stall.worst, stall.probes = float(worst), int(count)
        finally:
            probe.kill()
            probe.wait()
        print(f"\nbystander: worst round trip {stall.worst * 1000:.1f} ms over {stall.probes}")
        assert stall.probes > 0
        assert stall.worst < limit, f"a bystander waited {stall.worst * 1000:.0f} ms"


class Stall:
    """What :meth:`Arena.watch` measured: the worst round trip (s) and the number of probes."""

    worst: float = 0.0
    probes: int = 0


def arena_with(name: str, *flags: str) -> Callable[..., Iterator[Arena]]:
    """A module's own ``arena`` fixture: the arena's server started with ``flags`` too (an SSH or
    web listener, a smaller limit), in its own data dir, stopped after the module's tests.
    Registration is unlimited so the arena can make its attackers' and bystanders' accounts."""

    @pytest.fixture(scope="module")
    def arena(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arena]:
        work = tmp_path_factory.mktemp(name)
        server = RealServer(work, "--max-registrations", "0", *flags).start()
        try:
            yield Arena(server)
        finally:
            server.stop()

    return arena
