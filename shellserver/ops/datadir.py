"""The data directory: created 0700, claimed with lock files.

One server alone takes ``shellserver.lock`` exclusively. Clustered nodes on
one machine may share a data dir (one store, one set of homes), so each
takes ``shellserver.lock`` *shared* and its own ``node-NAME.lock``
exclusively: two nodes of one name refuse each other, nodes of different
names run side by side, and a server alone and a clustered node exclude
each other (exclusive against shared). The CLI, with
the server stopped, takes ``shellserver.lock`` exclusively like a server
alone, so it never changes the store under a running node.

A node's start (store migration, the first ``admin``, closing the login
records a crashed run left open) happens while it holds ``startup.lock``, so
nodes started at once do those one after another; a node that finds no other
node running (it could take ``shellserver.lock`` exclusively) is
:attr:`DataDir.alone` and may treat every open login record as left over.

All locks are ``flock(2)``: released by the kernel when the process dies, so
a ``kill -9`` never leaves a data dir claimed.

The homes live in ``<data>/home`` unless ``--homes DIR`` puts them elsewhere
(a shared filesystem, for nodes on several machines). The server records
that choice in ``<data>/homes``, so the CLI on the same data dir finds the
homes without being told again.
"""

from __future__ import annotations

import fcntl
import os
import time

from attrs import define, field
from twisted.python.filepath import FilePath

#: How long a lock held only for a moment (someone's probe) is tried again before giving up.
PROBE_PATIENCE = 0.25
#: How long a node waits for another node's start (a store migration can take a while).
STARTUP_PATIENCE = 60.0
_NODE_LOCK_PREFIX, _NODE_LOCK_SUFFIX = "node-", ".lock"


class DataDirLocked(Exception):
    """The directory is someone else's: its message names who (a pid, the running nodes), and
    start-up and the CLI print it as their one line instead of touching a store in use."""


