"""What the message counters cost per delivery: a micro-benchmark, in process, no sockets.

    .venv/bin/python bench/metrics_cost.py [--sessions 1000] [--repeat 7]

The real assembly (``app/assembly.py``) (SQLite store in a temp dir, inline runners, a test clock)
with N logged-in telnet sessions whose transports discard bytes. Times, as
typed at a prompt, ``wall TEXT`` (one fan-out to every session) and ``write
bob TEXT`` (one delivery), and, on their own, exactly the statements the
server adds for ``shellserver_messages_total`` (``adminops.wall``: one
``len(hub)`` and one call per fan-out; ``messaging._send``: one call per
delivery). Prints the cost per delivery and the counters' share of it, and
exits 1 when the share is over the target (2 %, issue 18).

Timing the counters on their own is deliberate: an A/B run of the whole
command with and without them differs by less than the noise of a shared
machine (a few per cent). Without syscalls a delivery is cheaper than in a
real server (where each copy also costs a ``send``), so the share measured
here is an upper bound. Each figure is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.filepath import FilePath

from shellserver.app.assembly import Assembly, assemble
from shellserver.app.config import Config
from shellserver.files.homefs import Homes
from shellserver.hub.local import Hub
from shellserver.ops.threads import inline_runner
from shellserver.store.accounts import ROLE_ADMIN, AccountDB, AccountStore
from shellserver.store.passwords import hash_password
from shellserver.wires.telnet.protocol import TelnetProtocol

TARGET = 0.02
PASSWORD = "benchmark"


class NullTransport(StringTransport):
    """Accepts and forgets: the benchmark measures the server, not a growing buffer."""

    def write(self, data: bytes) -> None:
        """Output is dropped: only the server's own work is timed."""
        pass

    def writeSequence(self, data: Any) -> None:
        """Output is dropped: only the server's own work is timed."""
        pass


def make_server(directory: Path) -> Assembly:
    """The real assembly in this process with three accounts, on inline runners and a fake
    clock, so only our own Python is timed."""
    db = AccountDB.open(str(directory / "accounts.sqlite3"))
    for name, role in (("root1", ROLE_ADMIN), ("alice", "user"), ("bob", "user")):
        db.create(name, hash_password(PASSWORD, 4), role)
    store = AccountStore(db, inline_runner, inline_runner, 4)
    config = Config(hostname="bench", hash_cost=4, max_sessions=0, cmd_rate=0)
    clock = Clock()
    home_root = directory / "home"
    home_root.mkdir(mode=0o700, exist_ok=True)
    homes = Homes(FilePath(str(home_root)), config.quota, inline_runner)
    return assemble(
        config,
        clock,
        store,
        Hub(node=config.node, clock=clock),
        homes,
        lambda: None,
        str(directory / "spent"),
    )


def session(server: Assembly, name: str) -> TelnetProtocol:
    """One logged-in telnet session on a transport that drops output: a recipient whose
    delivery costs what ours does and no syscall."""
    protocol = TelnetProtocol(server.new_connection, server.clock)
    protocol.makeConnection(NullTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 1)))
    protocol.dataReceived(f"{name}\r\n{PASSWORD}\r\n".encode())
    return protocol


def main() -> int:
    """Time ``wall`` and ``write`` and the counters' own statements apart: the counters' share of a
    delivery, which must stay within its target."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = make_server(Path(tmp))
        admin, alice = session(server, "root1"), session(server, "alice")
        session(server, "bob")
        for _ in range(args.sessions - 3):
            session(server, "alice")
        assert len(server.hub) == args.sessions, "not all sessions logged in"
        wall = b"wall maintenance at 18:00\r\n"
        write = b"write bob hello\r\n"
        metrics, hub, n = server.metrics, server.hub, args.sessions

        def best(f: Any, number: int) -> float:
            timeit.timeit(f, number=number)  # warm up
            return min(timeit.repeat(f, number=number, repeat=args.repeat)) / number

        nothing = best(lambda: None, 1_000_000)
        # Exactly the statements the server adds: adminops.wall, messaging._send.
        wall_count = best(lambda: metrics.messages("wall", len(hub), 0), 1_000_000) - nothing
        write_count = best(lambda: server.metrics.message("write", True), 1_000_000) - nothing
        cases = (
            ("wall", best(lambda: admin.dataReceived(wall), 50) / n, wall_count / n),
            ("write", best(lambda: alice.dataReceived(write), 20_000), write_count),
        )
        print(f"sessions: {n}; target: message counters at most {TARGET:.0%} of a delivery's CPU")
        failed = False
        for name, delivery, counting in cases:
            share = counting / delivery
            ok = share <= TARGET
            failed |= not ok
            print(
                f"{name:5}: {delivery * 1e9:7.0f} ns per delivery (as typed, counters on), "
                f"counting {counting * 1e9:6.1f} ns of it: {share:.2%} "
                f"{'ok' if ok else 'OVER TARGET'}"
            )
        delivered = metrics.registry.get_sample_value(
            "shellserver_messages_total", {"kind": "write", "outcome": "delivered"}
        )
        assert delivered, "the counted runs counted nothing"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
