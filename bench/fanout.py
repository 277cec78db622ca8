"""CPU per wall delivery in one process, with Twisted's real transports and sockets.

``micro.py`` runs over ``StringTransport``, which leaves out what a delivery
costs in Twisted's ``FileDescriptor`` (``write``, ``startWriting``, ``doWrite``)
and the ``send`` itself; the load runs (``run.py``) have all of it but move by
±15% on a shared machine. This sits between: N telnet wires on the real
reactor over Unix socket pairs (the other ends in this process, read outside
the timed part), each a line-mode terminal showing a prompt; a wall is a
``Message`` notified to every terminal and the reactor turns that send it
(the prompts drawn again at the end of the turn included).

``--char-mode``: the other ends answer the telnet negotiation as netkit telnet
does (``kinds.TelnetAnswers``), so every terminal is in character mode, as
telnet(1), PuTTY, SSH with a pty and the browser get it: a message erases the
input line and draws it again after. ``--profile FILE``: cProfile of the timed
part only, written to FILE (read it with ``python -m pstats FILE``).

Usage: ``python bench/fanout.py [--sessions 2000] [--walls 200]``. To compare
two versions of the code, put one first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import cProfile
import resource
import socket
import sys
import time

from kinds import TelnetAnswers
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from shellserver.terminal.discipline import ILineReceiver, IWire, Redraws, Terminal
from shellserver.text.message import Message
from shellserver.wires.telnet.protocol import TelnetProtocol


def main(argv: list[str] | None = None) -> int:
    """Build the wires, time the walls, print CPU per delivery: the delivery path's cost without
    the load run's noise."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=2000)
    p.add_argument("--walls", type=int, default=200)
    p.add_argument(
        "--floor", action="store_true", help="the floor's delivery: one transport write"
    )
    p.add_argument("--char-mode", action="store_true", help="terminals in character mode")
    p.add_argument("--profile", help="cProfile the timed part into this file")
    p.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="seconds between walls, untimed: at 0.05 or more every line is drawn again at "
        "once, as for messages at a human pace; closer walls are paced (one redraw per "
        "session per 50 ms, the rest at the end of the interval)",
    )
    args = p.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    redraws = Redraws(reactor)
    terms: list[Terminal] = []

    def attach(wire: IWire) -> ILineReceiver:
        term = Terminal(wire, redraws)
        terms.append(term)
        return term

    floors: list[Protocol] = []

    class Wires(Factory):
        def buildProtocol(self, addr: object) -> Protocol:
            if args.floor:
                floors.append(Protocol())
                return floors[-1]
            return TelnetProtocol(attach, reactor, 4096, 64 * 1024)

    peers: list[socket.socket] = []
    for _ in range(args.sessions):
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, Wires())  # type: ignore[attr-defined]
        ours.close()
        peers.append(theirs)
    for term in terms:
        term.set_handler(lambda line: None, lambda: "someone@benchhost:~$ ")

    def turns() -> None:
        for _ in range(3):
            reactor.iterate(0)

    def drain() -> None:
        for peer in peers:
            try:
                while peer.recv(65536):
                    pass
            except BlockingIOError:
                pass

    turns()
    if args.char_mode:
        for peer in peers:
            answers = TelnetAnswers()
            for _ in range(3):  # the offers, then the terminal type asked for
                try:
                    reply = answers.feed(peer.recv(65536))
                except BlockingIOError:
                    reply = b""
                if reply:
                    peer.send(reply)
                turns()
        modes = {term.character_mode for term in terms}
        if modes != {True}:
            raise SystemExit(f"fanout: not every terminal is in character mode: {modes}")
    drain()
    profile = cProfile.Profile() if args.profile else None
    spent = 0.0
    for i in range(args.walls):
        message = Message.of(
            f"Broadcast message from root@benchhost (tel/0) at 12:00 ...\nwall {i}"
        )
        data = message.text.replace("\n", "\r\n").encode()
        t = time.process_time()
        if profile is not None:
            profile.enable()
        if args.floor:  # bench/floor.py's wall: the bytes, one write per recipient
            for proto in floors:
                proto.transport.write(data)  # type: ignore[union-attr]
        for term in terms:
            term.notify(message)
        turns()
        if profile is not None:
            profile.disable()
        spent += time.process_time() - t
        drain()
        if args.gap:
            time.sleep(args.gap)
            turns()  # the paced redraws due by now, untimed
            drain()
    n = len(floors) or len(terms)
    per = spent / (args.walls * n) * 1e6
    if profile is not None:
        profile.dump_stats(args.profile)
    who = "floor" if args.floor else "char" if args.char_mode else "ours"
    print(f"wall {who:5s} {per:6.2f} µs per delivery ({n} sessions, real transports and sockets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
