"""``~/.ssh/authorized_keys``: parsed safely, and a ``twisted.cred`` checker over it.

The file is user-controlled input (users edit it with the file commands), so
reading is bounded (:data:`MAX_FILE` bytes; a larger file is ignored as a
whole, never truncated into a different meaning) and every line that is not
a plain supported key is skipped and logged with its line number.

Lines with OpenSSH options (``from="…"``, ``command="…"``, ``restrict``, …)
are skipped: each option narrows what a key may do, so honouring the key
while ignoring its options would grant more than its owner wrote. Supported:
ed25519, ECDSA (nistp256/384/521) and RSA of at least :data:`MIN_RSA_BITS`.
"""

from __future__ import annotations

import binascii
import errno
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.conch.error import ValidPublicKey
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ISSHPrivateKey
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.filepath import FilePath
from zope.interface import implementer

from shellserver.ops.threads import Runner, inline_runner
from shellserver.store.accounts import username_problem

log = Logger()

MAX_FILE = 64 * 1024
#: What ``addkey`` takes on standard input (an RSA 16384 key line is under 3 KiB).
MAX_KEY_LINE = 16 * 1024
MIN_RSA_BITS = 2048
#: Bad lines logged per read; the rest are counted in one line.
MAX_LOGGED = 5
KEY_TYPES = frozenset(
    {
        b"ssh-ed25519",
        b"ssh-rsa",
        b"ecdsa-sha2-nistp256",
        b"ecdsa-sha2-nistp384",
        b"ecdsa-sha2-nistp521",
    }
)


class FileTooLarge(Exception):
    """The file is over :data:`MAX_FILE`: it is ignored as a whole (no key from it counts), since
    reading only its start could change what it means."""

    pass


@frozen
class Parsed:
    """The usable keys' blobs, and ``(line number, reason)`` for every skipped line."""

    blobs: frozenset[bytes]
    problems: tuple[tuple[int, str], ...]


def parse_line(line: bytes) -> Key:
    """One ``type base64 [comment]`` line as a public key, or ``ValueError`` saying why not."""
    fields = line.split(None, 2)
    if len(fields) < 2:
        raise ValueError("not a key (expected: type base64-key [comment])")
    kind, data = fields[0], fields[1]
    if kind not in KEY_TYPES:
        if kind.startswith((b"ssh-", b"ecdsa-", b"sk-")) or b"@openssh.com" in kind:
            raise ValueError(f"unsupported key type {kind.decode('ascii', 'replace')!r}")
        if any(word in KEY_TYPES for word in line.split()):
            raise ValueError("options before the key are not supported")
        raise ValueError("not a key (expected: type base64-key [comment])")
    try:
        blob = binascii.a2b_base64(data, strict_mode=True)
        key = Key.fromString(blob, type="blob")
    except (binascii.Error, BadKeyError, ValueError, IndexError) as e:
        raise ValueError(f"malformed {kind.decode()} key ({e or 'bad encoding'})") from None
    except Exception:  # conch's parsers raise assorted errors on hostile blobs
        raise ValueError(f"malformed {kind.decode()} key") from None
    if key.sshType() != kind:
        raise ValueError(f"the key data is {key.sshType().decode()}, not {kind.decode()}")
    if key.type() == "RSA" and key.size() < MIN_RSA_BITS:
        raise ValueError(f"RSA key of {key.size()} bits refused (at least {MIN_RSA_BITS})")
    parsed: Key = key
    return parsed


