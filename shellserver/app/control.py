"""The control socket: AMP commands an operator's ``shellserver`` CLI sends to the server.

File permissions are the authentication (the socket is 0600 inside a 0700
data dir). The peer's user and pid (SO_PEERCRED) are what the admin log
records as "who" and "from where".
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import struct
from datetime import datetime
from typing import TYPE_CHECKING, Any

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

from shellserver.app.config import Config
from shellserver.hub.local import IHub
from shellserver.ops.bans import BadBan
from shellserver.ops.bans import Ban as BanRecord
from shellserver.shell import adminops
from shellserver.shell import shutdown as shutdown_
from shellserver.shell.bans import Bans as BanService
from shellserver.shell.parking import Restart
from shellserver.shell.shutdown import invalid_time, parse_when
from shellserver.store.accounts import (
    ROLE_ADMIN,
    ROLE_USER,
    Account,
    AccountStore,
    LastAdmin,
    NoSuchUser,
    UserExists,
    username_problem,
)
from shellserver.store.audit import AuditQuery, record_dict
from shellserver.store.backup import BackupError, backup_store
from shellserver.store.bans import TooManyBans
from shellserver.text.durations import MAX_DURATION
from shellserver.wires.ssh.authkeys import AddKeyRefused

if TYPE_CHECKING:
    from shellserver.wires.ssh.setup import SSHControl

#: AMP values are at most 65,535 bytes; larger answers and uploads go in pages of this size.
PAGE = 60_000


@frozen
class Controlled:
    """What the control socket acts on, given by the assembly: the operator's CLI reaches
    the same admin operations and the same shutdown as an admin's session."""

    config: Config
    clock: IReactorTime
    hub: IHub
    store: AccountStore
    shutdown: shutdown_.Shutdown
    admin: adminops.Admin
    bans: BanService
    #: When the server started (``status``'s uptime).
    started: float
    #: ``restart`` and ``drain``: park every session, then stop.
    restart: Restart


class BadRequest(Exception):
    """The request cannot be done as asked (a bad name, an empty wall, no batch); it crosses AMP as
    BAD_REQUEST and its text is what the CLI prints.
    """


class NoShutdown(Exception):
    """Nothing to cancel, or this server cannot schedule a shutdown: a state of the server rather
    than a fault in the request, hence its own AMP code.
    """


_ERRORS: dict[type[Exception], bytes] = {
    UserExists: b"USER_EXISTS",
    NoSuchUser: b"NO_SUCH_USER",
    LastAdmin: b"LAST_ADMIN",
    BadRequest: b"BAD_REQUEST",
    NoShutdown: b"NO_SHUTDOWN",
    BackupError: b"BACKUP_FAILED",
}


class Status(amp.Command):
    """Everything ``shellserver status`` prints, in one round trip; the cluster and SSH fields are
    optional, so a server without them answers as it always did.
    """

    arguments = []
    response = [
        (b"pid", amp.Integer()),
        (b"uptime", amp.Float()),
        (b"sessions", amp.Integer()),
        (b"users", amp.Integer()),
        (b"hostname", amp.Unicode()),
        (b"shutdown_at", amp.Float(optional=True)),
        (b"ssh_keys", amp.ListOf(amp.Unicode(), optional=True)),
        # Clustered: this node's name and the live nodes' (none while Redis is unreachable).
        (b"node", amp.Unicode(optional=True)),
        (b"nodes", amp.ListOf(amp.Unicode(), optional=True)),
    ]


class Wall(amp.Command):
    """wall from the operator's shell, through the same adminops as a session's wall; answers how
    many sessions it reached, which the CLI prints.
    """

    arguments = [(b"text", amp.Unicode())]
    response = [(b"reached", amp.Integer())]
    errors = _ERRORS


class Who(amp.Command):
    """A page of the JSON document; offset 0 takes a fresh snapshot."""

    arguments = [(b"offset", amp.Integer())]
    response = [(b"chunk", amp.String()), (b"total", amp.Integer())]


class Kick(amp.Command):
    """kick from the operator's shell, through the same adminops as in a session; answers the
    number of sessions ended, 0 meaning the user was not logged in.
    """

    arguments = [(b"user", amp.Unicode()), (b"reason", amp.Unicode())]
    response = [(b"sessions", amp.Integer())]


