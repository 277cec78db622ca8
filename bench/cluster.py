"""Two nodes on Redis against one: server CPU per wall delivery and per write, per node.

One run starts its own ``redis-server`` (loopback, a free port, a temp dir) and
makes one data dir with ``shellserver newusers --hash-cost 4``; then, one after
another on that data dir, it measures N sessions on:

- ``alone``: a server that is not clustered (the reference: docs/performance.md);
- ``1 node``: one clustered node (``--cluster redis://… --node a``), every session on it;
- ``2 nodes``: nodes ``a`` and ``b``, the sessions split half and half (``u0`` on
  ``a``, ``u1`` on ``b``, …), ``boss`` on ``a``.
- ``2 machines``: the same two nodes as two machines would run them: each its own data
  dir, the store in a PostgreSQL server of the bench's own (``bench/postgres.py``; the
  accounts put there with ``shellserver store copy``), the homes in a shared directory
  (``--homes``). Skipped, with a line saying why, where PostgreSQL is not installed.

The generator is this process (asyncio, raw sockets, ``bench/loadgen.py``'s
``Client``), so the nodes' CPU is theirs alone. For each setup: N logins; walls
from ``boss``, one at a time, each done when every session on every node has
it (fan-out latency; CPU per delivery); same-node ``write``s (sender and
recipient on one node; on two nodes half on each); on two nodes, cross-node
``write``s (sender on ``a``, recipient on ``b``). Around each phase it reads
``utime + stime`` of every node and of redis-server from ``/proc/<pid>/stat``
and Redis's ``INFO commandstats`` (commands per delivery).

Per-node figures are the node's CPU over the deliveries it took part in (for
a wall, its own sessions that got it; for a write, those whose sender or
recipient is on it); ``all nodes`` is every node's CPU over every delivery,
so on two nodes it is the cluster's cost per delivery, to read against
``1 node``. Redis's CPU is over every delivery too.

``--profile DIR`` runs py-spy on every node for the whole run; with ``--profile-phase
PHASE`` (``logins``, ``walls``, ``same``, ``cross``) only while that phase runs, so a phase's
profile is not mixed with the others' (files ``SETUP-NODE-PHASE.txt``).

Bounded: a fixed count of everything, ``--timeout`` per setup; every process
it starts is stopped at the end, on failure too (and, on Linux, when this
process dies: they get SIGTERM with their parent). Exit status 0, or 2 when a
run failed. There are no targets to gate on yet.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import loadgen
import postgres
from loadgen import Client, Markers, Proc, _pct
from run import _LISTENING, BIN, PASSWORD, SERVER_OPTIONS, machine

SETUPS = ("alone", "1 node", "2 nodes", "2 machines")
#: What ``--profile-phase`` may name: the whole run, or one phase of it.
PHASES = ("all", "logins", "walls", "same", "cross")

#: ``--profile-phase``'s spies around one phase: given the phase's name.
Phase = Callable[[str], contextlib.AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def _no_spies(_name: str) -> AsyncIterator[None]:
    yield


NODES = ("a", "b")


# -- processes -----------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the bench dies (Linux ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    """SIGTERM and wait; SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """Our own redis-server: loopback, a free port (never 6379), no persistence, a temp dir."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int) -> str:
        """The URL a node's ``--cluster`` takes: a database number per run keeps runs apart."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> Redis:
        """Start a throwaway redis-server without persistence, so no run reads another's state, and
        wait until it answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--databases", "256", "--dir", str(self.workdir),
            "--daemonize", "no", "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited at start ({self.workdir / 'redis.log'})")
            try:
                if self.command("PING").startswith(b"+PONG"):
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer PING in {timeout} s")

    def stop(self) -> None:
        """Stop it, so no redis-server outlives the bench."""
        _stop(self.proc)

    def command(self, line: str) -> bytes:
        """One inline command; the whole reply, raw (a bulk reply read to its end)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(line.encode() + b"\r\n")
            data = s.recv(65536)
            if data.startswith(b"$"):
                head, _, rest = data.partition(b"\r\n")
                want = int(head[1:]) + 2
                while len(rest) < want:
                    more = s.recv(65536)
                    if not more:
                        break
                    rest += more
                return rest[: want - 2]
            return data

    def commandstats(self) -> dict[str, tuple[int, int]]:
        """Command -> (calls, µs) since the start, from ``INFO commandstats``."""
        out: dict[str, tuple[int, int]] = {}
        for line in self.command("INFO commandstats").decode().splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line[len("cmdstat_") :].partition(":")
                fields = dict(kv.split("=", 1) for kv in rest.split(","))
                out[name] = (int(fields["calls"]), int(fields["usec"]))
        return out