def parse(data: bytes) -> Parsed:
    """Every usable key in an authorized_keys file's contents."""
    if len(data) > MAX_FILE:
        raise FileTooLarge(f"larger than {MAX_FILE // 1024} KiB")
    blobs: set[bytes] = set()
    problems: list[tuple[int, str]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        try:
            blobs.add(parse_line(line).blob())
        except ValueError as e:
            problems.append((number, str(e)))
    return Parsed(frozenset(blobs), tuple(problems))


def log_problems(user: str, parsed: Parsed) -> None:
    """Tell the operator which lines were skipped and why, at most :data:`MAX_LOGGED` lines per
    read and the rest counted, because the file is user input and could hold thousands of bad
    lines."""
    for number, reason in parsed.problems[:MAX_LOGGED]:
        log.info(
            "{user}'s ~/.ssh/authorized_keys line {number} skipped: {reason}",
            user=user,
            number=number,
            reason=reason,
        )
    more = len(parsed.problems) - MAX_LOGGED
    if more > 0:
        log.info("{user}'s ~/.ssh/authorized_keys: {n} more lines skipped", user=user, n=more)


# -- the file in a home -----------------------------------------------------------------


def key_path(home_root: FilePath[str], user: str) -> FilePath[str]:
    """``<data>/home/USER/.ssh/authorized_keys`` for a valid user name."""
    if username_problem(user) is not None:
        raise ValueError(f"not a user name: {user!r}")
    return home_root.child(user).child(".ssh").child("authorized_keys")


@frozen
class Stamp:
    """What identifies one version of the file: a change to it changes one of these."""

    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        """The stamp of an ``fstat`` of the descriptor actually read, so it describes exactly the
        bytes that were parsed."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _open_in(parent: int, name: str, flags: int) -> int | None:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
            return None  # missing, or a symlink (O_NOFOLLOW): no file
        raise


def read_keys(
    home_root: FilePath[str], user: str, known: Stamp | None = None
) -> tuple[Stamp, bytes | None] | None:
    """The file's :class:`Stamp` and bytes (at most ``MAX_FILE + 1``); its stamp and None
    when it is still ``known``; None if there is no file.

    Blocking: run it on a thread. Each component below the home root is opened
    relative to the one before with ``O_NOFOLLOW`` (the file itself checked with
    ``fstat`` on the descriptor that is read), so a symlink swapped in anywhere
    below the home root between a check and the open is never followed.
    """
    key_path(home_root, user)  # a valid user name, or ValueError
    fd = os.open(home_root.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in (user, ".ssh"):
            inner = _open_in(fd, name, os.O_RDONLY | os.O_DIRECTORY)
            os.close(fd)
            fd = -1
            if inner is None:
                return None
            fd = inner
        file_fd = _open_in(fd, "authorized_keys", os.O_RDONLY | os.O_NONBLOCK)
    finally:
        if fd >= 0:
            os.close(fd)
    if file_fd is None:
        return None
    try:
        st = os.fstat(file_fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        stamp = Stamp.of(st)
        if stamp == known:
            return stamp, None
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE:
            chunk = os.read(file_fd, MAX_FILE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return stamp, b"".join(chunks)
    finally:
        os.close(file_fd)


def read_file(home_root: FilePath[str], user: str) -> bytes | None:
    """The file's bytes (at most ``MAX_FILE + 1``), or None if there is none (blocking)."""
    got = read_keys(home_root, user)
    return None if got is None else got[1]


#: What the checker's reader gives: :func:`read_keys`'s answer, off the reactor.
KeyReader = Callable[[str, "Stamp | None"], Deferred[Any]]


def home_reader(home_root: FilePath[str], run_io: Runner) -> KeyReader:
    """``read`` for :class:`AuthorizedKeysChecker`: :func:`read_keys` on ``run_io``."""

    def read(user: str, known: Stamp | None) -> Deferred[Any]:
        return run_io(read_keys, home_root, user, known)

    return read


# -- the checker --------------------------------------------------------------------------

#: Users whose parsed file is kept (the least recently used forgotten first): at most
#: 64 KiB of key blobs each.
CACHED_USERS = 256
NO_KEYS = Parsed(frozenset(), ())


@implementer(ICredentialsChecker)
class AuthorizedKeysChecker:
    """Public-key logins against the user's own authorized_keys.

    ``read(user, known)`` gives :func:`read_keys`'s answer off the reactor; ``run_parse``
    parses the bytes (a full file of ed25519 keys takes ~30 ms: the server gives a thread
    pool, tests run it inline). The file is parsed once per change: the parsed keys are
    kept with the file's :class:`Stamp` (device, inode, size, mtime, ctime), each query
    costs an ``open`` and an ``fstat``, and queries that arrive while a version is being
    parsed wait for that one parse. A key that is not listed is refused before the
    client is asked for a signature, so the server never says "sign with that" for a key
    it would not accept (as OpenSSH).
    """

    credentialInterfaces = (ISSHPrivateKey,)

    def __init__(self, read: KeyReader, run_parse: Runner = inline_runner) -> None:
        self.read = read
        self.run_parse = run_parse
        self._cache: OrderedDict[str, tuple[Stamp, Parsed]] = OrderedDict()
        self._parsing: dict[tuple[str, Stamp], list[Deferred[Parsed]]] = {}
        #: Parses done (for tests: once per change, never per query).
        self.parses = 0

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        """cred's entry point; the work is a coroutine (:meth:`_check`) because it waits for the
        file read and possibly a parse on other threads."""
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: Any) -> bytes:
        try:
            user: str = credentials.username.decode("utf-8")
        except UnicodeDecodeError:
            raise UnauthorizedLogin() from None
        if username_problem(user) is not None:
            raise UnauthorizedLogin()
        parsed = await self.keys_of(user)
        if credentials.blob not in parsed.blobs:
            raise UnauthorizedLogin()
        if not credentials.signature:
            raise ValidPublicKey()
        key = Key.fromString(credentials.blob, type="blob")
        try:
            good = key.verify(credentials.signature, credentials.sigData)
        except Exception:  # a hostile signature must be a refusal, never a crash
            good = False
        if not good:
            raise UnauthorizedLogin()
        return user.encode()

    async def keys_of(self, user: str) -> Parsed:
        """The usable keys in USER's file as it is now (parsed only if it changed)."""
        cached = self._cache.get(user)
        got: tuple[Stamp, bytes | None] | None = await self.read(
            user, cached[0] if cached else None
        )
        if got is None:
            self._cache.pop(user, None)
            return NO_KEYS
        stamp, data = got
        cached = self._cache.get(user)  # (another query may have parsed it meanwhile)
        if cached is not None and cached[0] == stamp:
            self._cache.move_to_end(user)
            return cached[1]
        if data is None:  # unchanged from a version another query has replaced since
            again: tuple[Stamp, bytes | None] | None = await self.read(user, None)
            if again is None:
                return NO_KEYS
            stamp, data = again[0], again[1] or b""
        key = (user, stamp)
        waiting = self._parsing.get(key)
        if waiting is not None:
            d: Deferred[Parsed] = Deferred()
            waiting.append(d)
            parsed: Parsed = await d
            return parsed
        self._parsing[key] = []
        try:
            parsed = await self._parse(user, data)
        except BaseException:
            for d in self._parsing.pop(key, []):
                d.callback(NO_KEYS)
            raise
        self._cache[user] = (stamp, parsed)
        self._cache.move_to_end(user)
        while len(self._cache) > CACHED_USERS:
            self._cache.popitem(last=False)
        for d in self._parsing.pop(key, []):
            d.callback(parsed)
        return parsed

    async def _parse(self, user: str, data: bytes) -> Parsed:
        self.parses += 1
        try:
            parsed: Parsed = await self.run_parse(parse, data)
        except FileTooLarge as e:
            log.info("{user}'s ~/.ssh/authorized_keys ignored: {why}", user=user, why=e)
            return NO_KEYS
        log_problems(user, parsed)
        return parsed


