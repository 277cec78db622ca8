"""Homes as the reactor sees them: file work handed to the I/O pool, one job per home at a time.

A command never touches the disk on the reactor thread. It hands a job (a
plain function over the home's :class:`~shellserver.files.tree.Tree`) to
:meth:`Home.run`, which queues it behind the home's earlier jobs and runs it
on the I/O pool. Jobs of one home are serialised, so a quota check and the
write it allows are one step even with 80 sessions of the user writing at
once; jobs of different homes run side by side on the pool's threads.

``userdel`` is all-or-nothing: the home is first renamed into ``<data>/trash``
(a name no user can reach), then the account row is deleted (or, if that
fails, the home renamed back), then the tree is removed on the pool.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from shellserver.files import shared, walk
from shellserver.files.sandbox import (
    EACCES,
    EDQUOT,
    EISDIR,
    ENOENT,
    ENOSPC,
    ENOTDIR,
    FsError,
    Refusal,
    from_os,
)
from shellserver.files.tree import Tree
from shellserver.ops.threads import Runner
from shellserver.text.sanitize import careful_lines

__all__ = [
    "EACCES",
    "EDQUOT",
    "EISDIR",
    "ENOENT",
    "ENOSPC",
    "ENOTDIR",
    "FsError",
    "Home",
    "Homes",
    "Refusal",
]

log = Logger()
T = TypeVar("T")
PLAN_LIMIT = 4096
#: The disk being full is logged at most this often (seconds).
NOSPACE_LOG_INTERVAL = 60.0


@define(eq=False)
class Home:
    """One user's home: the queue its file work waits in, and its tree."""

    homes: Homes
    tree: Tree
    lock: DeferredLock = field(factory=DeferredLock)

    @property
    def user(self) -> str:
        """The owner's name, taken from the tree so the two can never disagree after
        :meth:`Homes.home` replaces a tree for a new quota."""
        return self.tree.user

    async def run(self, job: Callable[..., T], *args: Any) -> T:
        """``job(tree, *args)`` on the I/O pool, after this home's earlier jobs."""
        if self.homes.shared:  # other nodes may work on this home too
            return await self._queued(shared.run_shared, self.homes.locks, self.tree, job, *args)
        return await self._queued(job, self.tree, *args)

    async def measure(self) -> None:
        """The usage read from the disk again, as a job behind this home's earlier ones."""
        if self.homes.shared:  # and the other nodes told when it was not what they knew
            await self._queued(shared.measure_again, self.homes.locks, self.tree)
        else:
            await self._queued(Tree.measure_again, self.tree)

    async def _queued(self, f: Callable[..., T], *args: Any) -> T:
        """``f(*args)`` on the I/O pool, holding this home's queue."""
        await self.lock.acquire()
        try:
            result: T = await self.homes.run_io(f, *args)
            return result
        except OSError as e:  # one the job did not expect (an operator's chmod): still one line
            log.warn("file work for {user} failed: {error}", user=self.user, error=e)
            raise from_os(e) from None
        finally:
            if self.tree.out_of_space:
                self.tree.out_of_space = False
                self.homes.note_out_of_space()
            self.lock.release()

    async def io(self, f: Callable[..., T], *args: Any) -> T:
        """``f(*args)`` on the pool without the home's queue (reading an open descriptor)."""
        result: T = await self.homes.run_io(f, *args)
        return result