def _flock(fd: int, operation: int, patience: float) -> bool:
    """Take the lock without blocking, trying again for ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        else:
            return True


def _pid_note(path: str) -> str:
    """`` (pid N)`` from a lock file, or nothing if it holds no pid."""
    try:
        with open(path, "rb") as f:
            pid = f.read(32).decode(errors="replace").strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _held(path: str, operation: int) -> bool:
    """Does someone hold a lock on ``path`` that conflicts with ``operation``? (A probe.)"""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@define
class DataDir:
    """Every path inside the data dir and the locks that claim it, in one place, so the server,
    its nodes and the offline CLI agree on both (see the module's docstring)."""

    path: FilePath[str]
    #: This node's name when clustered (per-node lock and control socket); None: a server alone.
    node: str | None = None
    #: ``--homes``: the homes' root elsewhere than ``<data>/home``; None: inside the data dir.
    homes: FilePath[str] | None = None
    _lock_fd: int | None = field(default=None, init=False)
    _node_fd: int | None = field(default=None, init=False)
    _startup_fd: int | None = field(default=None, init=False)
    #: After :meth:`lock`: no other server or node was running on this data dir.
    alone: bool = field(default=False, init=False)

    @property
    def db_path(self) -> FilePath[str]:
        """The SQLite store: opened by the server, and by the CLI only under the lock."""
        return self.path.child("accounts.sqlite3")

    @property
    def home_root(self) -> FilePath[str]:
        """Where the homes live: ``--homes``, else inside the 0700 directory, so no other OS
        user can reach them."""
        return self.path.child("home") if self.homes is None else self.homes

    @property
    def homes_note(self) -> FilePath[str]:
        """Where the server writes its ``--homes`` for the CLI (absent: ``<data>/home``)."""
        return self.path.child("homes")

    def remember_homes(self) -> None:
        """Record (or forget) ``--homes`` for the CLI: called by the server once it holds the
        data dir, so the CLI's userdel and addkey reach the homes the server uses."""
        note = self.homes_note
        if self.homes is None:
            if note.exists():
                note.remove()
            return
        tmp = note.siblingExtension(".tmp")
        tmp.setContent(self.homes.path.encode() + b"\n")
        os.replace(tmp.path, note.path)

    def recorded_homes(self) -> FilePath[str] | None:
        """The ``--homes`` the server last ran with on this data dir, if any."""
        try:
            text = self.homes_note.getContent().decode().strip()
        except OSError:
            return None
        return FilePath(text) if text else None

    @property
    def lock_path(self) -> FilePath[str]:
        """The lock that a server alone takes exclusively and each node shared."""
        return self.path.child("shellserver.lock")

    @property
    def startup_lock_path(self) -> FilePath[str]:
        """Held through a node's start, so nodes started at once migrate the store one by one."""
        return self.path.child("startup.lock")

    def node_lock_path(self, node: str) -> FilePath[str]:
        """A node's own lock: two nodes given one name refuse each other; it holds the pid."""
        return self.path.child(f"{_NODE_LOCK_PREFIX}{node}{_NODE_LOCK_SUFFIX}")

    @property
    def control_socket(self) -> FilePath[str]:
        """This server's default control socket: ``control.sock``, or ``control-NODE.sock``."""
        if self.node is None:
            return self.path.child("control.sock")
        return self.node_socket(self.node)

    def node_socket(self, node: str) -> FilePath[str]:
        """A node's control socket, named for the node so the CLI can reach any one of them."""
        return self.path.child(f"control-{node}.sock")

    @property
    def admin_password_path(self) -> FilePath[str]:
        """The first start's ``admin`` password (0600); removed once that password is changed."""
        return self.path.child("initial-admin-password")

    def create(self) -> None:
        """Make the directory and the home root 0700; the directory is ``chmod``-ed as well,
        since ``makedirs`` leaves an existing, wider directory as it was."""
        os.makedirs(self.path.path, mode=0o700, exist_ok=True)
        os.chmod(self.path.path, 0o700)
        os.makedirs(self.home_root.path, mode=0o700, exist_ok=True)

    # -- claiming --------------------------------------------------------------------

    def lock(self) -> None:
        """Claim the directory (alone) or a node's place in it (clustered), or say who has it.

        Clustered, the start-up lock is held until :meth:`end_startup`.
        """
        if self.node is None:
            self._lock_alone()
        else:
            self._lock_node(self.node)
        self.write_pid()

    def _lock_alone(self) -> None:
        fd = self._open(self.lock_path)
        if not _flock(fd, fcntl.LOCK_EX, PROBE_PATIENCE):
            os.close(fd)
            nodes = self.running_nodes()
            if nodes:
                raise DataDirLocked(
                    f"shellserver nodes are running on {self.path.path} "
                    f"({', '.join(nodes)}); stop them first"
                )
            raise DataDirLocked(
                f"another shellserver is running on {self.path.path}"
                f"{_pid_note(self.lock_path.path)}"
            )
        self._lock_fd = fd
        self.alone = True

    def _lock_node(self, node: str) -> None:
        startup = self._open(self.startup_lock_path)
        if not _flock(startup, fcntl.LOCK_EX, STARTUP_PATIENCE):
            os.close(startup)
            raise DataDirLocked(
                f"another shellserver node has been starting on {self.path.path} for "
                f"{STARTUP_PATIENCE:.0f} s; try again when it has started"
            )
        self._startup_fd = startup
        try:
            mine = self.node_lock_path(node)
            fd = self._open(mine)
            if not _flock(fd, fcntl.LOCK_EX, PROBE_PATIENCE):
                os.close(fd)
                raise DataDirLocked(
                    f"another shellserver node {node} is running on {self.path.path}"
                    f"{_pid_note(mine.path)}"
                )
            self._node_fd = fd
            shared = self._open(self.lock_path)
            # Exclusive for a moment tells "no one else here"; then shared, like every node.
            self.alone = _flock(shared, fcntl.LOCK_EX, 0)
            if not _flock(shared, fcntl.LOCK_SH, PROBE_PATIENCE):
                os.close(shared)
                raise DataDirLocked(
                    f"a shellserver that is not clustered is running on {self.path.path}"
                    f"{_pid_note(self.lock_path.path)}; stop it first"
                )
            self._lock_fd = shared
        except BaseException:
            self.unlock()
            raise

    def end_startup(self) -> None:
        """The node has started (store migrated, first admin made): the next may start."""
        if self._startup_fd is not None:
            fcntl.flock(self._startup_fd, fcntl.LOCK_UN)
            os.close(self._startup_fd)
            self._startup_fd = None

    def _open(self, path: FilePath[str]) -> int:
        return os.open(path.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write_pid(self) -> None:
        """Record our pid in our lock (again after twistd forks to daemonise).

        A node writes its own ``node-NAME.lock``: the shared lock belongs to no one node.
        """
        fd = self._node_fd if self.node is not None else self._lock_fd
        if fd is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def unlock(self) -> None:
        """Give every lock back (the service's stop, the CLI when done, a failed claim), so the
        next server or CLI need not wait for this process to exit."""
        self.end_startup()
        for name in ("_lock_fd", "_node_fd"):
            fd = getattr(self, name)
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                setattr(self, name, None)

    # -- asking ----------------------------------------------------------------------

    def is_locked(self) -> bool:
        """Does a server or any node hold the directory? (The CLI asks before touching the store.)

        An exclusive probe: it conflicts with a server alone and with every node's shared lock.
        """
        return _held(self.lock_path.path, fcntl.LOCK_EX)

    def running_nodes(self) -> list[str]:
        """The names of the clustered nodes running on this data dir, sorted."""
        try:
            names = os.listdir(self.path.path)
        except OSError:
            return []
        nodes = []
        for name in names:
            if name.startswith(_NODE_LOCK_PREFIX) and name.endswith(_NODE_LOCK_SUFFIX):
                node = name[len(_NODE_LOCK_PREFIX) : -len(_NODE_LOCK_SUFFIX)]
                if node and _held(self.path.child(name).path, fcntl.LOCK_SH):
                    nodes.append(node)
        return sorted(nodes)

    def write_secret(self, target: FilePath[str], text: str) -> None:
        """Write a 0600 file that is never seen half-written or with a wider mode."""
        tmp = target.sibling(f".{target.basename()}.{os.getpid()}.tmp")
        fd = os.open(tmp.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp.path, target.path)
