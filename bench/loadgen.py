"""The load generator: logs in N sessions on a loopback server and measures it from outside.

It is its own process (asyncio), drives shellserver and the floors with
exactly the same lines, and reads the server's CPU (``utime + stime``) and RSS from ``/proc/<pid>``
around each phase. Everything is bounded: a fixed number of sessions,
walls, writes and storm logins, and ``--timeout`` seconds in all.

Sessions ``u0``… are of one ``--kind`` (or a ``--mix`` of kinds): telnet in
line mode (raw sockets, no negotiation, like ``nc``: the floors speak only
this), telnet in character mode answering the negotiation as netkit telnet
does, the same over TLS, SSH with a pty (asyncssh), or the browser page's
WebSocket protocol. ``boss`` and ``probe`` are always line-mode telnet.

Phases, in order:

1. ``boss`` (an admin) and ``probe`` log in; the server's RSS is the baseline.
2. login: N sessions ``u0``…, ``--concurrency`` at a time: logins/s, server
   CPU per login. After a short settle, RSS per logged-in session.
3. wall: ``--walls`` broadcasts from ``boss``, one at a time; each is done when
   every session has it (fan-out latency); server CPU per delivery.
4. write: ``--writes`` one-line ``write`` commands between sessions, at most
   ``--window`` in flight; each is done when its recipient has it.
5. storm: ``--storm`` more sessions log in all at once while ``probe`` runs
   ``mesg`` every 10 ms; the longest probe round trip is the stall.

Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import ssl
import sys
import time
from typing import Any

from kinds import Scanner, TelnetAnswers, WsReader, ws_handshake, ws_text

PASSWORD = "benchpass1"
_TICK = os.sysconf("SC_CLK_TCK")


class Proc:
    """The server process as /proc shows it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu(self) -> float:
        """utime + stime of every thread, in seconds."""
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK

    def sys_cpu(self) -> float:
        """stime alone: the kernel's share (sockets), in seconds."""
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[12]) / _TICK

    def rss(self) -> int:
        """Resident set size in bytes."""
        with open(f"/proc/{self.pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


class Session:
    """One logged-in session of any kind. Buffers text while logging in; afterwards only
    scans for markers (:class:`kinds.Scanner`, which skips the echo of its own)."""

    #: What Enter sends: a telnet client in line mode sends CR LF, in character mode CR NUL
    #: (netkit telnet's default); a pty or the browser page a bare CR.
    enter = b"\r\n"

    def __init__(self, gen: Generator, echoes: bool = False) -> None:
        self.gen = gen
        self.buf = bytearray()
        self.want: bytes | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.scanning = False
        self.scanner = Scanner(echoes)
        self.lost = False

    def lose(self) -> None:
        """The connection is gone: a waiting ``expect`` fails at once, not hanging the run."""
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))

    def output(self, data: bytes) -> None:
        """Terminal output from the server (telnet commands and WebSocket frames taken out)."""
        if self.scanning:
            for kind, n in self.scanner.scan(data):
                self.gen.mark(kind, n)
            return
        self.buf += data
        if self.want is not None and self.want in self.buf:
            self._take()

    def _take(self) -> None:
        assert self.want is not None and self.waiter is not None
        i = self.buf.index(self.want) + len(self.want)
        del self.buf[:i]
        self.want = None
        if not self.waiter.done():
            self.waiter.set_result(None)

    async def expect(self, want: bytes) -> None:
        """Wait until the server has sent ``want`` (a prompt): the login dialogue goes at the
        server's pace, not on timers."""
        if self.lost:
            raise ConnectionError("server closed the connection")
        self.want = want
        self.waiter = asyncio.get_running_loop().create_future()
        if want in self.buf:
            self._take()
        await self.waiter

    def send(self, line: str) -> None:
        """Type ``line`` and Enter, in one piece (as a paste would come)."""
        self.scanner.typed(line)
        self.put(line.encode() + self.enter)

    def put(self, data: bytes) -> None:
        """Send raw bytes as this kind of session does (telnet, WebSocket frame, SSH channel)."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection the way this kind of session does."""
        raise NotImplementedError

    def scan(self) -> None:
        """From now on only markers matter; nothing is kept."""
        self.buf = bytearray()
        self.scanning = True


