"""CPU per command through the whole stack in one process, free of the machine's noise.

The load runs (``run.py``) measure from outside, which is the truth but moves by
±15% on a shared machine. This runs the same lines through the real stack —
``TelnetProtocol`` → ``Terminal`` → ``Shell`` → command → ``Hub`` → the other
session's ``Terminal`` — over ``StringTransport`` (no sockets, no syscalls) with
``time.process_time``, so a change to our Python shows up to a tenth of a µs.

``--sessions N`` adds ``spread``: ``write``s between N logged-in sessions, each
from and to a different one (as the load run does), with the end of the
reactor turn (the recipients' prompts drawn again) every 200 lines — the
whole per-``write`` path, and a working set that no longer sits in the cache —
and ``fanout``: ``wall``s from an admin to all N, per delivery, the end of
the turn included.

Usage: ``python bench/micro.py [--lines 20000] [--profile] [--sessions N]``. To
compare two versions of the code, put one first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import Client, add_user, make_server

CASES = {
    "write": "write bob hello from the bench ~m1~",
    "wall": "wall bench broadcast ~w1~ the quick brown fox",
    "mesg": "mesg",
}


def run(lines: int, profile: bool) -> dict[str, float]:
    """CPU per line for each case through the whole stack in one process (no sockets), so a
    change's cost shows without the load run's noise."""
    with tempfile.TemporaryDirectory() as tmp:
        server = make_server(Path(tmp), cmd_rate=0.0)
        add_user(server, "alice", admin=True)
        add_user(server, "bob")
        alice, bob = Client(server), Client(server)
        alice.login("alice")
        bob.login("bob")
        out: dict[str, float] = {}
        for name, text in CASES.items():
            data = text.encode() + b"\r\n"

            def loop(data: bytes = data) -> None:
                for i in range(lines):
                    alice.protocol.dataReceived(data)
                    if i % 256 == 0:
                        alice.transport.clear()
                        bob.transport.clear()

            t = time.process_time()
            loop()
            out[name] = (time.process_time() - t) / lines * 1e6
            if profile and name == "write":
                prof = cProfile.Profile()
                prof.runcall(loop)
                pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        return out


def spread(lines: int, sessions: int, profile: bool) -> tuple[float, float]:
    """CPU per ``write`` line among ``sessions`` sessions, and per ``wall`` delivery
    to all of them, redraws included."""
    with tempfile.TemporaryDirectory() as tmp:
        server = make_server(Path(tmp), cmd_rate=0.0)
        add_user(server, "root", admin=True)
        root = Client(server)
        root.login("root")
        clients = []
        for i in range(sessions):
            add_user(server, f"u{i}")
            client = Client(server)
            client.login(f"u{i}")
            clients.append(client)
        data = []
        for k in range(min(lines, 4096)):
            sender, target = clients[k % sessions], clients[(k * 7919 + 1) % sessions]
            line = f"write u{(k * 7919 + 1) % sessions} hello ~m{k}~\r\n".encode()
            data.append((sender.protocol, line, sender.transport, target.transport))
        clock = server.clock

        def loop() -> None:
            touched = []
            for k in range(lines):
                protocol, line, mine, theirs = data[k % len(data)]
                protocol.dataReceived(line)
                touched += (mine, theirs)
                if k % 200 == 199:
                    clock.advance(0)  # type: ignore[attr-defined]
                    for transport in touched:
                        transport.clear()
                    touched.clear()

        loop()  # warm: every recipient has had a message and a redraw
        t = time.process_time()
        loop()
        spent = (time.process_time() - t) / lines * 1e6
        if profile:
            prof = cProfile.Profile()
            prof.runcall(loop)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        walls = max(10, lines // sessions)
        wall_spent = 0.0
        for w in range(walls + 2):
            t = time.process_time()
            line = f"wall bench broadcast ~w{w}~ the quick brown fox\r\n"
            root.protocol.dataReceived(line.encode())
            clock.advance(0)  # type: ignore[attr-defined]
            if w >= 2:  # the first two warm up
                wall_spent += time.process_time() - t
            for c in clients:
                c.transport.clear()
            root.transport.clear()
        return spent, wall_spent / (walls * (sessions + 1)) * 1e6


def main(argv: list[str] | None = None) -> int:
    """Print microseconds per command: a quick before/after comparison of a change."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=20000)
    p.add_argument("--profile", action="store_true", help="cProfile the write loop")
    p.add_argument("--sessions", type=int, default=0, help="also: writes among N sessions")
    args = p.parse_args(argv)
    for name, us in run(args.lines, args.profile).items():
        print(f"{name:6s} {us:6.2f} µs per line (two sessions, whole stack, no sockets)")
    if args.sessions > 2:
        us, wall_us = spread(args.lines, args.sessions, args.profile)
        print(f"spread {us:6.2f} µs per write ({args.sessions} sessions, redraws included)")
        print(f"fanout {wall_us:6.2f} µs per wall delivery ({args.sessions} sessions, the same)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
