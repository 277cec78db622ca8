"""The server's SSH host keys: generated once into ``<data>/ssh/``, then loaded at every start.

A client pins the host key at its first connection, so the keys must survive
restarts and never be half-written: each is written to a temporary file
(0600, created exclusively), synced, then renamed into place. A key file that
exists but cannot be read is an error, never silently replaced (that would
make every client's pin fail with a man-in-the-middle warning).
"""

from __future__ import annotations

import base64
import hashlib
import os

from attrs import define, field, frozen
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.python.filepath import FilePath

from shellserver.store.accounts import IAccountDB

RSA_BITS = 3072
#: File name and generator, in the order clients are offered them.
KINDS: tuple[tuple[str, str], ...] = (
    ("ssh_host_ed25519_key", "ed25519"),
    ("ssh_host_rsa_key", "rsa"),
)


class HostKeyError(Exception):
    """A host key file that exists but cannot be used; the message names the file."""


@frozen
class HostKeys:
    """The private keys (``Key``), each with its public half, by SSH algorithm name."""

    keys: tuple[Key, ...]

    def private_keys(self) -> dict[bytes, Key]:
        """By SSH type name, the form conch's ``SSHFactory.privateKeys`` expects."""
        return {key.sshType(): key for key in self.keys}

    def public_keys(self) -> dict[bytes, Key]:
        """By SSH type name, the form conch's ``SSHFactory.publicKeys`` expects; derived from the
        private keys so the two can never disagree."""
        return {key.sshType(): key.public() for key in self.keys}

    def fingerprints(self) -> list[str]:
        """``256 SHA256:… (ED25519)``: what ``ssh-keygen -l`` prints, so users can compare."""
        return [describe(key) for key in self.keys]


@define
class HostKeyFiles:
    """The host keys in ``<data>/ssh`` as the SSH listener uses them: named when the listener is
    built, read (or, at the first start, made) by :meth:`load` once the data dir is claimed.

    The listener is bound before the data dir may be created (a port in use must stop the
    start having created nothing), and the keys cannot be made in memory beforehand: nodes
    of a cluster share the data dir, and a node must serve the keys another node wrote
    while it waited for its turn to start. So the file is the part, and loading it is a
    step of the start, as opening the store is.
    """

    directory: FilePath[str]
    #: A shared store (PostgreSQL) to keep the keys in instead, so every node presents the
    #: same keys; None: the files in ``directory``.
    store: IAccountDB | None = None
    _keys: HostKeys | None = field(default=None, init=False)
    _private: dict[bytes, Key] = field(factory=dict, init=False)
    _public: dict[bytes, Key] = field(factory=dict, init=False)

    def load(self) -> list[str]:
        """Read the keys, generating the missing ones; the names of the files (or, in a
        store, the kinds) made now."""
        if self.store is None:
            keys, created = load_or_create(self.directory)
        else:
            keys, created = load_or_create_in_store(self.store)
        self._keys = keys
        self._private = keys.private_keys()
        self._public = keys.public_keys()
        return created

    @property
    def keys(self) -> HostKeys:
        """The loaded keys; before :meth:`load`, an error that says so (the server loads them
        before the reactor runs, so no connection meets it)."""
        if self._keys is None:
            raise self._not_loaded()
        return self._keys

    @property
    def where(self) -> str:
        """Where the keys are kept, for the log line at their first generation."""
        return self.directory.path if self.store is None else f"the store at {self.store.where}"

    def _not_loaded(self) -> HostKeyError:
        return HostKeyError(f"the SSH host keys in {self.where} are not loaded")

    def private_keys(self) -> dict[bytes, Key]:
        """As :meth:`HostKeys.private_keys`, made once at :meth:`load`: conch asks at every
        handshake."""
        if self._keys is None:
            raise self._not_loaded()
        return self._private

    def public_keys(self) -> dict[bytes, Key]:
        """As :meth:`HostKeys.public_keys`, made once at :meth:`load`."""
        if self._keys is None:
            raise self._not_loaded()
        return self._public

    def fingerprints(self) -> list[str]:
        """As :meth:`HostKeys.fingerprints` (the control socket's ``status``)."""
        return self.keys.fingerprints()


def fingerprint(key: Key) -> str:
    """OpenSSH's form: ``SHA256:`` and unpadded base64."""
    digest = hashlib.sha256(key.public().blob()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def describe(key: Key) -> str:
    """As ``ssh-keygen -lf`` prints it (without the comment)."""
    return f"{key.size()} {fingerprint(key)} ({key.type().upper()})"


def _generate(kind: str) -> bytes:
    private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def write_atomically(path: FilePath[str], data: bytes, mode: int = 0o600) -> None:
    """``data`` at ``path`` completely or not at all, created with ``mode`` (never wider)."""
    tmp = path.sibling(f".{path.basename()}.tmp")
    if os.path.lexists(tmp.path):
        os.unlink(tmp.path)  # left by a start that died mid-write
    fd = os.open(tmp.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp.path, path.path)
    dir_fd = os.open(path.parent().path, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_create(directory: FilePath[str]) -> tuple[HostKeys, list[str]]:
    """The host keys in ``directory`` (made 0700), generating the missing ones.

    Returns the keys and the names of the files this call created.
    """
    os.makedirs(directory.path, mode=0o700, exist_ok=True)
    os.chmod(directory.path, 0o700)
    keys: list[Key] = []
    created: list[str] = []
    for name, kind in KINDS:
        path = directory.child(name)
        if not os.path.lexists(path.path):
            write_atomically(path, _generate(kind))
            created.append(name)
        keys.append(_load(path))
    return HostKeys(tuple(keys)), created


def load_or_create_in_store(store: IAccountDB) -> tuple[HostKeys, list[str]]:
    """The host keys kept in a shared store, generating the missing ones (synchronous: at
    start, before the reactor runs). Two nodes starting at once may both generate a key;
    the store keeps the first one written and both present it.

    Returns the keys and the kinds this call generated and kept.
    """
    stored = store.host_keys()
    keys: list[Key] = []
    created: list[str] = []
    for _, kind in KINDS:
        data = stored.get(kind)
        if data is None:
            made = _generate(kind)
            data = store.add_host_key(kind, made)
            if data == made:
                created.append(kind)
        keys.append(_parse(data, f"the {kind} SSH host key in the store at {store.where}"))
    return HostKeys(tuple(keys)), created


def _parse(data: bytes, what: str) -> Key:
    try:
        key = Key.fromString(data)
    except (BadKeyError, ValueError) as e:
        raise HostKeyError(f"cannot load {what}: {e}") from None
    if not key.isPublic() and key.type() in ("Ed25519", "RSA", "EC"):
        loaded: Key = key
        return loaded
    raise HostKeyError(f"{what} is not a private ed25519, ECDSA or RSA key")


def _load(path: FilePath[str]) -> Key:
    if path.islink() or not path.isfile():
        raise HostKeyError(f"the SSH host key {path.path} is not a regular file")
    if os.stat(path.path).st_mode & 0o077:
        raise HostKeyError(
            f"the SSH host key {path.path} is readable by others; chmod 600 it "
            "(and consider it leaked)"
        )
    try:
        key = Key.fromFile(path.path)
    except (BadKeyError, ValueError, OSError) as e:
        raise HostKeyError(f"cannot load the SSH host key {path.path}: {e}") from None
    if not key.isPublic() and key.type() in ("Ed25519", "RSA", "EC"):
        loaded: Key = key
        return loaded
    raise HostKeyError(f"{path.path} is not a private ed25519, ECDSA or RSA key")
