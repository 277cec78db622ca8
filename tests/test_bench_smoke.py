"""The load bench runs end to end (N = 200) and measures something; no number is judged here.

Speed and memory targets are checked by ``make bench``, never by a timed test.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.integration
def test_bench_smoke_run_produces_numbers(tmp_path: Path) -> None:
    if shutil.which("cc") is None:
        pytest.skip("cc (the system C compiler) is missing: the bench builds its C floor with it")
    out = tmp_path / "run.json"
    cmd = [
        sys.executable, str(ROOT / "bench" / "run.py"), "--sizes", "200", "--walls", "3",
        "--deliveries", "0", "--writes", "300", "--storm", "50", "--settle", "0.1",
        "--timeout", "40", "--no-gate", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    assert "| CPU per wall delivery (µs) | 200 |" in done.stdout
    results = json.loads(out.read_text())["results"]
    for kind in ("cfloor", "floor", "shellserver"):
        run = results[kind]["200"]
        assert run["sessions"] == 200
        for key in (
            "wall_cpu_per_delivery_us", "write_cpu_us", "wall_p99_ms", "write_per_s",
            "rss_per_session_kib", "login_cpu_ms", "login_per_s", "probe_stall_ms",
        ):  # fmt: skip
            assert math.isfinite(run[key]), (kind, key, run[key])


@pytest.mark.integration
def test_bench_smoke_every_session_kind_and_the_mix_produce_numbers(tmp_path: Path) -> None:
    out = tmp_path / "kinds.json"
    cmd = [
        sys.executable, str(ROOT / "bench" / "run.py"), "--sizes", "40", "--servers",
        "shellserver", "--kinds", "line,char,tls,ssh,web", "--mix", "char:60,ssh:30,web:10",
        "--walls", "3", "--deliveries", "0", "--writes", "100", "--storm", "0",
        "--settle", "0.1", "--timeout", "60", "--no-gate", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "| char | 40 | 40 |" in done.stdout  # the per-kind table
    results = json.loads(out.read_text())["results"]
    for name in (
        "shellserver", "shellserver-char", "shellserver-tls", "shellserver-ssh",
        "shellserver-web", "shellserver-mixed",
    ):  # fmt: skip
        run = results[name]["40"]
        assert run["sessions"] == 40, name
        for key in ("wall_cpu_per_delivery_us", "write_cpu_us", "rss_per_session_kib"):
            assert math.isfinite(run[key]), (name, key, run[key])


@pytest.mark.integration
def test_bench_detached_sessions_against_attached_ones_prints_its_table() -> None:
    """A tiny run of ``make bench-detached``: both servers start, the sessions detach, the
    table and the verdict come out (the figures themselves are the bench's business)."""
    cmd = [sys.executable, str(ROOT / "bench" / "detached.py"), "-n", "40", "--settle", "0.1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert "attached KiB/session" in done.stdout, done.stdout + done.stderr
    assert "detached <= attached: " in done.stdout