@define(eq=False)
class Homes:
    """All homes, under ``<data>/home``; their temp files in ``<data>/tmp``, removed
    homes in ``<data>/trash`` until they are gone.

    With ``inside`` (``--homes DIR``: the root may be a mount point of a shared
    filesystem), those live in the root itself as ``.tmp``, ``.trash`` and
    ``.locks``: on the homes' filesystem, so a rename into a home never crosses
    filesystems, and shared with the other machines, so their locks meet. No
    user name starts with a dot, and ``~other`` is never expanded, so no user
    path reaches them.
    """

    root: FilePath[str]
    quota: int
    run_io: Runner
    clock: Any = None
    #: Other processes (clustered nodes on this data dir) work on these homes too.
    shared: bool = field(default=False, kw_only=True)
    #: Temp files, trash and locks inside the root (``--homes``), not beside it.
    inside: bool = field(default=False, kw_only=True)
    _homes: dict[str, Home] = field(factory=dict)
    _nospace_logged: float | None = None

    def _aside(self, name: str) -> str:
        if self.inside:
            return os.path.join(self.root.path, "." + name)
        return os.path.join(os.path.dirname(self.root.path), name)

    @property
    def tmp(self) -> str:
        """Temp files for atomic replace and spilled output go in ``<data>/tmp``, beside the homes
        but outside every user's namespace, so a half-written file is never visible or counted in a
        home."""
        return self._aside("tmp")

    @property
    def trash(self) -> str:
        """Where userdel moves a home before deleting the account, a name no user path can reach,
        so the step can be undone by a rename if the account row cannot be deleted."""
        return self._aside("trash")

    @property
    def locks(self) -> str:
        """Shared homes' lock files (files/shared.py), outside every user's namespace."""
        return self._aside("locks" if self.inside else "homelocks")

    async def _changed(self, user: str) -> None:
        """The home was replaced or moved: other processes measure it again."""
        if self.shared:
            await self.run_io(shared.changed, self.locks, user)

    def home(self, user: str) -> Home:
        """The one :class:`Home` per user, so every session of that user shares one queue (the
        quota holds across them). A changed quota gets a fresh tree, measured again, but keeps the
        old queue so jobs already waiting stay serialised with new ones."""
        home = self._homes.get(user)
        if home is None or home.tree.quota != self.quota:
            tree = Tree(user, os.path.join(self.root.path, user), self.tmp, self.quota)
            if home is None:
                home = Home(self, tree)
            else:  # measured again at the new quota, but still behind the same queue
                tree.away = home.tree.away
                home = Home(self, tree, home.lock)
            self._homes[user] = home
        return home

    def measure_again(self, user: str) -> Deferred[None] | None:
        """Queue a new measurement of ``user``'s home: their first session is starting, and
        an operator may have put files there since the home was last measured.

        The job is queued at once, behind the home's earlier jobs and before any job
        the starting session can give, so its commands find the usage as the disk has
        it. A home not measured since the server started needs nothing: its first job
        measures it. Returns the job's Deferred (None when nothing was queued); a
        failure (no home yet, a planted link) is only logged, never the login's.
        """
        home = self._homes.get(user)
        if home is None or home.tree.usage is None:
            return None
        d = Deferred.fromCoroutine(home.measure())
        d.addErrback(_measure_failed, user)
        return d

    def note_out_of_space(self) -> None:
        """Log a full disk at most once a minute: every write on every home fails while the device
        is full, and one line per failed write would flood the log."""
        now = self.clock.seconds() if self.clock is not None else _monotonic()
        if self._nospace_logged is None or now - self._nospace_logged >= NOSPACE_LOG_INTERVAL:
            self._nospace_logged = now
            log.error("no space left on the device holding {root}", root=self.root.path)

    # -- accounts --------------------------------------------------------------------

    async def create(self, user: str) -> None:
        """A new account starts with an empty home: anything left under its name goes first.

        Raises OSError when the home cannot be made (the disk is full).
        """
        aside = await self.run_io(_move_aside, self.root.path, self.trash, user)
        self._homes.pop(user, None)
        if aside is not None:
            log.warn("removed a leftover home for new account {user}", user=user)
            await self.purge(aside)
        home = self.home(user)
        await home.lock.acquire()
        try:  # an OSError (disk full) stays one: the caller tells the user the service is down
            await self._changed(user)
            await self.run_io(Tree.open_home, home.tree)
        finally:
            home.lock.release()

    async def set_aside(self, user: str) -> str | None:
        """First step of userdel: the home moves to the trash (under the home's queue).

        Until :meth:`restore` the home is away: the user's sessions, still
        logged in while the account is deleted, find nothing there and make
        nothing (a home made again meanwhile would be left behind, or would
        stop the old one from coming back).
        """
        home = self.home(user)
        await home.lock.acquire()
        try:
            aside: str | None = await self.run_io(_move_aside, self.root.path, self.trash, user)
            home.tree.usage = None
            home.tree.away = True
            await self._changed(user)
        finally:
            home.lock.release()
        return aside

    async def restore(self, user: str, aside: str | None) -> None:
        """Undo :meth:`set_aside` (the account could not be deleted after all)."""
        if aside is not None:
            await self.run_io(os.rename, aside, os.path.join(self.root.path, user))
            await self._changed(user)
        self.home(user).tree.away = False

    async def purge(self, aside: str | None) -> None:
        """Last step of userdel: the moved tree is removed on the pool; failures are logged."""
        if aside is None:
            return
        try:
            await self.run_io(_remove_any, aside)
        except OSError as e:
            log.error("could not remove {path}: {error}", path=aside, error=e)

    # The same steps in this thread, for the CLI with the server stopped.

    def set_aside_now(self, user: str) -> str | None:
        """:meth:`set_aside` for the CLI's offline userdel: it holds the data dir's lock, so no
        server runs and no queue or pool is needed."""
        return _move_aside(self.root.path, self.trash, user)

    def restore_now(self, user: str, aside: str | None) -> None:
        """:meth:`restore` for the CLI with the server stopped: the account could not be deleted,
        so the home comes back under its name."""
        if aside is not None:
            os.rename(aside, os.path.join(self.root.path, user))

    def purge_now(self, aside: str | None) -> None:
        """:meth:`purge` for the CLI with the server stopped; errors propagate, since the operator
        at the terminal should see them."""
        if aside is not None:
            _remove_any(aside)

    async def plan(self, user: str) -> str | None:
        """``finger``'s ``Plan:`` block from the user's ``~/.plan``: read as a queued job like any
        file command, capped and sanitised because the user wrote it and another user's terminal
        shows it; any failure is just ``No Plan.``, as finger says."""
        home = self.home(user)
        try:
            data = await home.run(Tree.read, [".plan"], PLAN_LIMIT)
        except (FsError, OSError):
            return "No Plan."
        text = careful_lines(data[:PLAN_LIMIT].decode("utf-8", "surrogateescape"))
        return "Plan:\n" + text.rstrip("\n")


def _measure_failed(failure: Failure, user: str) -> None:
    if failure.check(FsError) is None:  # FsError: no home (the first job makes it), a link
        log.failure("measuring the home of {user} failed", failure, user=user)


def _monotonic() -> float:
    import time

    return time.monotonic()


def _move_aside(root: str, trash: str, user: str) -> str | None:
    """Rename ``root/user`` (whatever it is) into the trash; None if there was nothing."""
    path = os.path.join(root, user)
    if not os.path.lexists(path):
        return None
    os.makedirs(trash, mode=0o700, exist_ok=True)
    aside = os.path.join(trash, f"{user}.{uuid.uuid4().hex}")
    os.rename(path, aside)
    return aside


def _remove_any(path: str) -> None:
    if stat.S_ISDIR(os.lstat(path).st_mode):
        walk.remove_tree(path)
    else:
        os.unlink(path)
