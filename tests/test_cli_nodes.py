"""Several real nodes (``twistd -n shellserver --cluster … --node NAME``) on one data dir.

Each has its own lock and control socket; the ``shellserver`` CLI picks a
node's socket with ``--node``, or the only one running, or says which run.
The nodes share the store: an account made through one logs in on another.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clusternodes import cli, node
from realserver import RealServer, login
from redisserver import RedisServer

pytestmark = pytest.mark.integration


def test_nodes_on_one_data_dir_and_the_cli_choosing_one(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    data, redis_url = tmp_path / "data", redis_server.url
    a = node(tmp_path, data, redis_url, "a").start()
    b = None
    try:
        assert (data / "control-a.sock").exists() and not (data / "control.sock").exists()
        r = cli(data, "status")  # the only node running
        assert r.returncode == 0 and f"pid {a.proc.pid}" in r.stdout, r.stderr  # type: ignore[union-attr]

        b = node(tmp_path, data, redis_url, "b").start()
        r = cli(data, "status")
        assert r.returncode == 1
        assert r.stderr == (
            f"shellserver status: several nodes run on {data} (a, b); pick one with --node NAME\n"
        )
        r = cli(data, "--node", "B", "status")
        assert r.returncode == 0 and f"pid {b.proc.pid}" in r.stdout  # type: ignore[union-attr]
        r = cli(data, "--node", "c", "status")
        assert (r.returncode, r.stderr) == (
            3, f"shellserver status: no shellserver node c is running on {data} (running: a, b)\n"
        )  # fmt: skip
        r = cli(data, "--node", "no/de", "status")
        assert r.returncode == 2 and "--node: not a node name: 'no/de'" in r.stderr

        # One store: an account made through node a logs in on node b.
        r = cli(data, "--node", "a", "useradd", "bob", "--password-stdin", stdin="bobspassword\n")
        assert r.returncode == 0, r.stderr
        login(b.port, "bob", "bobspassword").close()

        # A second node a, and a server alone, are refused with one line and exit 1.
        again = node(tmp_path / "again", data, redis_url, "a")
        with pytest.raises(RuntimeError, match="exited with 1") as e:
            again.start()
        assert f"another shellserver node a is running on {data} (pid {a.proc.pid})" in str(
            e.value
        )  # type: ignore[union-attr]
        alone = RealServer(tmp_path / "again" / "node-a", "--data", str(data))
        with pytest.raises(RuntimeError, match="exited with 1") as e:
            alone.start()
        assert f"shellserver nodes are running on {data} (a, b); stop them first" in str(e.value)
    finally:
        if b is not None:
            b.stop()
        a.stop()
    assert not (data / "control-a.sock").exists() and not (data / "control-b.sock").exists()
    # All nodes gone: the CLI changes the store directly again.
    r = cli(data, "userdel", "bob")
    assert r.returncode == 0 and "deleted bob" in r.stdout
