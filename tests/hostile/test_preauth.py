"""Pre-authentication pressure: half-open SSH and telnet connections from 20 addresses.

The attack (issue figure: 20 addresses × 20 SSH connections that send a banner
and nothing more, reconnecting when dropped, left 0 of 40 telnet logins from a
clean address getting in) is sized down against a server with a small
``--max-unauth``: 20 addresses × 2 SSH + 1 telnet half-open connections for a
house of 40. Connections that make no progress are closed first to make room,
and their addresses are refused for a while, so the clean address gets in.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from hostile.arena import Arena, Peer, arena_with

pytestmark = pytest.mark.integration

MAX_UNAUTH = 40


#: The arena with an SSH listener and a small --max-unauth, so a flood fills it cheaply.
arena = arena_with(
    "preauth",
    "--ssh", "tcp:0:interface=127.0.0.1",
    "--max-unauth", str(MAX_UNAUTH),
    "--cmd-rate", "0",
)  # fmt: skip


class Squatters:
    """Half-open connections from ``sources``, each reconnecting as soon as it is dropped:
    per address ``ssh`` that send an SSH banner and nothing more, ``telnet`` that never type."""

    def __init__(self, arena: Arena, sources: list[str], ssh: int, telnet: int) -> None:
        self.ssh_port = arena.server.listening("ssh")[0]
        self.telnet_port = arena.port
        self.slots: list[tuple[str, int, socket.socket | None]] = [
            (source, port, None)
            for source in sources
            for port in [self.ssh_port] * ssh + [self.telnet_port] * telnet
        ]
        self.connects = 0
        self._penalised = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Squatters:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for _, _, sock in self.slots:
            if sock is not None:
                sock.close()

    def refusals_penalised(self) -> int:
        """Connections refused at once because their address was penalised."""
        return self._penalised

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, (source, port, sock) in enumerate(self.slots):
                try:
                    if sock is None:
                        sock = socket.create_connection(
                            ("127.0.0.1", port), timeout=1, source_address=(source, 0)
                        )
                        self.connects += 1
                        if port == self.ssh_port:
                            sock.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")  # the banner, no more
                        sock.setblocking(False)
                        self.slots[i] = (source, port, sock)
                    data = sock.recv(1 << 16)
                    if b"stalled connections from your address" in data:
                        self._penalised += 1
                    if data == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:
                    if sock is not None:
                        sock.close()
                    self.slots[i] = (source, port, None)
            self._stop.wait(0.25)


def _telnet_login(arena: Arena, source: str) -> bool:
    """One try from ``source``: True when it reached the shell prompt."""
    try:
        c = Peer(arena.port, source, timeout=5)
    except OSError:
        return False
    try:
        greeting = c.expect("\n", timeout=3)
        if "Too many" in greeting:
            return False
        c.expect("login: ", timeout=3)
        c.send_line("bob")
        c.expect("Password: ", timeout=3)
        c.send_line("correct horse")
        c.expect("bob@testhost:~$ ", timeout=5)
        return True
    except (AssertionError, OSError):
        return False
    finally:
        c.close()


def test_half_open_ssh_and_telnet_from_twenty_addresses_let_a_clean_address_in(
    arena: Arena,
) -> None:
    sources = [arena.source() for _ in range(20)]
    clean = arena.source()
    with arena.watch(), Squatters(arena, sources, ssh=2, telnet=1) as squatters:
        started = time.monotonic()
        time.sleep(1.5)  # the house is full of them
        tries = 0
        while tries < 3:
            tries += 1
            if _telnet_login(arena, clean):
                break
            time.sleep(1.0)
        else:
            pytest.fail("a clean address did not get in within three tries")
        print(f"\nclean address got in on try {tries}; {squatters.connects} squatter connects")
        for _ in range(3):  # and again, every time
            assert _telnet_login(arena, clean)
        # Penalties reached them within 8 s of the attack's start (as soon as both are seen).
        while not (
            "for stalled connections" in arena.server.log_text()
            and squatters.refusals_penalised() > 0
        ):
            if time.monotonic() > started + 8:
                break
            time.sleep(0.1)
        assert "for stalled connections" in arena.server.log_text()
        penalised = squatters.refusals_penalised()
        assert _telnet_login(arena, clean)
    print(f"penalised refusals seen by the squatters: {penalised}")
    assert penalised > 0
    arena.bystanders_ok()


def test_a_penalised_address_is_told_so_at_once(arena: Arena) -> None:
    source, other = arena.source(), arena.source()
    ssh_port = arena.server.listening("ssh")[0]
    with arena.watch():
        held = [
            socket.create_connection(("127.0.0.1", ssh_port), source_address=(s, 0))
            for s in [source] * (MAX_UNAUTH // 2) + [other] * (MAX_UNAUTH // 2)
        ]  # the whole house, half-open; ``source``'s the oldest
        time.sleep(2.2)  # MIN_STALL_AGE: they have had their chance
        newcomers: list[Peer] = []
        answer = b""
        while len(newcomers) < 20 and b"stalled" not in answer:
            newcomers.append(arena.connect())  # under pressure: makes room, the oldest first
            newcomers[-1].expect("login: ", timeout=3)
            newcomers[-1].send_line("bob")  # not stalled itself
            started = time.monotonic()
            with contextlib.closing(
                socket.create_connection(("127.0.0.1", ssh_port), source_address=(source, 0))
            ) as late:
                late.settimeout(3)
                answer = late.recv(200)
            assert time.monotonic() - started < 1.0
        assert b"Too many stalled connections from your address" in answer
        assert len(newcomers) <= 10  # 5 s of penalty a connection, refused past 15
        for s in held:
            s.close()
        for c in newcomers:
            c.close()
    arena.bystanders_ok()
