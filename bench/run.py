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
SERVERS = ("cfloor", "floor", "shellserver")
_FLOOR = re.compile(r"floor listening on port (\d+)")
#: shellserver's first telnet listener (bench/cluster.py reads it too).
_LISTENING = re.compile(r"telnet listening on .*port=(\d+)")
#: The session kinds shellserver is measured with (``loadgen.KINDS``); the floors speak line
#: mode only. A run of another kind than line mode is listed as ``shellserver-KIND``.
KINDS = ("line", "char", "tls", "ssh", "web")
MIXED = "mixed"

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
        #: Every listener's ports by what it is (telnet, tls, ssh, web), for shellserver.
        self.ports: dict[str, list[int]] = {}

    def start(self, timeout: float = 30.0, kinds: frozenset[str] = frozenset()) -> Server:
        """Started and listening; for shellserver, with the listeners ``kinds`` need too."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "server.log"
        wanted = {"telnet": 1}
        if self.kind == "floor":
            cmd = [sys.executable, str(HERE / "floor.py")]
        elif self.kind == "cfloor":
            cmd = [str(cfloor_binary())]
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
            if "tls" in kinds:
                key, cert = self_signed(self.workdir)
                cmd += ["--telnet", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"]
                wanted["telnet"] = 2
            if "ssh" in kinds:
                cmd += ["--ssh", "tcp:0:interface=127.0.0.1"]
                wanted["ssh"] = 1
            if "web" in kinds:
                cmd += ["--web", "tcp:0:interface=127.0.0.1"]
                wanted["web"] = 1
        out = open(self.workdir / "stdout.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        source = self.workdir / ("server.log" if self.kind == "shellserver" else "stdout.log")
        while time.monotonic() < deadline:
            if source.exists():
                text = source.read_text(errors="replace")
                if self.kind != "shellserver":
                    m = _FLOOR.search(text)
                    if m:
                        self.port = int(m.group(1))
                        return self
                else:
                    found = {
                        what: [
                            int(p) for p in re.findall(rf"{what} listening on .*port=(\d+)", text)
                        ]
                        for what in wanted
                    }
                    if all(len(found[w]) >= k for w, k in wanted.items()):
                        self.port = found["telnet"][0]
                        self.ports = {"tls": found["telnet"][1:2], **found}
                        return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.kind} did not start listening in {timeout} s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL), so no process outlives the bench, on failure
        too."""
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


def cfloor_binary() -> Path:
    """The C floor, built with the system compiler when it is missing or older than its source
    (``make bench`` builds it first; this keeps ``run.py`` usable by hand)."""
    source, binary = HERE / "cfloor.c", BIN / "shellserver-cfloor"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway key and certificate for the ``ssl:`` telnet listener (the generator does not
    verify it: the bench measures the cost of TLS, not trust)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "benchhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def entry_name(server: str, kind: str) -> str:
    """How a run is listed: the server, and the session kind when it is not line mode."""
    return server if kind == "line" else f"{server}-{kind}"