class RestartNode(amp.Command):
    """``restart`` (a server alone or a node) or ``drain`` (a node of a cluster): every session
    parked in the store, then the process stops with status 0; answers how many were parked."""

    arguments = [(b"drain", amp.Boolean())]
    response = [(b"parked", amp.Integer())]
    errors = _ERRORS


class Shutdown(amp.Command):
    """``when`` as typed (``+MIN``, ``now``, ``HH:MM``), read in the server's clock and time
    zone; ``minutes`` is the older form of ``+MIN``."""

    arguments = [
        (b"minutes", amp.Integer(optional=True)),
        (b"when", amp.Unicode(optional=True)),
        (b"text", amp.Unicode()),
        (b"cancel", amp.Boolean()),
    ]
    response = [(b"at", amp.Float(optional=True))]
    errors = _ERRORS


class UserAdd(amp.Command):
    """useradd with a password the CLI has already read and checked, so the server never prompts;
    USER_EXISTS and BAD_REQUEST come back as the CLI's one-line refusals.
    """

    arguments = [(b"name", amp.Unicode()), (b"password", amp.Unicode()), (b"admin", amp.Boolean())]
    response = []
    errors = _ERRORS


class Passwd(amp.Command):
    """An operator's password reset: no current password is asked, as for root's ``passwd USER``;
    the socket's file permissions already prove who is calling.
    """

    arguments = [(b"name", amp.Unicode()), (b"password", amp.Unicode())]
    response = []
    errors = _ERRORS


class UserDel(amp.Command):
    """userdel from the operator's shell: the same all-or-nothing path as in a session, and
    LAST_ADMIN when it would remove the last administrator.
    """

    arguments = [(b"name", amp.Unicode())]
    response = []
    errors = _ERRORS


class Lock(amp.Command):
    """``lock`` (``locked``) or ``unlock`` an account, as the session commands do."""

    arguments = [(b"name", amp.Unicode()), (b"locked", amp.Boolean())]
    response = []
    errors = _ERRORS


class OtpReset(amp.Command):
    """``otp-reset``: remove an account's second factor, as the session's ``otp reset`` does;
    ``removed`` is false when it had none."""

    arguments = [(b"name", amp.Unicode())]
    response = [(b"removed", amp.Boolean())]
    errors = _ERRORS


class AddKey(amp.Command):
    """Append one public key line to USER's ~/.ssh/authorized_keys; answers its fingerprint."""

    arguments = [(b"name", amp.Unicode()), (b"key", amp.String())]
    response = [(b"fingerprint", amp.Unicode())]
    errors = _ERRORS


class Mute(amp.Command):
    """``mute`` from the operator's shell: the same path as in a session; ``seconds`` from now,
    an empty ``reason`` for none. Answers when the mute ends, NO_SUCH_USER for no account."""

    arguments = [(b"user", amp.Unicode()), (b"seconds", amp.Float()), (b"reason", amp.Unicode())]
    response = [(b"until", amp.Float())]
    errors = _ERRORS


class Unmute(amp.Command):
    """``unmute``; ``ended`` is False when the user was not muted."""

    arguments = [(b"user", amp.Unicode())]
    response = [(b"ended", amp.Boolean())]
    errors = _ERRORS


class Audit(amp.Command):
    """A page of the ``audit --json`` document; offset 0 runs the query (the rest page through
    that same answer, as ``Who`` does)."""

    arguments = [
        (b"offset", amp.Integer()),
        (b"since", amp.Float(optional=True)),
        (b"actor", amp.Unicode(optional=True)),
        (b"target", amp.Unicode(optional=True)),
        (b"limit", amp.Integer()),
    ]
    response = [(b"chunk", amp.String()), (b"total", amp.Integer())]
    errors = _ERRORS


class NewUsersPage(amp.Command):
    """Upload one page of a JSON list of [name, hash, role|null]; "" starts a new batch."""

    arguments = [(b"batch", amp.Unicode()), (b"page", amp.String())]
    response = [(b"batch", amp.Unicode())]
    errors = _ERRORS