class Node:
    """One ``twistd -n shellserver`` on the shared data dir: clustered when ``cluster`` is set."""

    def __init__(
        self,
        name: str,
        data: Path,
        workdir: Path,
        cluster: str | None,
        extra: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.data = data
        self.workdir = workdir
        self.cluster = cluster
        #: More options: a machine's ``--store`` and ``--homes``.
        self.extra = tuple(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        """The node's process, whose CPU the meter reads from /proc."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Node:
        """Start the node as users run it (``twistd -n shellserver``) and wait until it listens."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "server.log"
        clustered = ["--cluster", self.cluster, "--node", self.name] if self.cluster else []
        cmd = [
            str(BIN / "twistd"), "-n", "--pidfile=", "--logfile", str(log), "shellserver",
            "--telnet", "tcp:0:interface=127.0.0.1", "--data", str(self.data),
            "--hostname", "benchhost", *clustered, *SERVER_OPTIONS, *self.extra,
        ]  # fmt: skip
        out = open(self.workdir / "stdout.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.exists():
                m = _LISTENING.search(log.read_text(errors="replace"))
                if m:
                    self.port = int(m.group(1))
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited with {self.proc.returncode} ({log})")
            time.sleep(0.05)
        raise RuntimeError(f"node {self.name} did not start listening in {timeout} s ({log})")

    def stop(self) -> None:
        """Stop the node, so no server outlives the bench, on failure too."""
        _stop(self.proc)


# -- the generator -------------------------------------------------------------------------


class Meter:
    """CPU seconds of each node and of redis-server, Redis's command counts, and the time."""

    def __init__(self, nodes: Sequence[Node], redis: Redis | None) -> None:
        self.nodes = {n.name: Proc(n.pid) for n in nodes}
        self.redis = redis
        self.redis_proc = Proc(redis.proc.pid) if redis and redis.proc else None

    def read(self) -> dict[str, Any]:
        """One snapshot of every counter: phases are measured as the difference of two."""
        snap: dict[str, Any] = {name: p.cpu() for name, p in self.nodes.items()}
        snap["t"] = time.perf_counter()
        if self.redis_proc is not None and self.redis is not None:
            snap["redis"] = self.redis_proc.cpu()
            snap["cmds"] = self.redis.commandstats()
        return snap


class Driver(Markers):
    """Holds the sessions and counts the markers they see (``~wN~`` walls, ``~mN~`` writes)."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__()
        self.args = args

    async def login(self, port: int, name: str) -> Client:
        """One telnet session logged in on ``port``, its markers counted by this driver."""
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(
            lambda: Client(self),  # type: ignore[arg-type]  # duck-typed: mark()
            "127.0.0.1",
            port,
        )
        await client.expect(b"login: ")
        client.send(name)
        await client.expect(b"Password: ")
        client.send(PASSWORD)
        await client.expect(b":~$ ")
        client.scan()
        return client

    async def writes(self, pairs: Callable[[int], tuple[Client, str]], count: int) -> float:
        """``count`` writes, ``--window`` in flight; ``pairs(k)`` is the k-th (sender, target).
        Returns the seconds they took; latencies go to ``write_lat``."""
        self.window = asyncio.Semaphore(self.args.window)
        self.writes_done = asyncio.get_running_loop().create_future()
        self.writes_left = count
        self.write_lat = []
        t0 = time.perf_counter()
        for k in range(count):
            await self.window.acquire()
            sender, target = pairs(k)
            self.write_sent[k] = time.perf_counter()
            sender.send(f"write {target} hello from the bench ~m{k}~")
        await self.writes_done
        return time.perf_counter() - t0


def _split(n: int, nodes: int) -> list[list[int]]:
    """User numbers per node: ``u0`` on the first, ``u1`` on the second, …"""
    return [[i for i in range(n) if i % nodes == k] for k in range(nodes)]


def _pick(users: list[int], k: int) -> tuple[int, int]:
    """The k-th (sender, recipient) among ``users``, spread like loadgen's, never the same."""
    sender = users[k % len(users)]
    target = users[(k * 7919 + 1) % len(users)]
    if target == sender:
        target = users[(users.index(target) + 1) % len(users)]
    return sender, target


def _costs(
    out: dict[str, Any],
    key: str,
    before: dict[str, Any],
    after: dict[str, Any],
    per_node: dict[str, int],
    total: int,
) -> None:
    """Per node: its CPU over the ``per_node`` operations it took part in; ``key`` (all nodes)
    and ``key@redis``: CPU over all ``total``; in µs. Redis's commands per operation."""
    cpu = 0.0
    for name, took_part in per_node.items():
        used = after[name] - before[name]
        cpu += used
        out[f"{key}@{name}"] = used / took_part * 1e6 if took_part else float("nan")
    out[key] = cpu / total * 1e6
    if "redis" in after:
        out[f"{key}@redis"] = (after["redis"] - before["redis"]) / total * 1e6
        for cmd in ("evalsha", "publish"):
            calls = after["cmds"].get(cmd, (0, 0))[0] - before["cmds"].get(cmd, (0, 0))[0]
            out[f"{key}@{cmd}"] = calls / total


async def drive(
    args: argparse.Namespace, nodes: list[Node], redis: Redis | None, phase: Phase = _no_spies
) -> dict[str, Any]:
    """The phases on one setup (logins, walls, same-node and cross-node writes) and what each
    cost every process, so setups compare figure by figure."""
    n, driver = args.sessions, Driver(args)
    meter = Meter(nodes, redis if nodes[0].cluster else None)
    out: dict[str, Any] = {}
    gen0 = loadgen._own_cpu()
    names = [node.name for node in nodes]
    homes = _split(n, len(nodes))
    boss = await driver.login(nodes[0].port, "boss")
    sem = asyncio.Semaphore(args.concurrency)

    async def one(i: int) -> Client:
        async with sem:
            return await driver.login(nodes[i % len(nodes)].port, f"u{i}")

    async with phase("logins"):
        before = meter.read()
        users = list(await asyncio.gather(*(one(i) for i in range(n))))
        after = meter.read()
    out["login_per_s"] = n / (after["t"] - before["t"])
    logins = {nm: len(homes[k]) for k, nm in enumerate(names)}
    _costs(out, "login_cpu_us", before, after, logins, n)
    await asyncio.sleep(args.settle)  # the other node's mirror hears of every login
    out["sessions"] = sum(1 for c in users if not c.lost)

    # walls: every user and boss (who is on the first node) gets each
    walls = max(args.walls, args.deliveries // (n + 1))
    async with phase("walls"):
        before = meter.read()
        lat = await driver.walls(boss, n + 1, walls)
        after = meter.read()
    got = {nm: walls * (len(homes[k]) + (k == 0)) for k, nm in enumerate(names)}
    _costs(out, "wall_cpu_us", before, after, got, walls * (n + 1))
    out["wall_p50_ms"] = _pct(lat, 50) * 1e3
    out["wall_p99_ms"] = _pct(lat, 99) * 1e3

    # same-node writes: on two nodes, alternately on each
    def same(k: int) -> tuple[Client, str]:
        s, t = _pick(homes[k % len(homes)], k // len(homes))
        return users[s], f"u{t}"

    async with phase("same"):
        await _write_phase(out, "same", driver, meter, same, args.writes, names)
    if len(nodes) == 2:

        def cross(k: int) -> tuple[Client, str]:
            a, b = homes
            return users[a[k % len(a)]], f"u{b[(k * 7919 + 1) % len(b)]}"

        async with phase("cross"):
            await _write_phase(out, "cross", driver, meter, cross, args.writes, names)
    out["gen_cpu_s"] = loadgen._own_cpu() - gen0
    for c in [boss, *users]:
        if c.transport is not None:
            c.transport.close()
    return out


async def _write_phase(
    out: dict[str, Any],
    kind: str,
    driver: Driver,
    meter: Meter,
    pairs: Callable[[int], tuple[Client, str]],
    count: int,
    names: list[str],
) -> None:
    before = meter.read()
    dt = await driver.writes(pairs, count)
    after = meter.read()
    if kind == "same":  # each node took part in its share
        took = {nm: count // len(names) + (k < count % len(names)) for k, nm in enumerate(names)}
    else:  # every write had its sender on one and its recipient on the other
        took = dict.fromkeys(names, count)
    _costs(out, f"{kind}_cpu_us", before, after, took, count)
    out[f"{kind}_per_s"] = count / dt
    out[f"{kind}_p50_ms"] = _pct(driver.write_lat, 50) * 1e3
    out[f"{kind}_p99_ms"] = _pct(driver.write_lat, 99) * 1e3


def run_setup(
    setup: str,
    args: argparse.Namespace,
    data: Path,
    tmp: Path,
    redis: Redis,
    db: int,
    store: str | None = None,
) -> dict[str, Any]:
    """One setup from nothing (its nodes, data dirs and store) to its figures, its processes
    stopped whatever happens, so setups cannot leak into each other."""
    cluster = None if setup == "alone" else redis.url(db)
    names = NODES[:2] if setup.startswith("2 ") else NODES[:1]
    work = Path(tempfile.mkdtemp(prefix=setup.replace(" ", "") + "-", dir=tmp))
    if setup == "2 machines":
        assert store is not None
        machine_args = ["--store", store, "--homes", str(tmp / "homes")]
        nodes = [Node(nm, work / f"data-{nm}", work / nm, cluster, machine_args) for nm in names]
    else:
        nodes = [Node(nm, data, work / nm, cluster) for nm in names]
    spies: list[subprocess.Popen[bytes]] = []
    tag = setup.replace(" ", "")

    @contextlib.asynccontextmanager
    async def phase(name: str) -> AsyncIterator[None]:
        """py-spy on every node for the phase ``--profile-phase`` names, and only then."""
        if not args.profile or args.profile_phase != name:
            yield
            return
        procs = [_spy(node.pid, args.profile / f"{tag}-{node.name}-{name}.txt") for node in nodes]
        await asyncio.sleep(1.0)  # py-spy attaches before the phase starts
        try:
            yield
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGINT)  # it writes its file and exits
            for proc in procs:
                proc.wait(30)

    try:
        for node in nodes:  # one after another: a node starts under startup.lock
            node.start()
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        if args.profile and args.profile_phase == "all":
            for node in nodes:
                spies.append(_spy(node.pid, args.profile / f"{tag}-{node.name}.txt"))
        t = time.monotonic()
        result = asyncio.run(asyncio.wait_for(drive(args, nodes, redis, phase), args.timeout))
        result["elapsed_s"] = time.monotonic() - t
    except TimeoutError:
        raise RuntimeError(f"{setup}: not done in {args.timeout:g} s (logs in {work})") from None
    except (ConnectionError, OSError) as e:
        raise RuntimeError(f"{setup}: {type(e).__name__}: {e} (logs in {work})") from None
    finally:
        for node in nodes:
            node.stop()
        for spy in spies:
            spy.wait(30)  # py-spy writes its file when the node exits
    print(f"  {setup:<8} N={args.sessions:<6} {_brief(result)}", file=sys.stderr, flush=True)
    return result


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "py-spy"), "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
         "--nonblocking", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )  # fmt: skip


def _brief(r: dict[str, Any]) -> str:
    cross = f", cross write {r['cross_cpu_us']:.1f}" if "cross_cpu_us" in r else ""
    return (
        f"{r['sessions']} sessions, wall {r['wall_cpu_us']:.2f} µs/delivery, "
        f"same write {r['same_cpu_us']:.1f}{cross} µs, {r['elapsed_s']:.0f} s"
    )


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = sorted(r[key] for r in runs if key in r)
        out[key] = values[len(values) // 2]
    out["runs"] = len(runs)
    return out


# -- the table -----------------------------------------------------------------------------

#: (key, label, format); a key with per-node figures has them as ``key@a``, ``key@b``.
ROWS: list[tuple[str, str, str]] = [
    ("sessions", "sessions held", "{:.0f}"),
    ("login_cpu_us", "CPU per login (µs)", "{:.0f}"),
    ("login_per_s", "login throughput (/s)", "{:.0f}"),
    ("wall_cpu_us", "CPU per wall delivery (µs)", "{:.2f}"),
    ("wall_p50_ms", "wall fan-out p50 (ms)", "{:.1f}"),
    ("wall_p99_ms", "wall fan-out p99 (ms)", "{:.1f}"),
    ("same_cpu_us", "CPU per same-node write (µs)", "{:.1f}"),
    ("same_per_s", "same-node write throughput (/s)", "{:.0f}"),
    ("same_p99_ms", "same-node write latency p99 (ms)", "{:.1f}"),
    ("cross_cpu_us", "CPU per cross-node write a→b (µs)", "{:.1f}"),
    ("cross_per_s", "cross-node write throughput (/s)", "{:.0f}"),
    ("cross_p99_ms", "cross-node write latency p99 (ms)", "{:.1f}"),
    ("gen_cpu_s", "generator CPU, whole setup (s)", "{:.1f}"),
    ("elapsed_s", "run time (s)", "{:.1f}"),
]
_REDIS = ("login_cpu_us", "wall_cpu_us", "same_cpu_us", "cross_cpu_us")


def table(results: dict[str, dict[str, Any]], n: int) -> str:
    """Rows: metrics; columns: each setup, two nodes' per-node figures, and 2 nodes ÷ 1 node."""
    alone, one, two = (results.get(s, {}) for s in SETUPS[:3])
    lines = [
        f"N = {n:,}; medians per figure. Per node: that node's CPU over the operations it took "
        "part in; all nodes: every node's CPU over every operation (a login, a wall delivery, "
        "a write); cross-node rows are divided by 1 node's same-node figure.\n",
        "| metric | alone | 1 node | 2 nodes: a | 2 nodes: b | 2 nodes: all | 2 ÷ 1 node |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(r: dict[str, Any], key: str, fmt: str) -> str:
        v = r.get(key)
        return "" if v is None else fmt.format(v)

    for key, label, fmt in ROWS:
        if not any(key in r for r in (alone, one, two)):
            continue
        ratio = ""
        if key in two and one.get(key):
            ratio = f"{two[key] / one[key]:.2f}×"
        elif key.startswith("cross") and one.get("same" + key[5:]):
            ratio = f"{two[key] / one['same' + key[5:]]:.2f}× same"
        lines.append(
            f"| {label} | {cell(alone, key, fmt)} | {cell(one, key, fmt)} | "
            f"{cell(two, key + '@a', fmt)} | {cell(two, key + '@b', fmt)} | "
            f"{cell(two, key, fmt)} | {ratio} |"
        )
        if key in _REDIS:
            redis_fmt = "{:.2f}" if key != "login_cpu_us" else "{:.0f}"
            r1, r2 = one.get(key + "@redis"), two.get(key + "@redis")
            ratio = f"{r2 / r1:.2f}×" if r1 and r2 is not None else ""
            one_cell, two_cell = (
                cell(one, key + "@redis", redis_fmt),
                cell(two, key + "@redis", redis_fmt),
            )
            lines.append(
                f"| … redis-server CPU per op (µs) |  | {one_cell} |  |  | {two_cell} | {ratio} |"
            )
            lines.append(
                f"| … Redis EVALSHA + PUBLISH per op |  | {_calls(one, key)} |  |  | "
                f"{_calls(two, key)} |  |"
            )
    return "\n".join(lines)


def _postgres_store(
    chosen: list[str], data: Path, tmp: Path, stack: contextlib.ExitStack
) -> str | None:
    """For ``2 machines``: a PostgreSQL server of our own with the accounts copied into it
    (``store copy``); None, said on stderr, where PostgreSQL is not installed."""
    if "2 machines" not in chosen:
        return None
    try:
        server = postgres.Postgres()
        stack.callback(server.stop)
        server.start()
    except RuntimeError as e:
        print(f"cluster bench: 2 machines skipped: {e}", file=sys.stderr)
        return None
    url = server.url()
    subprocess.run(
        [str(BIN / "shellserver"), "--data", str(data), "store", "copy", "--to", url],
        check=True,
        capture_output=True,
    )
    return url


def machines_table(results: dict[str, dict[str, Any]], n: int) -> str:
    """One machine on SQLite (``alone``) against two machines on PostgreSQL, per node."""
    alone, two = results.get("alone", {}), results["2 machines"]
    lines = [
        f"N = {n:,}; two machines: each node its own data dir, the store in PostgreSQL, the "
        "homes shared; against one server alone on SQLite.\n",
        "| metric | alone (SQLite) | 2 machines: a | 2 machines: b | 2 machines: all | "
        "all ÷ alone |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label, fmt in ROWS:
        if key not in two:
            continue

        def cell(r: dict[str, Any], k: str, fmt: str = fmt) -> str:
            v = r.get(k)
            return "" if v is None else fmt.format(v)

        ratio = f"{two[key] / alone[key]:.2f}×" if alone.get(key) else ""
        lines.append(
            f"| {label} | {cell(alone, key)} | {cell(two, key + '@a')} | "
            f"{cell(two, key + '@b')} | {cell(two, key)} | {ratio} |"
        )
    return "\n".join(lines)


def _calls(r: dict[str, Any], key: str) -> str:
    if key + "@evalsha" not in r:
        return ""
    return f"{r[key + '@evalsha']:.3f} + {r[key + '@publish']:.3f}"


def main(argv: list[str] | None = None) -> int:
    """Every setup, ``--repeat`` times, alternating, and the table of medians: alternating keeps
    a busy machine's drift from favouring one setup."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=1000, help="N, split half/half on two nodes")
    p.add_argument("--walls", type=int, default=20, help="at least this many walls")
    p.add_argument("--deliveries", type=int, default=100_000, help="and this many deliveries")
    p.add_argument("--writes", type=int, default=20000, help="per write phase")
    p.add_argument("--window", type=int, default=200, help="writes in flight")
    p.add_argument("--concurrency", type=int, default=64, help="logins in flight")
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=300.0, help="per setup, in seconds")
    p.add_argument("--repeat", type=int, default=1, help="runs of the three setups; medians")
    p.add_argument("--json", type=Path, help="write every result here")
    p.add_argument("--setups", default=",".join(SETUPS), help="which, comma separated")
    p.add_argument("--profile", type=Path, help="py-spy every node into this directory (raw)")
    p.add_argument(
        "--profile-phase",
        choices=PHASES,
        default="all",
        help="with --profile: only during this phase (files SETUP-NODE-PHASE.txt)",
    )
    args = p.parse_args(argv)
    if args.sessions < 4:
        p.error("--sessions must be at least 4 (two per node)")
    chosen = [s for s in args.setups.split(",") if s]
    if not chosen or set(chosen) - set(SETUPS):
        p.error(f"--setups: some of {', '.join(SETUPS)}")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.sessions + 64 > hard:
        print(
            f"cluster: needs {args.sessions + 64} fds, the hard limit is {hard}", file=sys.stderr
        )
        return 2
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # A SIGTERM (a timeout around us) stops our servers on the way out, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(2))
    print(f"machine: {machine()}", file=sys.stderr, flush=True)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SETUPS}
    try:
        with tempfile.TemporaryDirectory(prefix="shellserver-cluster-bench-") as tmp:
            redis = Redis(Path(tmp) / "redis")
            stack = contextlib.ExitStack()
            try:
                redis.start()
                data = Path(tmp) / "data"
                names = ["boss", *(f"u{i}" for i in range(args.sessions))]
                lines = "".join(
                    f"{nm}:{PASSWORD}{':admin' if nm == 'boss' else ''}\n" for nm in names
                )
                subprocess.run(
                    [
                        str(BIN / "shellserver"),
                        "--data",
                        str(data),
                        "newusers",
                        "--hash-cost",
                        "4",
                    ],
                    input=lines.encode(),
                    check=True,
                    capture_output=True,
                )
                store = _postgres_store(chosen, data, Path(tmp), stack)
                for r in range(args.repeat):
                    for db, setup in enumerate(SETUPS):  # a fresh Redis db for each run
                        if setup not in chosen or (setup == "2 machines" and store is None):
                            continue
                        runs[setup].append(
                            run_setup(
                                setup, args, data, Path(tmp), redis, r * len(SETUPS) + db, store
                            )
                        )
            finally:
                stack.close()
                redis.stop()
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        print(f"cluster bench: {e}", file=sys.stderr)
        return 2
    results = {s: _median(rs) for s, rs in runs.items() if rs}
    print(f"machine: {machine()}\n")
    print(table(results, args.sessions))
    if "2 machines" in results:
        print()
        print(machines_table(results, args.sessions))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": machine(), "sessions": args.sessions, "results": results}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
