"""Micro-benchmark of the telnet input hot path (not a test; run it by hand).

    .venv/bin/python tests/perf_telnet_lines.py [REV]

Times ``TelnetProtocol.dataReceived`` for a whole plain line in one packet
(line mode, the common case) and for one keystroke in character mode, with a
receiver that does nothing. With REV (e.g. a commit), the line-mode case is
also timed for that revision's telnet.py, for a before/after comparison.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport


class Nothing:
    def __getattr__(self, name: str) -> Any:
        return lambda *a: None


def protocol(module: Any) -> Any:
    proto = module.TelnetProtocol(lambda wire: Nothing(), Clock())
    proto.makeConnection(StringTransport())
    return proto


def per_call(f: Any, n: int = 200_000) -> float:
    return min(timeit.repeat(f, number=n, repeat=5)) / n * 1e6


def main() -> None:
    from shellserver.wires.telnet import protocol as telnet

    line = b"write bob hello there, how are you\r\n"
    proto = protocol(telnet)
    print(f"line mode, one plain line: {per_call(lambda: proto.dataReceived(line)):.2f} us")
    char = protocol(telnet)
    char.dataReceived(b"\xff\xfd\x01\xff\xfd\x03")  # DO ECHO, DO SGA: character mode
    print(f"character mode, one key:   {per_call(lambda: char.dataReceived(b'x')):.2f} us")
    from shellserver.terminal.discipline import Redraws, Terminal

    class Wire(Nothing):
        width, height, backlogged = 80, 24, False

    term = Terminal(Wire(), Redraws(Clock()))  # type: ignore[arg-type]
    term.mode_changed(True)
    term.set_handler(lambda line: None, lambda: "bob@host:~$ ")

    def key() -> None:
        term.text_received("x")
        term.text_received("\x7f")

    print(f"editor, a key and a backspace: {per_call(key, 50_000):.2f} us")
    if len(sys.argv) > 1:
        shown = [
            subprocess.run(
                ["git", "show", f"{sys.argv[1]}:{where}"], capture_output=True, text=True
            )
            for where in ("shellserver/wires/telnet/protocol.py", "shellserver/telnet.py")  # moved
        ]
        src = next(r.stdout for r in shown if r.returncode == 0)
        path = Path(tempfile.mkdtemp()) / "old_telnet.py"
        path.write_text(src)
        spec = importlib.util.spec_from_file_location("old_telnet", path)
        assert spec is not None and spec.loader is not None
        old = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
        before = protocol(old)
        t = per_call(lambda: before.dataReceived(line))
        print(f"line mode at {sys.argv[1]}: {t:.2f} us")


if __name__ == "__main__":
    main()