# -- adding a key (shellserver addkey) ----------------------------------------------------------


class AddKeyRefused(Exception):
    """Why ``shellserver addkey`` did not add the key, in words for the operator (the CLI and the
    control socket print it), never a traceback."""

    pass


def normalise(text: bytes) -> tuple[bytes, bytes]:
    """The one key on ``text`` as a clean line, and its blob; or ``AddKeyRefused`` why not."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise AddKeyRefused(
            "expected one public key line (e.g. the contents of id_ed25519.pub)"
            if not lines
            else f"expected one public key line, got {len(lines)}"
        )
    try:
        key = parse_line(lines[0])
    except ValueError as e:
        raise AddKeyRefused(str(e)) from None
    fields = lines[0].split(None, 2)
    comment = fields[2] if len(fields) == 3 else b""
    if any(c < 0x20 or c == 0x7F for c in comment) or b"\r" in comment:
        comment = b""
    line = b" ".join([key.sshType(), fields[1], *([comment] if comment else [])])
    return line + b"\n", key.blob()


#: addkey runs on the io pool: two at once must not both pass the duplicate and size checks.
_adding = threading.Lock()


def add_key(home_root: FilePath[str], user: str, text: bytes) -> str:
    """Append the key on ``text`` to USER's authorized_keys; the fingerprint, or AddKeyRefused.

    Blocking: run it on a thread. Creates ``~/.ssh`` 0700 and the file 0600.
    """
    with _adding:
        return _add_key(home_root, user, text)


def _add_key(home_root: FilePath[str], user: str, text: bytes) -> str:
    from shellserver.wires.ssh.hostkeys import fingerprint

    line, blob = normalise(text)
    path = key_path(home_root, user)
    for d in (path.parent().parent(), path.parent()):
        if os.path.islink(d.path):
            raise AddKeyRefused(f"{d.path} is a symlink")
        os.makedirs(d.path, mode=0o700, exist_ok=True)
    existing = read_file(home_root, user)
    if existing is None and os.path.lexists(path.path):
        raise AddKeyRefused(f"{path.path} is not a regular file")
    existing = existing or b""
    if len(existing) + len(line) + 1 > MAX_FILE:
        raise AddKeyRefused(f"{user}'s authorized_keys would be larger than 64 KiB")
    try:
        present = parse(existing).blobs
    except FileTooLarge:
        present = frozenset()
    if blob in present:
        raise AddKeyRefused(f"that key is already in {user}'s authorized_keys")
    fd = os.open(
        path.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    try:
        if existing and not existing.endswith(b"\n"):
            line = b"\n" + line
        os.write(fd, line)
    finally:
        os.close(fd)
    return fingerprint(Key.fromString(blob, type="blob"))