class NewUsersCommit(amp.Command):
    """The end of a newusers upload: the pages are applied as one transaction, so a batch goes in
    whole or not at all; answers how many accounts were created and updated.
    """

    arguments = [(b"batch", amp.Unicode())]
    response = [(b"created", amp.Integer()), (b"updated", amp.Integer())]
    errors = _ERRORS


class Backup(amp.Command):
    """Copy the store to ``path`` (absolute, written by the server) with SQLite's online backup."""

    arguments = [(b"path", amp.Unicode()), (b"force", amp.Boolean())]
    response = [(b"size", amp.Integer())]
    errors = _ERRORS


class Ban(amp.Command):
    """``ban TARGET [DURATION] [REASON...]`` as the session's command reads its words; answers
    the same ``banned ... until ...`` line. A bad target or duration is BAD_REQUEST."""

    arguments = [(b"words", amp.ListOf(amp.Unicode()))]
    response = [(b"answer", amp.Unicode())]
    errors = _ERRORS


class Unban(amp.Command):
    """Lift a ban; ``target`` comes back canonical, "" when it was not banned."""

    arguments = [(b"target", amp.Unicode())]
    response = [(b"target", amp.Unicode())]
    errors = _ERRORS


class Bans(amp.Command):
    """A page of the bans' JSON document (``bans --json``); offset 0 takes a fresh snapshot."""

    arguments = [(b"offset", amp.Integer())]
    response = [(b"chunk", amp.String()), (b"total", amp.Integer())]


def bans_document(bans: list[BanRecord]) -> dict[str, Any]:
    """The stable ``bans --json`` schema (docs/admin.md): one object per ban, times as RFC 3339,
    ``until`` null for a permanent ban."""
    return {
        "bans": [
            {
                "target": ban.target,
                "kind": ban.kind,
                "by": ban.by,
                "when": rfc3339(ban.created),
                "until": None if ban.expires is None else rfc3339(ban.expires),
                "reason": ban.reason,
            }
            for ban in bans
        ]
    }


def rfc3339(when: float) -> str:
    """Local time with the offset as RFC 3339 writes it: ``2026-11-26T11:28:57+00:00``."""
    return datetime.fromtimestamp(when).astimezone().isoformat(timespec="seconds")


def who_document(server: Controlled, sessions: list[Any]) -> dict[str, Any]:
    """The stable ``who --json`` schema (docs/admin.md); clustered, with the live ``nodes``."""
    now = server.clock.seconds()
    document: dict[str, Any] = {
        "sessions": [
            {
                "user": s.user,
                "tty": s.tty,
                "role": s.role,
                "login": rfc3339(s.login_time),
                "idle_s": int(s.idle(now)),
                "mesg": s.mesg,
                "peer": s.peer,
                "term": s.term,
                "node": s.node or server.config.node,
                "detached": s.detached,
            }
            for s in sessions
        ]
    }
    if server.config.cluster is not None:
        document["nodes"] = server.hub.nodes()
    return document


