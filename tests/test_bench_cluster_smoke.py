"""The two-node bench runs end to end (N = 50) and measures something; no number is judged here.

``bench/cluster.py`` starts its own redis-server on a free loopback port, a server alone,
one clustered node, then two, then two "machines" on a PostgreSQL store of its own;
``make bench-cluster`` runs it at N = 1,000.
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
def test_bench_cluster_smoke_run_produces_numbers(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    out = tmp_path / "cluster.json"
    cmd = [
        sys.executable, str(ROOT / "bench" / "cluster.py"), "--sessions", "50", "--walls", "3",
        "--deliveries", "0", "--writes", "200", "--settle", "0.3", "--timeout", "30",
        "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "| CPU per wall delivery (µs) |" in done.stdout
    assert "| CPU per cross-node write a→b (µs) |" in done.stdout
    results = json.loads(out.read_text())["results"]
    for setup in ("alone", "1 node", "2 nodes"):
        run = results[setup]
        assert run["sessions"] == 50
        for key in ("wall_cpu_us", "wall_p99_ms", "same_cpu_us", "same_per_s", "login_cpu_us"):
            assert math.isfinite(run[key]), (setup, key, run[key])
    two = results["2 nodes"]
    for key in ("cross_cpu_us", "cross_cpu_us@a", "cross_cpu_us@b", "cross_per_s"):
        assert math.isfinite(two[key]), (key, two[key])
    assert two["cross_cpu_us@publish"] >= 1  # each cross-node write is a PUBLISH at least
    if "2 machines" in results:  # PostgreSQL installed (CI installs it)
        machines = results["2 machines"]
        assert machines["sessions"] == 50
        for key in ("login_cpu_us@a", "login_cpu_us@b", "wall_cpu_us", "cross_cpu_us"):
            assert math.isfinite(machines[key]), (key, machines[key])
        assert "| alone (SQLite) | 2 machines: a |" in done.stdout
    else:
        assert "2 machines skipped: PostgreSQL is not installed" in done.stderr
