"""Homes on a filesystem that nodes with separate data dirs share (``--homes``), as two
machines would: each node its own ``--data`` (store, locks, logs), one homes tree, one Redis.

The per-home lock and usage stamp live in the homes tree, so they serialise the nodes
whatever data dir each has: the quota holds when copies race through both.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusternodes import CLI, joined, run
from realserver import PASSWORD, RealServer, login
from redisserver import RedisServer

pytestmark = pytest.mark.integration

QUOTA = 2 * 1024 * 1024


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[tuple[RealServer, RealServer, Path]]:
    """Nodes a and b, each with its own data dir (and store, with the same accounts made in
    each), sharing one redis-server and the homes at ``tmp_path/shared``."""
    homes = tmp_path / "shared"
    redis = RedisServer(tmp_path / "redis")
    nodes: list[RealServer] = []
    try:
        redis.start()
        for name in "ab":
            work = tmp_path / f"machine-{name}"
            data = work / "data"
            made = subprocess.run(
                [CLI, "--data", str(data), "--homes", str(homes), "newusers", "--hash-cost", "4"],
                input=f"boss:{PASSWORD}:admin\nalice:{PASSWORD}\n",
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert made.returncode == 0, made.stderr
            srv = RealServer(
                work,
                "--data", str(data),
                "--homes", str(homes),
                "--cluster", redis.url,
                "--node", name,
                "--quota", str(QUOTA),
                "--max-sessions", "0",
                "--cmd-rate", "0",
            )  # fmt: skip
            nodes.append(srv)
            joined(srv.start())
        yield nodes[0], nodes[1], homes
    finally:
        for srv in nodes:
            srv.stop()
        redis.stop()


def test_the_quota_holds_when_copies_race_through_nodes_with_their_own_data_dirs(
    machines: tuple[RealServer, RealServer, Path],
) -> None:
    a, b, homes = machines
    assert not (a.data / "home").exists() and not (b.data / "home").exists()
    alice = login(a.port, "alice", PASSWORD)
    run(alice, "echo " + "x" * 4000 + " > f0", "alice")
    for i in range(7):  # 4001 bytes doubled seven times: 512 KB
        run(alice, f"cat f{i} f{i} > f{i + 1}", "alice")
    run(alice, "mv f7 big", "alice")
    run(alice, "rm f0 f1 f2 f3 f4 f5 f6", "alice")
    assert (homes / "alice" / "big").stat().st_size == 4001 * 128
    sessions = [login((a, b)[i % 2].port, "alice", PASSWORD) for i in range(12)]
    for i, s in enumerate(sessions):
        s.send_line(f"cp big copy{i}")
    outs = [s.expect("alice@testhost:~$ ", timeout=60) for s in sessions]
    refused = [o for o in outs if "Disk quota exceeded" in o]
    used = sum(p.stat().st_size for p in (homes / "alice").iterdir())
    assert used <= QUOTA
    assert len(refused) == 9 and len(list((homes / "alice").iterdir())) == 4  # big + 3 copies
    # The locks that serialised them are on the shared filesystem, inside the homes' root.
    assert (homes / ".locks" / "alice").is_file() and not (homes.parent / "homelocks").exists()
    on_b = login(b.port, "alice", PASSWORD)
    assert "Disk quota for alice: 2.0M of 2.0M used" in run(on_b, "quota", "alice")


def test_the_cli_finds_the_homes_the_server_ran_with(
    machines: tuple[RealServer, RealServer, Path],
) -> None:
    """userdel from the CLI removes the home in the shared tree, not in ``<data>/home``."""
    a, _, homes = machines
    run(login(a.port, "alice", PASSWORD), "echo hi > note", "alice")
    assert (homes / "alice" / "note").read_text() == "hi\n"
    assert (a.data / "homes").read_text().strip() == str(homes)
    a.stop()
    r = subprocess.run(
        [CLI, "--data", str(a.data), "userdel", "alice"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert not (homes / "alice").exists()