class ControlProtocol(amp.AMP):
    """One CLI call per connection: AMP responders over adminops, the caller named by SO_PEERCRED
    for the admin log. It keeps only per-connection state (a ``who`` snapshot, a newusers upload),
    so two operators never see each other's pages.
    """

    def __init__(self, server: Controlled, ssh: SSHControl | None = None) -> None:
        super().__init__()
        self.server = server
        self.ssh = ssh
        self._who = b""
        self._audit = b""
        self._bans = b""
        self._batch: list[bytes] = []

    # -- quiet connections ---------------------------------------------------------
    # AMP logs "connection established/lost" for every connection; each CLI call
    # is one connection, and the admin action it carries is what gets logged.

    def makeConnection(self, transport: Any) -> None:
        """Skips AMP's "connection established" line: each CLI call is a connection, and the admin
        action it carries is what is worth logging.
        """
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Skips AMP's "connection lost" line, as ``makeConnection`` skips its pair, and drops the
        transport as AMP does.
        """
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None

    # -- who is asking ---------------------------------------------------------

    def _caller(self) -> tuple[str, str]:
        """(who, where) for the admin log: the peer's OS user and pid, or its address."""
        transport: Any = self.transport
        try:
            sock = transport.getHandle()
            if sock.family == socket.AF_UNIX:
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                pid, uid, _ = struct.unpack("3i", creds)
                try:
                    name = pwd.getpwuid(uid).pw_name
                except KeyError:
                    name = f"uid {uid}"
                return name, f"control socket, pid {pid}"
        except (AttributeError, OSError):
            pass
        peer = transport.getPeer() if transport is not None else None
        return "operator", f"control {getattr(peer, 'host', peer)}"

    # -- responders ----------------------------------------------------------------

    @Status.responder
    def status(self) -> dict[str, Any]:
        """Answered from memory (no store or Redis round trip), so a monitoring check may call it
        as often as it likes.
        """
        hub, shutdown = self.server.hub, self.server.shutdown
        result: dict[str, Any] = {
            "pid": os.getpid(),
            "uptime": self.server.clock.seconds() - self.server.started,
            "sessions": hub.counts()[0],
            "users": hub.counts()[1],
            "hostname": self.server.config.hostname,
        }
        if shutdown.at is not None:
            result["shutdown_at"] = shutdown.at
        if self.ssh is not None and self.ssh.fingerprints:
            result["ssh_keys"] = list(self.ssh.fingerprints)
        if self.server.config.cluster is not None:
            result["node"] = self.server.config.node
            result["nodes"] = hub.nodes()
        return result

    @Wall.responder
    async def wall(self, text: str) -> dict[str, Any]:
        """Empty text is refused here as well as in the CLI: any AMP client may call the socket,
        not only ours.
        """
        if not text.strip():
            raise BadRequest("no text to broadcast")
        who, where = self._caller()
        return {"reached": await adminops.wall(self.server.admin, who, "control", where, text)}

    @Who.responder
    async def who(self, offset: int) -> dict[str, Any]:
        """Offset 0 takes a snapshot and later offsets page through that same snapshot, so a list
        larger than one AMP value reads whole and consistent while sessions come and go.
        """
        if offset == 0:
            sessions = await self.server.hub.sessions()
            document = who_document(self.server, sessions)
            self._who = json.dumps(document, separators=(",", ":")).encode()
        return {"chunk": self._who[offset : offset + PAGE], "total": len(self._who)}

    @RestartNode.responder
    async def restart(self, drain: bool) -> dict[str, Any]:
        """A drain is for a node of a cluster (the others keep serving); a restart for any."""
        if drain and self.server.config.cluster is None:
            raise BadRequest("drain is for a node of a cluster; use restart")
        who, where = self._caller()
        what = "drain" if drain else "restart"
        return {"parked": await self.server.restart.restart(who, where, what)}

    @Kick.responder
    async def kick(self, user: str, reason: str) -> dict[str, Any]:
        """The caller's OS user is the name the kicked sessions are told of and the admin log
        records.
        """
        who, where = self._caller()
        return {"sessions": await adminops.kick(self.server.admin, who, where, user, reason)}

    @Ban.responder
    async def ban(self, words: list[str]) -> dict[str, Any]:
        """The caller's OS user is who the ended sessions are told of and the log records."""
        who, where = self._caller()
        try:
            made = await self.server.bans.ban(who, where, words)
        except (BadBan, TooManyBans) as e:
            raise BadRequest(str(e)) from None
        return {"answer": made.answer()}

    @Unban.responder
    async def unban(self, target: str) -> dict[str, Any]:
        """ "" when nothing was banned: the CLI says so and exits 1."""
        who, where = self._caller()
        try:
            lifted = await self.server.bans.unban(who, where, target)
        except BadBan as e:
            raise BadRequest(str(e)) from None
        return {"target": "" if lifted is None else lifted.target}

    @Bans.responder
    async def bans(self, offset: int) -> dict[str, Any]:
        """Paged as ``who`` is: up to 10,000 bans may not fit one AMP value."""
        if offset == 0:
            document = bans_document(await self.server.bans.listing())
            self._bans = json.dumps(document, separators=(",", ":")).encode()
        return {"chunk": self._bans[offset : offset + PAGE], "total": len(self._bans)}

    @Shutdown.responder
    async def shutdown(
        self, text: str, cancel: bool, minutes: int | None = None, when: str | None = None
    ) -> dict[str, Any]:
        """``when`` is parsed with the server's clock and time zone, so HH:MM means the server's
        time whatever the operator's shell says; ``minutes`` is kept for CLIs that send the older
        form.
        """
        schedule = self.server.shutdown
        who, where = self._caller()
        if cancel:
            if not schedule.cancel(who, "control", where):
                raise NoShutdown("no shutdown is scheduled")
            await self.server.admin.audit(who, where, "shutdown cancel")
            return {}
        delay: float | None = minutes
        if when is not None:
            delay = parse_when(when, self.server.clock.seconds())
            if delay is None:
                raise BadRequest(invalid_time(when))
        if delay is None or delay < 0:
            raise BadRequest("minutes must be 0 or more")
        # Recorded first: ``shutdown now`` stops the server right after scheduling.
        expires = self.server.clock.seconds() + delay * 60
        await self.server.admin.audit(who, where, "shutdown", None, text or None, expires)
        return {"at": schedule.schedule(delay, text, who, "control", where)}

    @UserAdd.responder
    async def useradd(self, name: str, password: str, admin: bool) -> dict[str, Any]:
        """The name is checked again here, since any AMP client may call the socket: a reserved or
        malformed name is never created.
        """
        problem = username_problem(name, registering=True)
        if problem is not None:
            raise BadRequest(problem)
        who, where = self._caller()
        role = ROLE_ADMIN if admin else ROLE_USER
        await adminops.add_user(self.server.admin, who, where, name, password, role)
        return {}

    @Passwd.responder
    async def passwd(self, name: str, password: str) -> dict[str, Any]:
        """Through adminops, so the first start's password file is retired when ``admin``'s
        password changes, exactly as after a session's passwd.
        """
        who, where = self._caller()
        await adminops.set_password(self.server.admin, who, where, name, password)
        return {}

    @UserDel.responder
    async def userdel(self, name: str) -> dict[str, Any]:
        """Through adminops, so the user is logged out and the home goes all or nothing, as for a
        session's userdel.
        """
        who, where = self._caller()
        await adminops.delete_user(self.server.admin, who, where, name)
        return {}

    @Lock.responder
    async def lock(self, name: str, locked: bool) -> dict[str, Any]:
        """``lock`` and ``unlock`` are one call (``locked``), as the session's pair share one path
        in adminops.
        """
        who, where = self._caller()
        await adminops.set_locked(self.server.admin, who, where, name, locked)
        return {}

    @OtpReset.responder
    async def otp_reset(self, name: str) -> dict[str, Any]:
        """Through adminops, logged as the session's ``otp reset`` is; an unknown account is
        NO_SUCH_USER, as for the other account commands."""
        who, where = self._caller()
        if await self.server.store.get(name) is None:
            raise NoSuchUser(name)
        return {"removed": await adminops.reset_otp(self.server.admin, who, where, name)}

    @AddKey.responder
    async def addkey(self, name: str, key: bytes) -> dict[str, Any]:
        """The SSH wire's own code parses and appends the key, as login reads it, so a key that
        could never match is refused now rather than at login; refused when this server serves no
        SSH.
        """
        if self.ssh is None:
            raise BadRequest("this server cannot add keys")
        if await self.server.store.get(name) is None:
            raise NoSuchUser(name)
        who, where = self._caller()
        try:
            fingerprint: str = await self.ssh.add_key(name, key)
        except AddKeyRefused as e:
            raise BadRequest(str(e)) from None
        adminops.admin_action(who, where, "addkey", user=name, key=fingerprint)
        await self.server.admin.audit(who, where, "addkey", name, fingerprint)
        return {"fingerprint": fingerprint}

    @Mute.responder
    async def mute(self, user: str, seconds: float, reason: str) -> dict[str, Any]:
        """Checked here as well as in the CLI, since any AMP client may call the socket."""
        if not seconds > 0 or seconds > MAX_DURATION:
            raise BadRequest(f"the duration must be more than 0 and at most {MAX_DURATION} s")
        if username_problem(user) is not None:
            raise NoSuchUser(user)
        who, where = self._caller()
        record = await adminops.mute(self.server.admin, who, where, user, seconds, reason or None)
        return {"until": record.until}

    @Unmute.responder
    async def unmute(self, user: str) -> dict[str, Any]:
        """``ended`` False: there was no mute to end (the CLI says so, exit 1)."""
        who, where = self._caller()
        return {"ended": await adminops.unmute(self.server.admin, who, where, user)}

    @Audit.responder
    async def audit(
        self,
        offset: int,
        limit: int,
        since: float | None = None,
        actor: str | None = None,
        target: str | None = None,
    ) -> dict[str, Any]:
        """The ledger's records, newest first, as one JSON document read in pages; the query is
        bounded (at most ``MAX_LIMIT`` records), so the answer held between pages is too."""
        if offset == 0:
            query = AuditQuery(since, actor, target, limit)
            found = await self.server.admin.ledger.records(query)
            document = {"records": [record_dict(r, rfc3339) for r in found]}
            self._audit = json.dumps(document, separators=(",", ":")).encode()
        return {"chunk": self._audit[offset : offset + PAGE], "total": len(self._audit)}

    @Backup.responder
    async def backup(self, path: str, force: bool) -> dict[str, Any]:
        """Runs on the database thread between two store calls, so the copy is consistent without
        stopping the server; the path must be absolute because the server's working directory is
        not the operator's.
        """
        if not os.path.isabs(path):
            raise BadRequest("the backup file must be an absolute path")
        who, where = self._caller()
        store = self.server.store
        # On the database thread: between two store calls, never alongside one.
        size: int = await store.run_db(backup_store, store.db.path, path, force)
        adminops.admin_action(who, where, "backup", file=path, size=size)
        await self.server.admin.audit(who, where, "backup", None, path)
        return {"size": size}

    @NewUsersPage.responder
    def newusers_page(self, batch: str, page: bytes) -> dict[str, Any]:
        """An AMP value holds at most 64 KiB, so the upload comes in pages; a batch over 256 MiB is
        dropped and refused, so an upload cannot fill the server's memory.
        """
        if not batch:
            self._batch = []
        elif batch != "open":
            raise BadRequest("unknown batch")
        self._batch.append(page)
        if sum(map(len, self._batch)) > 256 * 1024 * 1024:
            self._batch = []
            raise BadRequest("batch too large")
        return {"batch": "open"}

    @NewUsersCommit.responder
    async def newusers_commit(self, batch: str) -> dict[str, Any]:
        """Every entry is checked before anything is written and the store applies the batch in one
        transaction: one bad entry leaves the store as it was. The hashes were made by the CLI, so
        the server does no hashing for the batch.
        """
        if batch != "open" or not self._batch:
            raise BadRequest("no batch was uploaded")
        raw, self._batch = b"".join(self._batch), []
        try:
            entries = [
                (str(n), str(h), None if r is None else str(r)) for n, h, r in json.loads(raw)
            ]
        except (ValueError, TypeError) as e:
            raise BadRequest(f"malformed batch: {e}") from None
        for number, (name, _, _) in enumerate(entries, start=1):
            problem = username_problem(name, registering=True)
            if problem is not None:
                raise BadRequest(f"entry {number}: {problem}")
        who, where = self._caller()
        created = await self.server.store.apply_batch(entries)
        now = self.server.clock.seconds()
        roles = {name: role or ROLE_USER for name, _, role in entries}
        for name in created:
            await self.server.admin.account_created(
                Account(name, roles[name], False, now), who, where
            )
        adminops.admin_action(who, where, "newusers", created=len(created), total=len(entries))
        summary = f"{len(created)} created, {len(entries) - len(created)} updated"
        await self.server.admin.audit(who, where, "newusers", None, summary)
        return {"created": len(created), "updated": len(entries) - len(created)}


class ControlFactory(Factory):
    """Builds one ``ControlProtocol`` per CLI call; ``noisy`` is off for the same reason the
    protocol's connections are quiet.
    """

    noisy = False

    def __init__(self, server: Controlled, ssh: SSHControl | None = None) -> None:
        self.server = server
        self.ssh = ssh

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        """Twisted's default calls the protocol class with no arguments; the control protocol needs
        the parts it answers from.
        """
        protocol = ControlProtocol(self.server, self.ssh)
        protocol.factory = self
        return protocol