class Client(Session, asyncio.Protocol):
    """A telnet session over TCP or TLS: in line mode it never answers the negotiation (like
    ``nc``); in character mode it answers as netkit telnet does (:class:`kinds.TelnetAnswers`)."""

    def __init__(self, gen: Generator, char_mode: bool = False) -> None:
        super().__init__(gen, echoes=char_mode)
        self.answers = TelnetAnswers() if char_mode else None
        if char_mode:
            self.enter = b"\r\0"
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport: the session writes through it."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        """The server closed: fail whoever waits, so the run reports it instead of hanging."""
        self.lose()

    def data_received(self, data: bytes) -> None:
        """Answer telnet negotiation as a real client does (character mode); the rest is output."""
        if self.answers is not None and b"\xff" in data:
            reply = self.answers.feed(data)
            if reply and self.transport is not None:
                self.transport.write(reply)
        self.output(data)

    def put(self, data: bytes) -> None:
        """Telnet sends bytes as they are."""
        assert self.transport is not None
        self.transport.write(data)

    def close(self) -> None:
        """Close the TCP connection."""
        if self.transport is not None:
            self.transport.close()


class WebClient(Session, asyncio.Protocol):
    """The browser page's protocol (docs/web-protocol.md): the window size first, then
    keystrokes in ``0`` frames; terminal output in text frames."""

    enter = b"\r"

    def __init__(self, gen: Generator, port: int) -> None:
        super().__init__(gen, echoes=True)
        self.port = port
        self.frames = WsReader()
        self.upgraded = False
        self.head = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the WebSocket upgrade, as the browser page does."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(ws_handshake("127.0.0.1", self.port))

    def connection_lost(self, exc: Exception | None) -> None:
        """The server closed: fail whoever waits, so the run reports it instead of hanging."""
        self.lose()

    def data_received(self, data: bytes) -> None:
        """The upgrade's answer first, then frames, whose text is the terminal's output."""
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101"):
                self.lose()
                return
            data, self.head, self.upgraded = self.head[end + 4 :], b"", True
            assert self.transport is not None
            self.transport.write(ws_text(b"180 24"))
        text, replies = self.frames.feed(data)
        if replies and self.transport is not None:
            self.transport.write(replies)
        if text:
            self.output(text)

    def put(self, data: bytes) -> None:
        """Keystrokes go as the page sends them: a text frame, ``0`` then the data."""
        assert self.transport is not None
        self.transport.write(ws_text(b"0" + data))

    def close(self) -> None:
        """Close the TCP connection."""
        if self.transport is not None:
            self.transport.close()


class SSHSession(Session):
    """An SSH session with a pty (asyncssh): one connection, one session channel, 80×24."""

    enter = b"\r"

    def __init__(self, gen: Generator) -> None:
        super().__init__(gen, echoes=True)
        self.conn: Any = None
        self.chan: Any = None

    async def open(self, port: int, name: str) -> None:
        """Log in over SSH with a pty and a shell, as OpenSSH's client would, through asyncssh so
        one generator process holds thousands of them."""
        import asyncssh

        gen = self

        class Channel(asyncssh.SSHClientSession):  # type: ignore[misc]
            def data_received(self, data: bytes, datatype: Any) -> None:
                gen.output(data)

            def connection_lost(self, exc: Exception | None) -> None:
                gen.lose()

        self.conn = await asyncssh.connect(
            "127.0.0.1", port, username=name, password=PASSWORD, known_hosts=None,
            client_keys=None, agent_path=None, preferred_auth="password",
        )  # fmt: skip
        self.chan, _ = await self.conn.create_session(
            Channel, term_type="xterm", term_size=(80, 24), encoding=None
        )

    def put(self, data: bytes) -> None:
        """Keystrokes go into the session channel."""
        self.chan.write(data)

    def close(self) -> None:
        """Close the SSH connection."""
        if self.conn is not None:
            self.conn.close()


class Markers:
    """The markers clients see (``~wN~`` walls, ``~mN~`` writes): walls counted down to their
    last recipient, writes timed from sending to arriving (``bench/cluster.py`` shares it)."""

    def __init__(self) -> None:
        self.wall_left: dict[int, int] = {}
        self.wall_done: dict[int, asyncio.Future[None]] = {}
        self.write_sent: dict[int, float] = {}
        self.write_lat: list[float] = []
        self.window: asyncio.Semaphore | None = None
        self.writes_done: asyncio.Future[None] | None = None
        self.writes_left = 0

    def mark(self, kind: bytes, n: int) -> None:
        """A session saw marker ``n``: count a wall down or time a write, on the generator's loop
        with no locking since everything runs on it."""
        if kind == b"w":
            left = self.wall_left.get(n)
            if left is None:
                return
            left -= 1
            self.wall_left[n] = left
            if left == 0:
                self.wall_done[n].set_result(None)
        else:
            sent = self.write_sent.pop(n, None)
            if sent is None:
                return
            self.write_lat.append(time.perf_counter() - sent)
            assert self.window is not None and self.writes_done is not None
            self.window.release()
            self.writes_left -= 1
            if self.writes_left == 0:
                self.writes_done.set_result(None)

    async def walls(self, boss: Client, recipients: int, count: int) -> list[float]:
        """``count`` walls from ``boss``, one at a time; each one's seconds until its last
        of ``recipients`` has it."""
        lat = []
        for w in range(count):
            done = asyncio.get_running_loop().create_future()
            self.wall_left[w], self.wall_done[w] = recipients, done
            t = time.perf_counter()
            boss.send(f"wall bench broadcast ~w{w}~ the quick brown fox")
            await done
            lat.append(time.perf_counter() - t)
        return lat


class Generator(Markers):
    """The load against one server: logs N sessions in, then runs the phases and measures each
    through the server's /proc entries."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.args = args
        self.proc = Proc(args.pid)
        self.users: list[Session] = []
        self.rotation = mix_rotation(args.mix) if args.mix else []

    # -- sessions ---------------------------------------------------------

    async def login(self, name: str, char_mode: bool = False) -> Client:
        """A telnet session in line mode (or character mode), logged in at its prompt."""
        client = await self.session("char" if char_mode else "line", name)
        assert isinstance(client, Client)
        return client

    async def session(self, kind: str, name: str) -> Session:
        """A session of ``kind`` (:data:`KINDS`) logged in as ``name``, at its prompt."""
        loop = asyncio.get_running_loop()
        a = self.args
        if kind == "ssh":
            ssh = SSHSession(self)
            await ssh.open(a.ssh_port, name)
            await ssh.expect(b":~$ ")
            return ssh
        client: Session
        if kind == "web":
            _, client = await loop.create_connection(
                lambda: WebClient(self, a.web_port), "127.0.0.1", a.web_port
            )
        elif kind == "tls":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            _, client = await loop.create_connection(
                lambda: Client(self, True), "127.0.0.1", a.tls_port, ssl=context
            )
        else:
            _, client = await loop.create_connection(
                lambda: Client(self, kind == "char"), "127.0.0.1", a.port
            )
        await client.expect(b"login: ")
        client.send(name)
        await client.expect(b"Password: ")
        client.send(PASSWORD)
        await client.expect(b":~$ ")
        return client

    def kind_of(self, i: int) -> str:
        """Session ``u{i}``'s kind: ``--kind``, or by ``--mix``'s shares (every tenth session
        in the same rotation, so any N has the shares to within one in ten)."""
        return self.rotation[i % len(self.rotation)] if self.rotation else self.args.kind

    async def login_many(
        self, names: list[str], concurrency: int, mixed: bool = True
    ) -> list[Session]:
        """``names`` logged in, ``concurrency`` at a time: of the run's kinds (``mixed``) or
        telnet in line mode (the storm's)."""
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int, name: str) -> Session:
            async with sem:
                c = await self.session(self.kind_of(i) if mixed else "line", name)
                c.scan()
                return c

        return list(await asyncio.gather(*(one(i, n) for i, n in enumerate(names))))

    # -- phases -----------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Every phase in order, and the figures the bench prints: one server, one N, one run."""
        a, proc, out = self.args, self.proc, {}
        boss = await self.login("boss")
        probe = await self.login("probe")
        boss.scan()
        await asyncio.sleep(0.2)
        rss0 = proc.rss()

        t0, c0 = time.perf_counter(), proc.cpu()
        self.users = await self.login_many([f"u{i}" for i in range(a.n)], a.concurrency)
        dt, dc = time.perf_counter() - t0, proc.cpu() - c0
        out["login_per_s"] = a.n / dt
        out["login_cpu_ms"] = dc / a.n * 1e3
        await asyncio.sleep(a.settle)
        rss1 = proc.rss()
        out["rss_base_mib"] = rss0 / 2**20
        out["rss_per_session_kib"] = (rss1 - rss0) / a.n / 1024
        out["sessions"] = sum(1 for c in self.users if not c.lost)

        # wall: one at a time; every session has it, boss and probe too
        recipients = a.n + 1  # the ones that count markers: the users and boss
        c0, s0 = proc.cpu(), proc.sys_cpu()
        lat = await self.walls(boss, recipients, a.walls)
        dc, ds = proc.cpu() - c0, proc.sys_cpu() - s0
        out["wall_cpu_per_delivery_us"] = dc / (a.walls * (a.n + 2)) * 1e6
        out["wall_sys_per_delivery_us"] = ds / (a.walls * (a.n + 2)) * 1e6
        out["wall_p50_ms"] = _pct(lat, 50) * 1e3
        out["wall_p99_ms"] = _pct(lat, 99) * 1e3

        if a.writes:
            out.update(await self.write_phase())
        if a.storm:
            out.update(await self.storm_phase(probe))
        out["rss_end_mib"] = proc.rss() / 2**20
        out["gen_cpu_s"] = _own_cpu()
        return out

    async def write_phase(self) -> dict[str, float]:
        """``--writes`` writes between random pairs, at most ``--window`` in flight, each timed
        to its arrival: CPU per write and its latency under load."""
        a, n = self.args, len(self.users)
        self.window = asyncio.Semaphore(max(1, min(a.window, n // 2)))
        self.writes_done = asyncio.get_running_loop().create_future()
        self.writes_left = a.writes
        t0, c0, s0 = time.perf_counter(), self.proc.cpu(), self.proc.sys_cpu()
        for k in range(a.writes):
            await self.window.acquire()
            sender = k % n
            target = (k * 7919 + 1) % n
            if target == sender:
                target = (target + 1) % n
            self.write_sent[k] = time.perf_counter()
            self.users[sender].send(f"write u{target} hello from the bench ~m{k}~")
        await self.writes_done
        dt, dc = time.perf_counter() - t0, self.proc.cpu() - c0
        ds = self.proc.sys_cpu() - s0
        return {
            "write_per_s": a.writes / dt,
            "write_cpu_us": dc / a.writes * 1e6,
            "write_sys_us": ds / a.writes * 1e6,
            "write_p50_ms": _pct(self.write_lat, 50) * 1e3,
            "write_p99_ms": _pct(self.write_lat, 99) * 1e3,
        }

    async def storm_phase(self, probe: Client) -> dict[str, float]:
        """The storm logs in from a child process, so the probe's own loop stays idle."""
        a = self.args
        rtts: list[float] = []
        stop = asyncio.Event()

        async def probing() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                probe.send("mesg")
                await probe.expect(b"is y")
                await probe.expect(b":~$ ")
                rtts.append(time.perf_counter() - t)
                await asyncio.sleep(0.005)

        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--storm-child", "--port", str(a.port), "--pid", str(a.pid),
            "--n", "0", "--storm", str(a.storm),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None
        await child.stdout.readline()  # "ready": imported and connected nothing yet
        task = asyncio.create_task(probing())
        await asyncio.sleep(0.3)
        quiet = max(rtts) if rtts else 0.0
        rtts.clear()
        t0, c0 = time.perf_counter(), self.proc.cpu()
        child.stdin.write(b"go\n")
        await child.stdin.drain()
        line = await child.stdout.readline()
        dt, dc = time.perf_counter() - t0, self.proc.cpu() - c0
        stop.set()
        await task
        child.stdin.close()
        if await child.wait() != 0 or not line.startswith(b"done"):
            raise ConnectionError(f"storm child failed: {line!r}")
        return {
            "storm_s": dt,
            "storm_login_per_s": a.storm / dt,
            "storm_login_cpu_ms": dc / a.storm * 1e3,
            "probe_quiet_max_ms": quiet * 1e3,
            "probe_stall_ms": max(rtts) * 1e3 if rtts else float("nan"),
            "probe_samples": len(rtts),
        }

    async def storm_child(self) -> None:
        """In the child: on "go", log in every storm account at once, say "done", then wait."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print("ready", flush=True)
        await reader.readline()
        n = self.args.storm
        clients = await self.login_many([f"s{i}" for i in range(n)], n, mixed=False)
        print("done", flush=True)
        await reader.read()  # the parent closes stdin when the probe has finished
        for c in clients:
            c.close()


#: The session kinds: telnet in line mode (never negotiates, like ``nc``), telnet in character
#: mode (answers like netkit telnet), the same over TLS, SSH with a pty, the browser's WebSocket.
KINDS = ("line", "char", "tls", "ssh", "web")


def mix_rotation(spec: str) -> list[str]:
    """``char:60,ssh:30,web:10`` as a rotation of kinds in the smallest whole shares (here
    6, 3, 1 in ten), interleaved so that any run of sessions has about the same mix."""
    shares: list[tuple[str, int]] = []
    for part in spec.split(","):
        kind, _, share = part.strip().partition(":")
        if kind not in KINDS or not share.isdigit() or int(share) <= 0:
            raise ValueError(f"{part!r} is not KIND:SHARE with KIND one of {', '.join(KINDS)}")
        shares.append((kind, int(share)))
    step = math.gcd(*(n for _, n in shares))
    counts = {kind: n // step for kind, n in shares}
    total = sum(counts.values())
    # the k-th session of a kind goes at (k + 0.5) / count of the rotation: interleaved
    slots = sorted(((k + 0.5) / n, kind) for kind, n in counts.items() for k in range(n))
    assert len(slots) == total
    return [kind for _, kind in slots]


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def _own_cpu() -> float:
    """This process and its finished children (the storm)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def main(argv: list[str] | None = None) -> int:
    """Run the load against a server already listening and print its figures as JSON for
    ``run.py`` to collect."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="the server process, for /proc")
    p.add_argument("--n", type=int, required=True, help="logged-in sessions")
    p.add_argument("--concurrency", type=int, default=64, help="logins in flight")
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--walls", type=int, default=10)
    p.add_argument("--writes", type=int, default=0)
    p.add_argument("--window", type=int, default=200, help="writes in flight")
    p.add_argument("--storm", type=int, default=0, help="logins at once during the probe")
    p.add_argument("--timeout", type=float, default=300.0, help="the whole run, in seconds")
    p.add_argument("--kind", choices=KINDS, default="line", help="what sessions u0... are")
    p.add_argument(
        "--mix", default="", help="sessions u0... of several kinds, e.g. char:60,ssh:30,web:10"
    )
    p.add_argument("--char-mode", action="store_true", help="the same as --kind char")
    p.add_argument("--tls-port", type=int, default=0, help="the server's ssl: telnet listener")
    p.add_argument("--ssh-port", type=int, default=0)
    p.add_argument("--web-port", type=int, default=0)
    p.add_argument("--storm-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.n + args.storm + 64
    if need > hard:
        print(f"loadgen: needs {need} fds, the hard limit is {hard}", file=sys.stderr)
        return 2
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    if args.char_mode:
        args.kind = "char"
    try:
        kinds = set(mix_rotation(args.mix)) if args.mix else {args.kind}
    except ValueError as e:
        print(f"loadgen: --mix: {e}", file=sys.stderr)
        return 2
    for kind, port in (("tls", args.tls_port), ("ssh", args.ssh_port), ("web", args.web_port)):
        if kind in kinds and not port:
            print(f"loadgen: {kind} sessions need --{kind}-port", file=sys.stderr)
            return 2
    if args.storm_child:
        asyncio.run(asyncio.wait_for(Generator(args).storm_child(), args.timeout))
        return 0

    async def bounded() -> dict[str, Any]:
        return await asyncio.wait_for(Generator(args).run(), args.timeout)

    try:
        result = asyncio.run(bounded())
    except (TimeoutError, ConnectionError, OSError) as e:
        print(f"loadgen: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
