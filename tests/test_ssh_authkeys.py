"""authorized_keys: a bounded, careful parser, the public-key checker over it, and addkey."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import Key
from twisted.cred.credentials import SSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from shellserver.ops.threads import inline_runner
from shellserver.wires.ssh import authkeys
from shellserver.wires.ssh.authkeys import (
    MAX_FILE,
    AddKeyRefused,
    AuthorizedKeysChecker,
    FileTooLarge,
    Stamp,
    add_key,
    home_reader,
    parse,
    read_file,
    read_keys,
)


def openssh_line(private: object, comment: str = "me@laptop") -> tuple[Key, bytes]:
    key = Key(private)
    return key, key.public().toString("openssh") + b" " + comment.encode()


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[Key, bytes]]:
    return {
        "ed25519": openssh_line(ed25519.Ed25519PrivateKey.generate()),
        "ecdsa": openssh_line(ec.generate_private_key(ec.SECP256R1())),
        "rsa2048": openssh_line(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "rsa1024": openssh_line(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
    }


def blob(keys: dict[str, tuple[Key, bytes]], name: str) -> bytes:
    return keys[name][0].blob()


# -- parsing ----------------------------------------------------------------------------


def test_supported_keys_are_accepted(keys: dict[str, tuple[Key, bytes]]) -> None:
    data = b"\n".join(keys[k][1] for k in ("ed25519", "ecdsa", "rsa2048")) + b"\n"
    parsed = parse(data)
    assert parsed.blobs == {blob(keys, k) for k in ("ed25519", "ecdsa", "rsa2048")}
    assert parsed.problems == ()


def test_bad_lines_are_skipped_with_their_line_numbers(keys: dict[str, tuple[Key, bytes]]) -> None:
    ed = keys["ed25519"][1]
    kind, b64 = ed.split()[:2]
    data = b"\n".join(
        [
            b"# my keys",  # 1: comment
            b"",  # 2: blank
            keys["rsa1024"][1],  # 3: too short
            b'from="10.0.0.1" ' + ed,  # 4: options
            b"garbage",  # 5
            b"ssh-ed25519 !!!notbase64",  # 6
            b"ssh-rsa " + b64,  # 7: the data is ed25519
            b"ssh-dss AAAAB3NzaC1kc3MAAACBAP8= old",  # 8: unsupported type
            b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==",  # 9: truncated key
            ed,  # 10: fine
        ]
    )
    parsed = parse(data)
    assert parsed.blobs == {blob(keys, "ed25519")}
    reasons = dict(parsed.problems)
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9]
    assert "1024 bits refused" in reasons[3]
    assert reasons[4] == "options before the key are not supported"
    assert reasons[5].startswith("not a key")
    assert reasons[6].startswith("malformed ssh-ed25519 key")
    assert reasons[7] == "the key data is ssh-ed25519, not ssh-rsa"
    assert "unsupported key type 'ssh-dss'" in reasons[8]
    assert reasons[9].startswith("malformed")
    assert kind == b"ssh-ed25519"


def test_crlf_line_ends_and_missing_comment_are_fine(keys: dict[str, tuple[Key, bytes]]) -> None:
    line = b" ".join(keys["ed25519"][1].split()[:2])
    assert parse(line + b"\r\n").blobs == {blob(keys, "ed25519")}


def test_a_file_over_the_cap_is_refused_whole(keys: dict[str, tuple[Key, bytes]]) -> None:
    line = keys["ed25519"][1] + b"\n"
    data = line * (MAX_FILE // len(line) + 1)
    with pytest.raises(FileTooLarge):
        parse(data)
    assert parse(data[: MAX_FILE - MAX_FILE % len(line)]).blobs == {blob(keys, "ed25519")}


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
@pytest.mark.parametrize(
    ("args", "good"),
    [
        (["-t", "ed25519"], True),
        (["-t", "ecdsa", "-b", "384"], True),
        (["-t", "rsa", "-b", "2048"], True),
        (["-t", "rsa", "-b", "1024"], False),
    ],
)
def test_keys_made_by_ssh_keygen(tmp_path: Path, args: list[str], good: bool) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-N", "", "-C", "user@host", "-f", str(tmp_path / "id"), *args],
        check=True,
    )
    parsed = parse((tmp_path / "id.pub").read_bytes())
    assert (len(parsed.blobs), len(parsed.problems)) == ((1, 0) if good else (0, 1))


# -- the checker ---------------------------------------------------------------------------


def stamp_of(data: bytes) -> Stamp:
    return Stamp(1, hash(data) & 0xFFFFFF, len(data), 0, 0)


def checker_for(files: dict[str, bytes | None], asked: list[str]) -> AuthorizedKeysChecker:
    def read(user: str, known: Stamp | None) -> Deferred[Any]:
        asked.append(user)
        data = files.get(user)
        if data is None:
            return succeed(None)
        stamp = stamp_of(data)
        return succeed((stamp, None if stamp == known else data))

    return AuthorizedKeysChecker(read)


def result(d: Deferred[object]) -> object:
    out: list[object] = []
    d.addBoth(out.append)
    assert out, "the checker did not answer synchronously with a synchronous reader"
    return out[0]


def creds(user: bytes, key: Key, signed: bool, data: bytes = b"session data") -> SSHPrivateKey:
    signature = key.sign(data) if signed else None
    return SSHPrivateKey(user, key.sshType(), key.public().blob(), data, signature)


def refused(outcome: object, kind: type[BaseException] = UnauthorizedLogin) -> bool:
    return isinstance(outcome, Failure) and outcome.check(kind) is not None


def test_a_listed_key_is_asked_to_sign_then_accepted(keys: dict[str, tuple[Key, bytes]]) -> None:
    key, line = keys["ed25519"]
    checker = checker_for({"alice": line + b"\n"}, [])
    assert refused(result(checker.requestAvatarId(creds(b"alice", key, False))), ValidPublicKey)
    assert result(checker.requestAvatarId(creds(b"alice", key, True))) == b"alice"


def test_an_unlisted_key_is_refused_before_signing(keys: dict[str, tuple[Key, bytes]]) -> None:
    checker = checker_for({"alice": keys["ed25519"][1]}, [])
    other = keys["ecdsa"][0]
    assert refused(result(checker.requestAvatarId(creds(b"alice", other, False))))
    assert refused(result(checker.requestAvatarId(creds(b"alice", other, True))))


def test_a_bad_signature_is_refused(keys: dict[str, tuple[Key, bytes]]) -> None:
    key, line = keys["rsa2048"]
    checker = checker_for({"alice": line}, [])
    forged = creds(b"alice", key, True)
    forged.sigData = b"something else"
    assert refused(result(checker.requestAvatarId(forged)))
    garbage = creds(b"alice", key, False)
    garbage.signature = b"\x00\x00\x00\x07ssh-rsa\x00\x00\x00\x01x"
    assert refused(result(checker.requestAvatarId(garbage)))


def test_another_users_key_does_not_open_this_account(keys: dict[str, tuple[Key, bytes]]) -> None:
    key, line = keys["ed25519"]
    checker = checker_for({"alice": line, "bob": keys["ecdsa"][1]}, [])
    assert refused(result(checker.requestAvatarId(creds(b"bob", key, True))))


def test_no_file_and_bad_names_are_refused_without_reading_odd_paths(
    keys: dict[str, tuple[Key, bytes]],
) -> None:
    key = keys["ed25519"][0]
    asked: list[str] = []
    checker = checker_for({}, asked)
    assert refused(result(checker.requestAvatarId(creds(b"carol", key, True))))
    for bad in (b"../etc", b"\xff\xfe", b"Alice", b""):
        assert refused(result(checker.requestAvatarId(creds(bad, key, True))))
    assert asked == ["carol"]


def test_an_oversized_file_logs_and_refuses(keys: dict[str, tuple[Key, bytes]]) -> None:
    key, line = keys["ed25519"]
    checker = checker_for({"alice": line + b"\n" + b"#" * MAX_FILE}, [])
    assert refused(result(checker.requestAvatarId(creds(b"alice", key, True))))


def test_bad_lines_are_logged_with_numbers(
    keys: dict[str, tuple[Key, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines: list[str] = []
    monkeypatch.setattr(authkeys.log, "info", lambda fmt, **kw: lines.append(fmt.format(**kw)))
    key, line = keys["ed25519"]
    data = b"\n".join([b"junk"] * 8 + [line])
    checker = checker_for({"alice": data}, [])
    assert result(checker.requestAvatarId(creds(b"alice", key, True))) == b"alice"
    assert lines[0] == "alice's ~/.ssh/authorized_keys line 1 skipped: " + (
        "not a key (expected: type base64-key [comment])"
    )
    assert len(lines) == authkeys.MAX_LOGGED + 1
    assert lines[-1] == "alice's ~/.ssh/authorized_keys: 3 more lines skipped"


# -- the file in the home -------------------------------------------------------------------


def test_read_file_refuses_symlinks_and_caps_size(tmp_path: Path) -> None:
    root = FilePath(str(tmp_path))
    assert read_file(root, "alice") is None
    ssh = tmp_path / "alice" / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "authorized_keys").write_bytes(b"x" * (MAX_FILE * 2))
    assert len(read_file(root, "alice") or b"") == MAX_FILE + 1
    (tmp_path / "secret").write_bytes(b"secret")
    (ssh / "authorized_keys").unlink()
    (ssh / "authorized_keys").symlink_to(tmp_path / "secret")
    assert read_file(root, "alice") is None
    shutil.rmtree(tmp_path / "alice")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "authorized_keys").write_bytes(b"k")
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / ".ssh").symlink_to(tmp_path / "outside")
    assert read_file(root, "alice") is None
    with pytest.raises(ValueError):
        read_file(root, "../x")


def test_no_component_is_followed_through_a_symlink_swapped_in(tmp_path: Path) -> None:
    """Each component is opened with O_NOFOLLOW relative to the one before, so a symlink
    anywhere below the home root (the home itself, ``.ssh``, the file) reads as no file,
    and a FIFO is not a file either (opened without blocking, refused by ``fstat``)."""
    root = FilePath(str(tmp_path))
    (tmp_path / "outside" / ".ssh").mkdir(parents=True)
    (tmp_path / "outside" / ".ssh" / "authorized_keys").write_bytes(b"k")
    (tmp_path / "alice").symlink_to(tmp_path / "outside")
    assert read_keys(root, "alice") is None
    (tmp_path / "alice").unlink()
    (tmp_path / "alice").mkdir()
    assert read_keys(root, "alice") is None
    (tmp_path / "alice" / ".ssh").mkdir()
    os.mkfifo(tmp_path / "alice" / ".ssh" / "authorized_keys")
    assert read_keys(root, "alice") is None
    (tmp_path / "alice" / ".ssh" / "authorized_keys").unlink()
    (tmp_path / "alice" / ".ssh" / "authorized_keys").write_bytes(b"k")
    got = read_keys(root, "alice")
    assert got is not None and got[1] == b"k"
    assert read_keys(root, "alice", got[0]) == (got[0], None)  # unchanged: not read again


def test_the_file_is_parsed_once_per_change_not_per_query(
    keys: dict[str, tuple[Key, bytes]], tmp_path: Path
) -> None:
    root = FilePath(str(tmp_path))
    ssh = tmp_path / "alice" / ".ssh"
    ssh.mkdir(parents=True)
    key, line = keys["ed25519"]
    other, other_line = keys["ecdsa"]
    (ssh / "authorized_keys").write_bytes(line + b"\n")
    checker = AuthorizedKeysChecker(home_reader(root, inline_runner))
    for _ in range(50):
        assert refused(
            result(checker.requestAvatarId(creds(b"alice", key, False))), ValidPublicKey
        )
        assert refused(result(checker.requestAvatarId(creds(b"alice", other, False))))
    assert checker.parses == 1
    with open(ssh / "authorized_keys", "ab") as f:  # same size class, new mtime and size
        f.write(other_line + b"\n")
    assert result(checker.requestAvatarId(creds(b"alice", other, True))) == b"alice"
    assert checker.parses == 2
    (ssh / "authorized_keys").unlink()
    assert refused(result(checker.requestAvatarId(creds(b"alice", key, False))))
    assert checker.parses == 2


def test_queries_during_a_parse_wait_for_that_one_parse(
    keys: dict[str, tuple[Key, bytes]],
) -> None:
    key, line = keys["ed25519"]
    started: list[Deferred[Any]] = []

    def run(f: Any, *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        started.append(d)
        d.addCallback(lambda _: f(*args))
        return d

    checker = AuthorizedKeysChecker(lambda user, known: succeed((stamp_of(line), line)), run)
    answers = [checker.requestAvatarId(creds(b"alice", key, False)) for _ in range(20)]
    assert len(started) == 1
    started[0].callback(None)
    assert all(refused(result(d), ValidPublicKey) for d in answers)
    assert checker.parses == 1


def test_add_key_creates_private_dirs_and_refuses_duplicates(
    keys: dict[str, tuple[Key, bytes]], tmp_path: Path
) -> None:
    root = FilePath(str(tmp_path))
    ed, line = keys["ed25519"]
    assert add_key(root, "alice", line + b"\n").startswith("SHA256:")
    ssh = tmp_path / "alice" / ".ssh"
    assert stat.S_IMODE(ssh.stat().st_mode) == 0o700
    assert stat.S_IMODE((ssh / "authorized_keys").stat().st_mode) == 0o600
    with pytest.raises(AddKeyRefused, match="already in alice's authorized_keys"):
        add_key(root, "alice", b" ".join(line.split()[:2]) + b" another comment\n")
    add_key(root, "alice", keys["ecdsa"][1])
    assert parse((ssh / "authorized_keys").read_bytes()).blobs == {
        ed.blob(),
        blob(keys, "ecdsa"),
    }


def test_add_key_after_a_file_without_final_newline(
    keys: dict[str, tuple[Key, bytes]], tmp_path: Path
) -> None:
    ssh = tmp_path / "alice" / ".ssh"
    ssh.mkdir(parents=True)
    (ssh / "authorized_keys").write_bytes(keys["ecdsa"][1])
    add_key(FilePath(str(tmp_path)), "alice", keys["ed25519"][1])
    assert len(parse((ssh / "authorized_keys").read_bytes()).blobs) == 2


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"", "expected one public key line"),
        (b"\n\n", "expected one public key line"),
        (b"ssh-ed25519 AAAA\nssh-ed25519 BBBB\n", "got 2"),
        (b"hello world\n", "not a key"),
    ],
)
def test_add_key_refuses_bad_input(tmp_path: Path, text: bytes, why: str) -> None:
    with pytest.raises(AddKeyRefused, match=why):
        add_key(FilePath(str(tmp_path)), "alice", text)
    assert not (tmp_path / "alice" / ".ssh" / "authorized_keys").exists()


def test_add_key_refuses_short_rsa_and_a_full_file(
    keys: dict[str, tuple[Key, bytes]], tmp_path: Path
) -> None:
    root = FilePath(str(tmp_path))
    with pytest.raises(AddKeyRefused, match="1024 bits refused"):
        add_key(root, "alice", keys["rsa1024"][1])
    ssh = tmp_path / "alice" / ".ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_bytes(b"#" * (MAX_FILE - 20) + b"\n")
    with pytest.raises(AddKeyRefused, match="larger than 64 KiB"):
        add_key(root, "alice", keys["ed25519"][1])


def test_add_key_drops_control_characters_from_the_comment(
    keys: dict[str, tuple[Key, bytes]], tmp_path: Path
) -> None:
    kind, b64 = keys["ed25519"][1].split()[:2]
    add_key(FilePath(str(tmp_path)), "alice", kind + b" " + b64 + b" evil\x1b[2J")
    written = (tmp_path / "alice" / ".ssh" / "authorized_keys").read_bytes()
    assert written == kind + b" " + b64 + b"\n"


def test_add_key_refuses_a_symlinked_ssh_dir(
    keys: dict[str, tuple[Key, bytes]], tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "alice").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "alice" / ".ssh")
    with pytest.raises(AddKeyRefused, match="symlink"):
        add_key(FilePath(str(tmp_path)), "alice", keys["ed25519"][1])
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_parsing_runs_where_the_server_says(keys: dict[str, tuple[Key, bytes]]) -> None:
    key, line = keys["ed25519"]
    ran: list[object] = []

    def run(f: Any, *args: Any) -> Deferred[Any]:
        ran.append(f)
        return maybeDeferred(f, *args)

    checker = AuthorizedKeysChecker(lambda user, known: succeed((stamp_of(line), line)), run)
    assert result(checker.requestAvatarId(creds(b"alice", key, True))) == b"alice"
    assert ran == [parse]