def run_one(
    kind: str, n: int, full: bool, args: argparse.Namespace, tmp: Path, session: str = "line"
) -> dict[str, Any]:
    """One server of ``kind`` started fresh, N sessions of ``session`` (a kind, or ``mixed``)
    driven by the generator, the server stopped. The storm runs in line mode only."""
    storm = args.storm if full and session == "line" else 0
    names = ["boss", "probe", *(f"u{i}" for i in range(n)), *(f"s{i}" for i in range(storm))]
    mix = args.mix if session == MIXED else ""
    kinds = frozenset(k.partition(":")[0] for k in mix.split(",")) if mix else {session}
    name = entry_name(kind, session)
    server = Server(kind, Path(tempfile.mkdtemp(prefix=f"{name}-{n}-", dir=tmp)), names)
    server.start(kinds=frozenset(kinds))
    assert server.proc is not None
    walls = max(args.walls, args.deliveries // n)
    gen = [
        sys.executable, str(HERE / "loadgen.py"), "--port", str(server.port),
        "--pid", str(server.proc.pid), "--n", str(n), "--walls", str(walls),
        "--writes", str(args.writes if full else 0), "--storm", str(storm),
        "--settle", str(args.settle), "--timeout", str(args.timeout),
    ]  # fmt: skip
    gen += ["--mix", mix] if mix else ["--kind", session]
    for what in ("tls", "ssh", "web"):
        if server.ports.get(what):
            gen += [f"--{what}-port", str(server.ports[what][0])]
    spy = None
    if args.profile and kind == "shellserver":
        args.profile.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(server.proc.pid), "--format", "raw",
             "--rate", "200", "--nonblocking", "-o", str(args.profile / f"{name}-{n}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        t = time.monotonic()
        done = subprocess.run(gen, capture_output=True, text=True, timeout=args.timeout + 30)
        if done.returncode != 0:
            raise RuntimeError(f"loadgen against {name} at N={n}: {done.stderr.strip()}")
        result: dict[str, Any] = json.loads(done.stdout)
        result["elapsed_s"] = time.monotonic() - t
    finally:
        server.stop()
        if spy is not None:
            spy.wait(30)  # py-spy writes its file when the server exits
    print(f"  {name:<18} N={n:<6} {_brief(result)}", file=sys.stderr, flush=True)
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

#: (key, label, format, target ratios to the floors, absolute target or None)
ROWS: list[tuple[str, str, str, dict[str, float], tuple[str, float] | None]] = [
    ("sessions", "sessions held", "{:.0f}", {}, None),
    ("wall_cpu_per_delivery_us", "CPU per wall delivery (µs)", "{:.2f}",
     {"cfloor": 1.5, "floor": 1.1}, None),
    ("write_cpu_us", "CPU per write (µs)", "{:.1f}", {"cfloor": 2.5, "floor": 1.3}, None),
    # The kernel's share of the two above (stime): the sockets, the same work for all servers.
    ("wall_sys_per_delivery_us", "of which kernel, per wall delivery (µs)", "{:.2f}", {}, None),
    ("write_sys_us", "of which kernel, per write (µs)", "{:.1f}", {}, None),
    ("wall_p50_ms", "wall fan-out p50 (ms)", "{:.1f}", {}, None),
    ("wall_p99_ms", "wall fan-out p99 (ms)", "{:.1f}", {}, None),
    ("write_per_s", "write throughput (/s)", "{:.0f}", {}, None),
    ("write_p99_ms", "write latency p99 (ms)", "{:.1f}", {}, None),
    ("rss_per_session_kib", "RSS per session (KiB)", "{:.2f}", {}, ("<=", 6.0)),
    ("login_cpu_ms", "login CPU (ms)", "{:.3f}", {}, ("<=", 0.4)),
    ("login_per_s", "login throughput (/s)", "{:.0f}", {}, None),
    ("storm_s", "storm of logins (s)", "{:.2f}", {}, None),
    ("probe_stall_ms", "longest probe stall (ms)", "{:.1f}", {}, ("<=", 50.0)),
    # The generator's own CPU over the whole run: it shares the machine, so read it with the rest.
    ("gen_cpu_s", "generator CPU, whole run (s)", "{:.1f}", {}, None),
    ("elapsed_s", "run time (s)", "{:.1f}", {}, None),
]  # fmt: skip

#: Per session kind: (CPU per wall delivery at most this many times line mode's, RSS per
#: session at most this many KiB); None where the kind is only reported.
KIND_TARGETS: dict[str, tuple[float | None, float | None]] = {
    "char": (1.3, 6.0),
    "ssh": (None, 16.0),
    "web": (None, 16.0),
}


def _ratio(a: float, b: float | None) -> float:
    return a / b if b else math.nan


def table(results: dict[str, dict[int, dict[str, Any]]], sizes: list[int]) -> tuple[str, bool]:
    """Line mode against the floors: every metric, its ratios and targets."""
    lines = [
        "| metric | N | C floor | floor | shellserver | × C | × floor | target | met |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    ok = True
    for n in sizes:
        s = results.get("shellserver", {}).get(n)
        if s is None:
            continue
        c, f = results.get("cfloor", {}).get(n, {}), results.get("floor", {}).get(n, {})
        for key, label, fmt, ratio_targets, absolute in ROWS:
            if key not in s:
                continue
            sv = s[key]
            cv, fv = c.get(key, math.nan), f.get(key, math.nan)
            targets, good = [], True
            for ref, limit in ratio_targets.items():
                ref_v = (c if ref == "cfloor" else f).get(key)
                if ref_v is None:
                    continue
                targets.append(f"≤ {limit}× {'C' if ref == 'cfloor' else 'floor'}")
                good = good and _ratio(sv, ref_v) <= limit
            if absolute is not None:
                targets.append(f"≤ {absolute[1]:g}")
                good = good and sv <= absolute[1]
            if key == "sessions":
                targets.append(f"= {n}")
                good = sv == n
            met = ("yes" if good else "**no**") if targets else ""
            ok = ok and good
            lines.append(
                f"| {label} | {n:,} | {fmt.format(cv)} | {fmt.format(fv)} | {fmt.format(sv)} | "
                f"{_ratio(sv, c.get(key)):.2f}× | {_ratio(sv, f.get(key)):.2f}× | "
                f"{', '.join(targets)} | {met} |"
            )
    return "\n".join(lines), ok


def kind_table(
    results: dict[str, dict[int, dict[str, Any]]], sizes: list[int], kinds: list[str]
) -> tuple[str, bool]:
    """shellserver per session kind, against its own line mode and the C floor."""
    lines = [
        "| kind | N | sessions | CPU per wall delivery (µs) | × line | × C | CPU per write (µs) "
        "| × C | RSS per session (KiB) | login CPU (ms) | targets | met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    ok = True
    for n in sizes:
        line = results.get("shellserver", {}).get(n, {})
        c = results.get("cfloor", {}).get(n, {})
        for kind in kinds:
            r = results.get(entry_name("shellserver", kind), {}).get(n)
            if r is None:
                continue
            wall, write = r["wall_cpu_per_delivery_us"], r.get("write_cpu_us", math.nan)
            wall_x = _ratio(wall, line.get("wall_cpu_per_delivery_us"))
            targets, good = [], r["sessions"] == n
            max_x, max_rss = KIND_TARGETS.get(kind, (None, None))
            if max_x is not None:
                targets.append(f"wall ≤ {max_x}× line")
                good = good and wall_x <= max_x
            if max_rss is not None:
                targets.append(f"RSS ≤ {max_rss:g}")
                good = good and r["rss_per_session_kib"] <= max_rss
            ok = ok and good
            lines.append(
                f"| {kind} | {n:,} | {r['sessions']:.0f} | {wall:.2f} | {wall_x:.2f}× | "
                f"{_ratio(wall, c.get('wall_cpu_per_delivery_us')):.2f}× | {write:.1f} | "
                f"{_ratio(write, c.get('write_cpu_us')):.2f}× | "
                f"{r['rss_per_session_kib']:.2f} | {r['login_cpu_ms']:.3f} | "
                f"{', '.join(targets)} | {'yes' if good else '**no**'} |"
            )
    return "\n".join(lines), ok


def machine() -> str:
    """The machine the figures come from (CPU, cores, memory, kernel, Python, Twisted), printed
    with them: figures mean nothing without it."""
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
    """CPU per wall delivery and RSS per session against N for each server, so how each grows
    shows at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind, style in (("cfloor", "^:"), ("floor", "s--"), ("shellserver", "o-")):
        ns = sorted(results.get(kind, {}))
        if not ns:
            continue
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


def plot_kinds(results: dict[str, dict[int, dict[str, Any]]], path: Path) -> None:
    """CPU per wall delivery, per write and RSS per session against N for every session kind
    measured, with both floors: the per-kind figure of docs/performance.md."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (
        ("wall_cpu_per_delivery_us", "server CPU per wall delivery", "µs"),
        ("write_cpu_us", "server CPU per write", "µs"),
        ("rss_per_session_kib", "RSS per logged-in session", "KiB"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    names = ["cfloor", "floor", "shellserver"]
    names += [entry_name("shellserver", k) for k in (*KINDS[1:], MIXED)]
    for name in names:
        runs = results.get(name, {})
        for ax, (key, _, _) in zip(axes, keys, strict=True):
            ns = sorted(n for n in runs if key in runs[n])
            if ns:
                label = {"cfloor": "C floor", "shellserver": "shellserver-line"}.get(name, name)
                style = "^:" if name == "cfloor" else "s--" if name == "floor" else "o-"
                ax.plot(ns, [runs[n][key] for n in ns], style, label=label)
    for ax, (_, title, unit) in zip(axes, keys, strict=True):
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_xscale("log")
        ax.set_xlabel("logged-in sessions (N)")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    axes[2].legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def _kinds_plot_path(path: Path) -> Path:
    return path.with_name(path.stem + "-kinds" + path.suffix)


def main(argv: list[str] | None = None) -> int:
    """Every server at every N, alternating, then the tables, the JSON and the plot; exit 1
    when a target is missed, so the bench can gate a change."""
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
        "--kinds",
        default="line",
        help="shellserver's session kinds at the full sizes, comma separated: " + ", ".join(KINDS),
    )
    p.add_argument(
        "--mix",
        default="",
        help="one more shellserver run at the full sizes with sessions of several kinds, "
        "e.g. char:60,ssh:30,web:10",
    )
    p.add_argument("--char-mode", action="store_true", help="the same as --kinds line,char")
    p.add_argument("--json", type=Path, help="write every result here")
    p.add_argument("--plot", type=Path, help="write the PNG here (needs matplotlib)")
    p.add_argument("--profile", type=Path, help="py-spy shellserver into this directory (raw)")
    p.add_argument("--no-gate", action="store_true", help="exit 0 even when a target is missed")
    p.add_argument(
        "--replot", type=Path, help="only draw the per-kind plot (--plot) from this --json file"
    )
    args = p.parse_args(argv)
    if args.replot:
        saved = json.loads(args.replot.read_text())["results"]
        loaded = {name: {int(n): r for n, r in runs.items()} for name, runs in saved.items()}
        plot_kinds(loaded, args.plot or Path("bench-kinds.png"))
        return 0
    kinds = [k for k in args.kinds.split(",") if k]
    if args.char_mode and "char" not in kinds:
        kinds.append("char")
    if any(k not in KINDS for k in kinds):
        p.error(f"--kinds: each one of {', '.join(KINDS)}")
    sessions = [k for k in kinds if k != "line"] + ([MIXED] if args.mix else [])
    sizes = [int(x) for x in args.sizes.split(",") if x]
    sweep = [int(x) for x in args.sweep.split(",") if x]
    servers = [s for s in args.servers.split(",") if s]
    results: dict[str, dict[int, dict[str, Any]]] = {}
    print(f"machine: {machine()}", file=sys.stderr, flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="shellserver-bench-") as tmp:
            for n in sorted({*sizes, *sweep}):
                full = n in sizes
                plan = [(kind, "line") for kind in servers]
                if full and "shellserver" in servers:
                    plan += [("shellserver", k) for k in sessions]
                runs: dict[str, list[dict[str, Any]]] = {}
                for _ in range(args.repeat):  # alternating, so all see the same machine
                    for kind, session in plan:
                        runs.setdefault(entry_name(kind, session), []).append(
                            run_one(kind, n, full, args, Path(tmp), session)
                        )
                for name, done in runs.items():
                    results.setdefault(name, {})[n] = _median(done)
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    text, ok = table(results, sizes)
    print(f"machine: {machine()}\n")
    print(text)
    if sessions:
        per_kind, kinds_ok = kind_table(results, sizes, ["line", *sessions])
        print(f"\nshellserver per session kind{f' (mixed: {args.mix})' if args.mix else ''}:\n")
        print(per_kind)
        ok = ok and kinds_ok
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=1))
    if args.plot:
        plot(results, args.plot)
        print(f"\nplot: {args.plot}")
        if sessions:
            plot_kinds(results, _kinds_plot_path(args.plot))
            print(f"plot: {_kinds_plot_path(args.plot)}")
    if not ok:
        print("\nsome targets were missed", file=sys.stderr)
    return 0 if ok or args.no_gate else 1


if __name__ == "__main__":
    sys.exit(main())
