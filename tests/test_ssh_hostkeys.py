"""SSH host keys: generated once (0600, atomically), loaded afterwards, fingerprints as OpenSSH."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from twisted.python.filepath import FilePath

from shellserver.wires.ssh import hostkeys
from shellserver.wires.ssh.hostkeys import HostKeyError, load_or_create


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key directory (RSA 3072 takes a moment), copied by the tests that change it."""
    d = tmp_path_factory.mktemp("keys") / "ssh"
    load_or_create(FilePath(str(d)))
    return d


def copy(made: Path, tmp_path: Path) -> FilePath[str]:
    target = tmp_path / "ssh"
    shutil.copytree(made, target)
    return FilePath(str(target))


def test_first_start_creates_both_keys_private(made: Path) -> None:
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    names = sorted(p.name for p in made.iterdir())
    assert names == ["ssh_host_ed25519_key", "ssh_host_rsa_key"]
    for name in names:
        assert stat.S_IMODE((made / name).stat().st_mode) == 0o600


def test_kinds_and_sizes(made: Path) -> None:
    keys, created = load_or_create(FilePath(str(made)))
    assert created == []
    assert [(k.type(), k.size()) for k in keys.keys] == [("Ed25519", 256), ("RSA", 3072)]
    assert set(keys.public_keys()) == {b"ssh-ed25519", b"ssh-rsa"}
    assert all(not k.isPublic() for k in keys.private_keys().values())


def test_loaded_again_not_regenerated(made: Path, tmp_path: Path) -> None:
    d = copy(made, tmp_path)
    before = load_or_create(d)[0].fingerprints()
    after, created = load_or_create(d)
    assert created == []
    assert after.fingerprints() == before


def test_a_missing_key_is_made_and_the_other_kept(made: Path, tmp_path: Path) -> None:
    d = copy(made, tmp_path)
    before = load_or_create(d)[0].fingerprints()
    os.unlink(d.child("ssh_host_ed25519_key").path)
    keys, created = load_or_create(d)
    assert created == ["ssh_host_ed25519_key"]
    assert keys.fingerprints()[1] == before[1]
    assert keys.fingerprints()[0] != before[0]


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
def test_fingerprints_are_what_ssh_keygen_prints(made: Path) -> None:
    keys, _ = load_or_create(FilePath(str(made)))
    for key, name in zip(keys.keys, ["ssh_host_ed25519_key", "ssh_host_rsa_key"], strict=True):
        out = subprocess.run(
            ["ssh-keygen", "-l", "-f", str(made / name)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert hostkeys.describe(key) == f"{out[0]} {out[1]} {out[-1]}"
        assert hostkeys.fingerprint(key).startswith("SHA256:")
        assert not hostkeys.fingerprint(key).endswith("=")


def test_a_damaged_key_is_an_error_not_replaced(made: Path, tmp_path: Path) -> None:
    d = copy(made, tmp_path)
    path = d.child("ssh_host_ed25519_key")
    path.setContent(b"not a key\n")
    os.chmod(path.path, 0o600)
    with pytest.raises(HostKeyError, match="cannot load the SSH host key"):
        load_or_create(d)
    assert path.getContent() == b"not a key\n"


def test_a_key_readable_by_others_is_refused(made: Path, tmp_path: Path) -> None:
    d = copy(made, tmp_path)
    os.chmod(d.child("ssh_host_rsa_key").path, 0o644)
    with pytest.raises(HostKeyError, match="readable by others"):
        load_or_create(d)


def test_a_public_key_in_place_of_the_private_is_refused(made: Path, tmp_path: Path) -> None:
    d = copy(made, tmp_path)
    keys, _ = load_or_create(d)
    path = d.child("ssh_host_ed25519_key")
    path.setContent(keys.keys[0].public().toString("openssh"))
    os.chmod(path.path, 0o600)
    with pytest.raises(HostKeyError, match="not a private"):
        load_or_create(d)


def test_key_files_are_read_only_when_loaded(made: Path, tmp_path: Path) -> None:
    """The SSH listener is built (and bound) with the data dir's key files before the data dir
    may exist; they are read, or made, by ``load`` once it is claimed."""
    files = hostkeys.HostKeyFiles(FilePath(str(tmp_path / "data" / "ssh")))
    for ask in (files.private_keys, files.public_keys, files.fingerprints):
        with pytest.raises(HostKeyError, match="not loaded"):
            ask()
    assert not (tmp_path / "data").exists()
    shutil.copytree(made, tmp_path / "data" / "ssh")
    assert files.load() == []  # the keys there are read, never made again
    keys, _ = load_or_create(FilePath(str(made)))
    assert files.fingerprints() == keys.fingerprints()
    assert files.private_keys() == keys.private_keys()
    assert files.public_keys() == keys.public_keys()


def test_write_atomically_leaves_no_temporary_and_replaces_a_stale_one(tmp_path: Path) -> None:
    target = FilePath(str(tmp_path / "k"))
    (tmp_path / ".k.tmp").write_bytes(b"half")
    hostkeys.write_atomically(target, b"whole")
    assert target.getContent() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]
    assert stat.S_IMODE(os.stat(target.path).st_mode) == 0o600
