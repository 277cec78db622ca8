"""A running ``sftp`` on one node of a real cluster (two ``twistd`` nodes, one redis-server) is
closed by a kick, a lock and a ban made on the other node."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from clusternodes import running
from test_sftp_integration import ended_by, interactive_sftp
from test_ssh_integration import user_key

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        any(shutil.which(p) is None for p in ("ssh", "sftp", "ssh-keygen")),
        reason="the OpenSSH clients (ssh, sftp) are not installed (apt install openssh-client)",
    ),
]


def test_kick_lock_and_ban_on_one_node_close_sftp_on_another(tmp_path: Path) -> None:
    users = ("wes", "xia", "yan")
    with running(tmp_path, "ab", "--ssh", "tcp:0:interface=127.0.0.1", users=users) as cluster:
        b = cluster["b"]
        key = user_key(b, "id_files").with_suffix(".pub").read_bytes()
        homes = {}
        for user in users:
            home = homes[user] = cluster.data / "home" / user
            (home / ".ssh").mkdir(mode=0o700, parents=True, exist_ok=True)
            (home / ".ssh" / "authorized_keys").write_bytes(key)
        (tmp_path / "f").write_bytes(b"x")
        children = {user: interactive_sftp(b, user, tmp_path) for user in users}
        # wes has no session anywhere, only this transfer on b: a's kick cannot count it
        # (the other nodes are told, not asked), but it ends it.
        cluster.cli("a", "kick", "wes", "--reason", "spam")
        ended_by(children["wes"], "You have been logged out by ", homes["wes"])
        locked = cluster.cli("a", "lock", "xia")
        assert locked.returncode == 0, locked.stderr
        ended_by(children["xia"], "Your account has been locked by ", homes["xia"])
        banned = cluster.cli("a", "ban", "yan", "1h", "troll")
        assert banned.returncode == 0, banned.stderr
        ended_by(children["yan"], "banned yan until ", homes["yan"])
        assert not cluster.tracebacks()
