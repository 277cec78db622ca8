"""Run the load generator against the floor and shellserver, print the table, check targets.

For each N, each server is started fresh on loopback (shellserver as users
start it: ``twistd -n shellserver`` in a temp data dir whose accounts were
made with ``shellserver newusers --hash-cost 4``, and run at that cost so
that no login rehashes), driven by ``bench/loadgen.py`` (its own
process), and stopped. Full sizes (``--sizes``) run every phase; sweep sizes
(``--sweep``) only login, RSS and wall, for the plot.

Exit status: 0 when every target is met, 1 when one is missed (so a run can
gate a change), 2 when a run failed.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PASSWORD = "benchpass1"
SERVERS = ("floor", "shellserver")
_LISTENING = re.compile(r"telnet listening on .*port=(\d+)")
_FLOOR = re.compile(r"floor listening on port (\d+)")

#: The server options of a bench run: every session comes from 127.0.0.1, so
#: the per-address and unauthenticated-connection limits are off, and the
#: command token bucket is off so the write phase measures cost, not pacing.
SERVER_OPTIONS = (
    "--max-unauth", "0", "--max-unauth-per-addr", "0", "--cmd-rate", "0",
    "--idle-timeout", "0", "--max-sessions", "0", "--max-registrations", "0",
    # The accounts' own cost: a login rehashes a password made at another cost
    # (issue 14), which at the default would be one scrypt-14 per account.
    "--hash-cost", "4",
)  # fmt: skip


class Server:
    """One server process on loopback, stopped by :meth:`stop` (SIGTERM, then SIGKILL)."""

    def __init__(self, kind: str, workdir: Path, accounts: list[str]) -> None:
        self.kind = kind
        self.workdir = workdir
        self.accounts = accounts
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 30.0) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "server.log"
        if self.kind == "floor":
            cmd = [sys.executable, str(HERE / "floor.py")]
            pattern = _FLOOR
        else:
            data = self.workdir / "data"
            lines = "".join(f"{name}:{PASSWORD}{role}\n" for name, role in _roles(self.accounts))
            subprocess.run(
                [str(BIN / "shellserver"), "--data", str(data), "newusers", "--hash-cost", "4"],
                input=lines.encode(),
                check=True,
                capture_output=True,
            )
            cmd = [
                str(BIN / "twistd"), "-n", "--pidfile=", "--logfile", str(log), "shellserver",
                "--telnet", "tcp:0:interface=127.0.0.1", "--data", str(data),
                "--hostname", "benchhost", *SERVER_OPTIONS,
            ]  # fmt: skip
            pattern = _LISTENING
        out = open(self.workdir / "stdout.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        source = self.workdir / ("stdout.log" if self.kind == "floor" else "server.log")
        while time.monotonic() < deadline:
            if source.exists():
                m = pattern.search(source.read_text(errors="replace"))
                if m:
                    self.port = int(m.group(1))
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.kind} did not start listening in {timeout} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _roles(names: list[str]) -> list[tuple[str, str]]:
    return [(n, ":admin" if n == "boss" else "") for n in names]


def run_one(kind: str, n: int, full: bool, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    storm = args.storm if full else 0
    names = ["boss", "probe", *(f"u{i}" for i in range(n)), *(f"s{i}" for i in range(storm))]
    server = Server(kind, Path(tempfile.mkdtemp(prefix=f"{kind}-{n}-", dir=tmp)), names).start()
    assert server.proc is not None
    walls = max(args.walls, args.deliveries // n)
    gen = [
        sys.executable, str(HERE / "loadgen.py"), "--port", str(server.port),
        "--pid", str(server.proc.pid), "--n", str(n), "--walls", str(walls),
        "--writes", str(args.writes if full else 0), "--storm", str(storm),
        "--settle", str(args.settle), "--timeout", str(args.timeout),
        *(["--char-mode"] if args.char_mode and kind == "shellserver" else []),
    ]  # fmt: skip
    spy = None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(server.proc.pid), "--format", "raw",
             "--rate", "200", "--nonblocking", "-o", str(args.profile / f"{kind}-{n}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        t = time.monotonic()
        done = subprocess.run(gen, capture_output=True, text=True, timeout=args.timeout + 30)
        if done.returncode != 0:
            raise RuntimeError(f"loadgen against {kind} at N={n}: {done.stderr.strip()}")
        result: dict[str, Any] = json.loads(done.stdout)
        result["elapsed_s"] = time.monotonic() - t
    finally:
        server.stop()
        if spy is not None:
            spy.wait(30)  # py-spy writes its file when the server exits
    print(f"  {kind:<11} N={n:<6} {_brief(result)}", file=sys.stderr, flush=True)
    return result


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric, the median of repeated runs (a shared machine is noisy)."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = sorted(r[key] for r in runs)
        out[key] = values[len(values) // 2]
    out["runs"] = len(runs)
    return out


def _brief(r: dict[str, Any]) -> str:
    return (
        f"{r['sessions']} sessions, login {r['login_cpu_ms']:.2f} ms CPU, "
        f"wall {r['wall_cpu_per_delivery_us']:.1f} µs/delivery, "
        f"RSS {r['rss_per_session_kib']:.1f} KiB/session, {r['elapsed_s']:.0f} s"
    )


# -- the table ---------------------------------------------------------------

#: (key, label, format, target ratio to the floor or None, absolute target or None)
ROWS: list[tuple[str, str, str, float | None, tuple[str, float] | None]] = [
    ("sessions", "sessions held", "{:.0f}", None, None),
    ("wall_cpu_per_delivery_us", "CPU per wall delivery (µs)", "{:.2f}", 1.1, None),
    ("write_cpu_us", "CPU per write (µs)", "{:.1f}", 1.3, None),
    # The kernel's share of the two above (stime): the sockets, the same work for both servers.
    ("wall_sys_per_delivery_us", "of which kernel, per wall delivery (µs)", "{:.2f}", None, None),
    ("write_sys_us", "of which kernel, per write (µs)", "{:.1f}", None, None),
    ("wall_p50_ms", "wall fan-out p50 (ms)", "{:.1f}", None, None),
    ("wall_p99_ms", "wall fan-out p99 (ms)", "{:.1f}", None, None),
    ("write_per_s", "write throughput (/s)", "{:.0f}", None, None),
    ("write_p99_ms", "write latency p99 (ms)", "{:.1f}", None, None),
    ("rss_per_session_kib", "RSS per session (KiB)", "{:.2f}", None, ("<=", 6.0)),
    ("login_cpu_ms", "login CPU (ms)", "{:.3f}", None, ("<=", 0.4)),
    ("login_per_s", "login throughput (/s)", "{:.0f}", None, None),
    ("storm_s", "storm of logins (s)", "{:.2f}", None, None),
    ("probe_stall_ms", "longest probe stall (ms)", "{:.1f}", None, ("<=", 50.0)),
    # The generator's own CPU over the whole run: it shares the machine, so read it with the rest.
    ("gen_cpu_s", "generator CPU, whole run (s)", "{:.1f}", None, None),
    ("elapsed_s", "run time (s)", "{:.1f}", None, None),
]


def table(results: dict[str, dict[int, dict[str, Any]]], sizes: list[int]) -> tuple[str, bool]:
    lines = [
        "| metric | N | floor | shellserver | ratio | target | met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    ok = True
    for n in sizes:
        f, s = results["floor"].get(n), results["shellserver"].get(n)
        if f is None or s is None:
            continue
        for key, label, fmt, ratio_target, absolute in ROWS:
            if key not in s:
                continue
            fv, sv = f.get(key, math.nan), s[key]
            ratio = sv / fv if fv else math.nan
            target, met = "", ""
            if ratio_target is not None:
                target = f"≤ {ratio_target}× floor"
                good = ratio <= ratio_target
            elif absolute is not None:
                target = f"≤ {absolute[1]:g}"
                good = sv <= absolute[1]
            elif key == "sessions":
                target = f"= {n}"
                good = sv == n
            else:
                good = True
            if target:
                met = "yes" if good else "**no**"
                ok = ok and good
            lines.append(
                f"| {label} | {n:,} | {fmt.format(fv)} | {fmt.format(sv)} | "
                f"{ratio:.2f}× | {target} | {met} |"
            )
    return "\n".join(lines), ok


def machine() -> str:
    import os

    import twisted

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}, Twisted {twisted.__version__}"
    )


def plot(results: dict[str, dict[int, dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind, style in (("floor", "s--"), ("shellserver", "o-")):
        ns = sorted(results[kind])
        for ax, key in zip(axes, ("wall_cpu_per_delivery_us", "rss_per_session_kib"), strict=True):
            ax.plot(ns, [results[kind][n][key] for n in ns], style, label=kind)
    axes[0].set_title("server CPU per wall delivery")
    axes[0].set_ylabel("µs")
    axes[1].set_title("RSS per logged-in session (line mode)")
    axes[1].set_ylabel("KiB")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("logged-in sessions (N)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000", help="N for full runs, comma separated")
    p.add_argument("--sweep", default="", help="more N for the plot (login, RSS, wall only)")
    p.add_argument("--walls", type=int, default=20, help="at least this many walls")
    p.add_argument(
        "--deliveries", type=int, default=100_000, help="and at least this many deliveries"
    )
    p.add_argument("--writes", type=int, default=20000)
    p.add_argument("--storm", type=int, default=1000)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=300.0, help="per loadgen run, in seconds")
    p.add_argument("--repeat", type=int, default=1, help="runs per N and server; medians")
    p.add_argument("--servers", default=",".join(SERVERS))
    p.add_argument(
        "--char-mode",
        action="store_true",
        help="shellserver's sessions in character mode (login, RSS and wall only)",
    )
    p.add_argument("--json", type=Path, help="write every result here")
    p.add_argument("--plot", type=Path, help="write the PNG here (needs matplotlib)")
    p.add_argument("--profile", type=Path, help="py-spy shellserver into this directory (raw)")
    p.add_argument("--no-gate", action="store_true", help="exit 0 even when a target is missed")
    args = p.parse_args(argv)
    if args.char_mode:
        args.writes = args.storm = 0
    sizes = [int(x) for x in args.sizes.split(",") if x]
    sweep = [int(x) for x in args.sweep.split(",") if x]
    servers = [s for s in args.servers.split(",") if s]
    results: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in SERVERS}
    print(f"machine: {machine()}", file=sys.stderr, flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="shellserver-bench-") as tmp:
            for n in sorted({*sizes, *sweep}):
                runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in servers}
                for _ in range(args.repeat):  # alternating, so both see the same machine
                    for kind in servers:
                        runs[kind].append(run_one(kind, n, n in sizes, args, Path(tmp)))
                for kind in servers:
                    results[kind][n] = _median(runs[kind])
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    text, ok = table(results, sizes)
    print(f"machine: {machine()}\n")
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    if args.plot:
        plot(results, args.plot)
        print(f"\nplot: {args.plot}")
    if not ok:
        print("\nsome targets were missed", file=sys.stderr)
    return 0 if ok or args.no_gate else 1


if __name__ == "__main__":
    sys.exit(main())
