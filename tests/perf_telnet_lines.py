"""Micro-benchmark of the telnet input hot path (not a test; run it by hand).

    .venv/bin/python tests/perf_telnet_lines.py [REV]

Times ``TelnetProtocol.dataReceived`` for 1,000 whole plain lines, one per
packet (line mode, the common case), and 1,000 single keystrokes in character
mode, with a receiver that does nothing, and the parser alone
(``TelnetParser.receive``). With REV (e.g. a commit), the same protocol cases
are timed for that revision's telnet protocol too, alternating the two
versions run by run so that the machine's noise falls on both, and the
medians are printed side by side.
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from shellserver.terminal.discipline import GONE

LINES = [f"write bob hello there, how are you {i % 10}\r\n".encode() for i in range(1000)]
KEYS = [bytes([97 + i % 26]) for i in range(1000)]
ROUNDS = 41


#: A receiver that does nothing, with real methods (no per-call lookup magic): the one a
#: wire swaps in when its connection is lost.
Nothing = type(GONE)


def protocol(module: Any, character: bool = False) -> Any:
    proto = module.TelnetProtocol(lambda wire: Nothing(), Clock())
    proto.makeConnection(StringTransport())
    if character:
        proto.dataReceived(b"\xff\xfd\x01\xff\xfd\x03")  # DO ECHO, DO SGA: character mode
    return proto


def feeder(receive: Callable[[bytes], object], packets: list[bytes]) -> Callable[[], float]:
    """One run: µs per packet for the whole list."""

    def run() -> float:
        t = time.perf_counter()
        for packet in packets:
            receive(packet)
        return (time.perf_counter() - t) / len(packets) * 1e6

    return run


def medians(runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Run each case in turn, ROUNDS times (alternating), and keep each one's median."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(ROUNDS):
        for name, run in runs.items():
            times[name].append(run())
    return {name: statistics.median(ts) for name, ts in times.items()}


def load(rev: str) -> Any:
    shown = [
        subprocess.run(["git", "show", f"{rev}:{where}"], capture_output=True, text=True)
        for where in ("shellserver/wires/telnet/protocol.py", "shellserver/telnet.py")  # moved
    ]
    src = next(r.stdout for r in shown if r.returncode == 0)
    path = Path(tempfile.mkdtemp()) / "old_telnet.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_telnet", path)
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    return old


def main() -> None:
    from shellserver.wires.telnet import protocol as telnet
    from shellserver.wires.telnet.core import TelnetParser

    runs = {
        "line mode, 1,000 plain lines": feeder(protocol(telnet).dataReceived, LINES),
        "character mode, 1,000 keys": feeder(protocol(telnet, True).dataReceived, KEYS),
        "parser alone, 1,000 plain lines": feeder(TelnetParser().receive, LINES),
    }
    if len(sys.argv) > 1:
        old = load(sys.argv[1])
        rev = sys.argv[1]
        runs[f"line mode at {rev}"] = feeder(protocol(old).dataReceived, LINES)
        runs[f"character mode at {rev}"] = feeder(protocol(old, True).dataReceived, KEYS)
    for name, us in medians(runs).items():
        print(f"{name:40s} {us:5.3f} µs per packet (median of {ROUNDS})")


if __name__ == "__main__":
    main()
