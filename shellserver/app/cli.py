"""``shellserver``: the operator's command line, talking to the running server's control socket.

Account commands also work with the server stopped: they then take the data
dir's lock (so a server cannot start half-way through) and change the store
directly. Exit codes: 0 done, 1 refused, 2 usage, 3 server not reachable.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import pwd
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn

from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.internet.error import ConnectError
from twisted.logger import Logger, textFileLogObserver
from twisted.protocols import amp
from twisted.python.filepath import FilePath

from shellserver import __version__
from shellserver.app import control
from shellserver.app.config import DATA_ENV, default_data, default_hostname, parse_node
from shellserver.files.homefs import Homes
from shellserver.ops.bans import BadBan, Ban
from shellserver.ops.datadir import DataDir, DataDirLocked
from shellserver.ops.threads import inline_runner
from shellserver.shell.bans import bans_table, check_target, read_ban
from shellserver.shell.shutdown import invalid_time, parse_when
from shellserver.store import audit
from shellserver.store import bans as store_bans
from shellserver.store.accounts import (
    INITIAL_ADMIN,
    ROLE_ADMIN,
    ROLE_USER,
    AccountDB,
    LastAdmin,
    NoSuchUser,
    StoreError,
    UserExists,
    password_problem,
    username_problem,
)
from shellserver.store.backup import BackupError, backup_store
from shellserver.store.mutes import clear_mute, set_mute
from shellserver.store.otp import OtpDB
from shellserver.store.passwords import MAX_COST, MIN_COST, hash_password
from shellserver.text.durations import DURATION_FORMS, format_until, parse_duration
from shellserver.text.sanitize import careful
from shellserver.text.timefmt import format_idle, format_uptime
from shellserver.text.words import counted
from shellserver.wires.ssh import authkeys

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
OFFLINE_COMMANDS = frozenset(
    {
        "useradd",
        "newusers",
        "passwd",
        "userdel",
        "lock",
        "unlock",
        "addkey",
        "backup",
        "mute",
        "unmute",
        "audit",
        "ban",
        "unban",
        "bans",
        "otp-reset",
    }
)
BAN_COMMANDS = frozenset({"ban", "unban", "bans"})
DEFAULT_COST = 14


class Failed(Exception):
    """Every way a CLI call ends short, with its exit code (1 refused, 2 usage, 3 server not
    reachable), so a script can tell a refusal from a typo or a server that is down; main prints it
    as one line on stderr, never a traceback.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def refuse(message: str) -> Failed:
    """The commonest failure (exit 1) as a value to raise, keeping each raise site on one line."""
    return Failed(REFUSED, message)


def parser() -> argparse.ArgumentParser:
    """One argparse parser for every subcommand: usage errors exit 2, the USAGE code, and
    ``--help`` lists the commands. The subcommands and their flags follow the session's commands
    and shadow-utils, so an operator's habits carry over.
    """
    p = argparse.ArgumentParser(prog="shellserver", description="Control a running shellserver.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "--data",
        default=default_data(),
        help=f"the server's data directory [default: %(default)s; ${DATA_ENV} sets it]",
    )
    p.add_argument(
        "--homes",
        metavar="DIR",
        help="where the homes live [default: what the server last ran with on DATA, "
        "else DATA/home]",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--control",
        help="control endpoint [default: unix:DATA/control.sock, or the running node's "
        "unix:DATA/control-NODE.sock]",
    )
    where.add_argument(
        "--node",
        metavar="NAME",
        help="the clustered node to talk to, through unix:DATA/control-NAME.sock "
        "[default: the only node running]",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help="is it running? pid, uptime, sessions, users")
    s = sub.add_parser("wall", help="broadcast TEXT to every session")
    s.add_argument("text", nargs="+")
    s = sub.add_parser("who", help="list sessions")
    s.add_argument("--json", action="store_true", help="one JSON object (see docs/admin.md)")
    s = sub.add_parser("kick", help="end all of USER's sessions")
    s.add_argument("user")
    s.add_argument("--reason", default="no reason given")
    sub.add_parser(
        "restart",
        help="park every session in the store and stop (status 0) for the supervisor to start "
        "the server again; the sessions are then resumable",
    )
    sub.add_parser(
        "drain",
        help="restart for one node of a cluster (--node NAME): its sessions are resumable on "
        "any node",
    )
    s = sub.add_parser("shutdown", help="shutdown [+MIN|now|HH:MM] [TEXT], or shutdown -c")
    s.add_argument("-c", dest="cancel", action="store_true", help="cancel a scheduled shutdown")
    s.add_argument("words", nargs="*", metavar="[+MIN|now|HH:MM] [TEXT]")
    s = sub.add_parser("useradd", help="create an account")
    s.add_argument("name")
    s.add_argument("--admin", action="store_true")
    s.add_argument("--password-stdin", action="store_true")
    s = sub.add_parser("newusers", help="create or update accounts from name:password[:admin]")
    s.add_argument("--hash-cost", type=int, default=DEFAULT_COST)
    s = sub.add_parser("passwd", help="set an account's password")
    s.add_argument("name")
    s.add_argument("--password-stdin", action="store_true")
    s = sub.add_parser("userdel", help="delete an account (its sessions are logged out)")
    s.add_argument("name")
    s = sub.add_parser("lock", help="lock an account (its sessions are logged out)")
    s.add_argument("name")
    s = sub.add_parser("unlock", help="unlock a locked account")
    s.add_argument("name")
    s = sub.add_parser("otp-reset", help="remove an account's second factor (TOTP)")
    s.add_argument("name")
    s = sub.add_parser("addkey", help="add the SSH public key on stdin to USER's authorized_keys")
    s.add_argument("name", metavar="USER")
    s = sub.add_parser(
        "ban",
        help="ban TARGET [DURATION] [REASON...]: a user, address, network or SHA256: key "
        "fingerprint, for 90s, 30m, 12h, 7d or perm (the default)",
    )
    s.add_argument("words", nargs="+", metavar="TARGET [DURATION] [REASON...]")
    s = sub.add_parser("unban", help="lift the ban of TARGET")
    s.add_argument("target")
    s = sub.add_parser("bans", help="list the bans: target, by, when, until, reason")
    s.add_argument("--json", action="store_true", help="one JSON object (see docs/admin.md)")
    s = sub.add_parser("backup", help="copy the store to FILE (SQLite online backup)")
    s.add_argument("file", help="written by the server while it runs: a path it may write")
    s.add_argument("--force", action="store_true", help="replace FILE if it exists")
    s = sub.add_parser("store", help="store copy --to postgresql://…: the store into PostgreSQL")
    store = s.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    s = store.add_parser(
        "copy", help="copy the embedded store (server running or not) into empty PostgreSQL"
    )
    s.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="postgresql://USER[:PASS]@HOST[:PORT]/DB[?sslmode=...] (PGPASSWORD and "
        "~/.pgpass are read as libpq reads them)",
    )
    s.add_argument("--force", action="store_true", help="replace what the database holds")
    s = sub.add_parser("mute", help="stop USER sending messages for DURATION (90s, 30m, 12h, 7d)")
    s.add_argument("name", metavar="USER")
    s.add_argument("duration", metavar="DURATION")
    s.add_argument("--reason", default="")
    s = sub.add_parser("unmute", help="end USER's mute")
    s.add_argument("name", metavar="USER")
    s = sub.add_parser("audit", help="the audit ledger of admin actions, newest first")
    s.add_argument(
        "--since", metavar="DURATION", help="only the last DURATION (90s, 30m, 12h, 7d)"
    )
    s.add_argument("--actor", metavar="NAME", help="only actions by NAME")
    s.add_argument("--target", metavar="NAME", help="only actions on NAME")
    s.add_argument("--json", action="store_true", help="one JSON object (see docs/admin.md)")
    s.add_argument(
        "--limit",
        type=int,
        default=audit.DEFAULT_LIMIT,
        help=f"at most this many records [default: %(default)s, at most {audit.MAX_LIMIT}]",
    )
    return p


# -- input ------------------------------------------------------------------------


def read_password(args: argparse.Namespace) -> str:
    """From stdin with --password-stdin, else twice from the terminal with echo off."""
    if args.password_stdin:
        try:
            password = sys.stdin.readline().rstrip("\r\n")
        except UnicodeDecodeError:
            raise refuse("the password on standard input is not valid UTF-8") from None
    else:
        if not sys.stdin.isatty():
            raise Failed(USAGE, "no terminal to ask for the password; use --password-stdin")
        password = getpass.getpass("New password: ")
        if getpass.getpass("Retype new password: ") != password:
            raise refuse("passwords do not match")
    problem = password_problem(password)
    if problem is not None:
        raise refuse(problem)
    return password


def read_key() -> bytes:
    """The public key line on standard input (``shellserver addkey USER < key.pub``)."""
    if sys.stdin.isatty():
        raise Failed(USAGE, "give the public key on standard input: addkey USER < key.pub")
    data = sys.stdin.buffer.read(authkeys.MAX_KEY_LINE + 1)
    if len(data) > authkeys.MAX_KEY_LINE:
        raise refuse("standard input is larger than 16 KiB; expected one public key line")
    return data


def read_newusers(cost: int) -> list[tuple[str, str, str | None]]:
    """Lines ``name:password[:admin]`` (newusers(8)); any bad line refuses the whole file."""
    if not MIN_COST <= cost <= MAX_COST:
        raise Failed(USAGE, f"--hash-cost takes {MIN_COST} to {MAX_COST}")
    entries: list[tuple[str, str, str | None]] = []
    seen: set[str] = set()
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise refuse(f"line {number}: not valid UTF-8") from None
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) not in (2, 3):
            raise refuse(f"line {number}: expected name:password[:admin]")
        name, password = parts[0], parts[1]
        role_field = parts[2] if len(parts) == 3 else ""
        problem = username_problem(name, registering=True) or password_problem(password)
        if role_field not in ("", ROLE_ADMIN, ROLE_USER):
            problem = f"unknown role {role_field!r} (use admin or user)"
        if name in seen:
            problem = f"{name} appears twice"
        if problem is not None:
            raise refuse(f"line {number}: {problem}")
        seen.add(name)
        entries.append((name, hash_password(password, cost), role_field or None))
    if not entries:
        raise refuse("no users on standard input")
    return entries


# -- offline: the server is not running ---------------------------------------------


def operator() -> str:
    """The OS user running the CLI, the "who" of the admin log for a change made with the server
    stopped (there is no peer to ask, as the control socket asks SO_PEERCRED); a uid with no passwd
    entry, as in a container, still gets a name.
    """
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


@contextmanager
def held(datadir: DataDir, existing: bool = False) -> Iterator[None]:
    """The data dir claimed for a change made with the server stopped (no server starts
    meanwhile), and let go after it; ``existing``: there must be a store already (a backup, the
    ledger), else the data dir is made as a server would make it."""
    if existing:
        if not datadir.db_path.exists():
            raise refuse(f"there is no store at {datadir.db_path.path}")
    else:
        datadir.create()
    try:
        datadir.lock()
    except DataDirLocked:
        raise Failed(UNREACHABLE, "the server is starting; try again in a moment") from None
    try:
        yield
    finally:
        datadir.unlock()


def backup_offline(args: argparse.Namespace, datadir: DataDir) -> str:
    """Copy the store of a stopped server, holding the lock so none starts meanwhile."""
    with held(datadir, existing=True):
        try:
            size = backup_store(datadir.db_path.path, args.file, args.force)
        except BackupError as e:
            raise refuse(str(e)) from None
    return f"store copied to {args.file} ({counted(size, 'byte')})"


def store_copy(args: argparse.Namespace, datadir: DataDir) -> str:
    """``store copy --to URL``: the data dir's SQLite store (and its SSH host keys) into
    PostgreSQL, from one snapshot whether the server runs or not; the counts copied."""
    from shellserver.store.copy import copy_store
    from shellserver.store.postgres import PostgresAccountDB, parse_postgres_url
    from shellserver.wires.ssh.hostkeys import KINDS

    try:
        url = parse_postgres_url(args.to)
    except ValueError as e:
        raise Failed(USAGE, f"--to: {e}") from None
    source = datadir.db_path.path
    if not datadir.db_path.exists():
        raise refuse(f"there is no store at {source}")
    if not datadir.is_locked():  # stopped: bring an older store to this version first
        AccountDB.open(source).close()
    keys = {}
    for name, kind in KINDS:
        path = datadir.path.child("ssh").child(name)
        if path.isfile():
            keys[kind] = path.getContent()
    target = PostgresAccountDB.at(url, size=1)
    try:
        counts = copy_store(source, target, args.force, keys)
    finally:
        target.close()
    lines = [f"copied {source} to {url}:"]
    lines += [f"  {table}: {count}" for table, count in counts.items()]
    return "\n".join(lines)


def bans_offline(args: argparse.Namespace, datadir: DataDir) -> str:
    """ban, unban and bans on the store of a stopped server, holding the lock so none starts
    meanwhile; the next start reads them."""
    with held(datadir):
        db = AccountDB.open(datadir.db_path.path)
        try:
            now = time.time()
            if args.command == "bans":
                listed = store_bans.active_bans(db, now)
                if args.json:
                    return json.dumps(control.bans_document(listed))
                return bans_table(listed).rstrip("\n")
            if args.command == "ban":
                made = read_ban(args.words, operator(), now)
                try:
                    store_bans.add_ban(db, made)
                except store_bans.TooManyBans as e:
                    raise refuse(str(e)) from None
                result = made.answer()
                reason = made.reason or None
                offline_record(db, args, "ban", made.target, reason, made.expires)
            else:
                lifted = store_bans.remove_ban(db, args.target)
                if lifted is None:
                    raise refuse(f"{args.target} is not banned")
                result = f"unbanned {lifted.target}"
                offline_record(db, args, "unban", lifted.target)
        finally:
            db.close()
        log_offline(datadir, args.command, result)
        return result


def log_offline(datadir: DataDir, command: str, detail: str) -> None:
    """One line in ``<data>/admin.log`` for a change made with the server stopped: the server's
    own log is not there to take it."""
    with open(datadir.path.child("admin.log").path, "a", encoding="utf-8") as f:
        Logger(observer=textFileLogObserver(f)).info(
            "admin {command} by {who} (command line, server stopped): {detail}",
            command=command,
            who=operator(),
            detail=detail,
        )


def run_offline(args: argparse.Namespace, datadir: DataDir) -> str:
    """Change the store directly, holding the data dir's lock so no server starts meanwhile."""
    if args.command == "backup":
        return backup_offline(args, datadir)
    if args.command == "audit":
        return audit_offline(args, datadir)
    if args.command in BAN_COMMANDS:
        return bans_offline(args, datadir)
    password = read_password(args) if args.command in ("useradd", "passwd") else ""
    entries = read_newusers(args.hash_cost) if args.command == "newusers" else []
    key = read_key() if args.command == "addkey" else b""
    with held(datadir):
        db = AccountDB.open(datadir.db_path.path)
        homes = Homes(datadir.home_root, 0, inline_runner, inside=datadir.homes is not None)
        # userdel is all or nothing: the home moves aside first and comes back on failure;
        # a new account never inherits a leftover home.
        aside = homes.set_aside_now(args.name) if args.command == "userdel" else None
        try:
            try:
                if args.command == "addkey":
                    result, reason = _offline_addkey(args.name, db, datadir, key)
                elif args.command in ("mute", "unmute"):
                    result, reason = _offline_mute(args, db)
                else:
                    result = _offline_change(args, db, password, entries)
                    reason = offline_reason(args, result)
            except BaseException:
                if aside is not None:  # only userdel sets a home aside (newusers has no name)
                    homes.restore_now(args.name, aside)
                raise
            if args.command == "useradd":
                homes.purge_now(homes.set_aside_now(args.name))
            homes.purge_now(aside)
            target = None if args.command == "newusers" else args.name
            expires = args.until if args.command == "mute" else None
            action = "otp reset" if args.command == "otp-reset" else args.command
            offline_record(db, args, action, target, reason, expires)
        finally:
            db.close()
        detail = result
        if args.command in ("passwd", "userdel") and args.name == INITIAL_ADMIN:
            # The first start's password no longer opens the account: its file goes.
            spent = datadir.admin_password_path
            if spent.exists():
                spent.remove()
                detail += f"; removed {spent.path}"
        log_offline(datadir, args.command, detail)
        return result


def _offline_addkey(
    name: str, db: AccountDB, datadir: DataDir, key: bytes
) -> tuple[str, str | None]:
    if db.get(name) is None:
        raise refuse(f"user '{name}' does not exist")
    try:
        fingerprint = authkeys.add_key(datadir.home_root, name, key)
    except authkeys.AddKeyRefused as e:
        raise refuse(str(e)) from None
    return added_text(name, fingerprint), fingerprint


def _offline_mute(args: argparse.Namespace, db: AccountDB) -> tuple[str, str | None]:
    now = time.time()
    if args.command == "unmute":
        if not clear_mute(db, args.name, now):
            raise refuse(f"{args.name} is not muted")
        return f"unmuted {args.name}", None
    args.until = now + args.seconds
    try:
        set_mute(db, args.name, args.until, args.reason or None, operator(), now)
    except NoSuchUser:
        raise refuse(f"user '{args.name}' does not exist") from None
    return muted_text(args.name, args.until, args.reason, now), args.reason or None


def muted_text(name: str, until: float, reason: str, now: float) -> str:
    """``muted bob until 14:32 (spam)``: one wording whether the server runs or not."""
    return f"muted {name} until {format_until(until, now)}" + (f" ({reason})" if reason else "")


def offline_reason(args: argparse.Namespace, result: str) -> str | None:
    """The ledger's reason for an account change made with the server stopped: what the
    control socket records for the same change."""
    if args.command == "useradd" and args.admin:
        return "role admin"
    if args.command == "newusers":
        return result
    return None


def offline_record(
    db: AccountDB,
    args: argparse.Namespace,
    action: str,
    target: str | None = None,
    reason: str | None = None,
    expires: float | None = None,
) -> None:
    """One record in the audit ledger for a change made with the server stopped: by the
    operating system user running the CLI, from ``cli``, on the node :func:`offline_node`
    names. Called with the store open, after the change succeeded."""
    actor, node = operator(), offline_node(args)
    audit.append(db, time.time(), actor, audit.CLI, action, target, reason, expires, node)


def offline_node(args: argparse.Namespace) -> str:
    """The node named in the ledger for a change made with the server stopped: ``--node``, or
    the name a server started here without one would have (the host's)."""
    return str(args.node) if args.node is not None else default_hostname()


def audit_offline(args: argparse.Namespace, datadir: DataDir) -> str:
    """Read the ledger of a stopped server, holding the lock so none starts meanwhile."""
    with held(datadir, existing=True):
        db = AccountDB.open(datadir.db_path.path)
        try:
            found = audit.records(db, audit_query(args))
        finally:
            db.close()
    document = {"records": [audit.record_dict(r, control.rfc3339) for r in found]}
    return json.dumps(document) if args.json else audit_table(document)


def audit_query(args: argparse.Namespace) -> audit.AuditQuery:
    """The filters as the ledger takes them (``--since`` checked in ``check_arguments``)."""
    since = None if args.since_seconds is None else time.time() - args.since_seconds
    return audit.AuditQuery(since, args.actor, args.target, args.limit)


def audit_table(document: dict[str, Any]) -> str:
    """The records as a table, newest first; every field an admin typed is sanitised, since
    it reaches the operator's terminal."""
    rows = [
        f"{'TIME':<19} {'ACTOR':<12} {'FROM':<8} {'ACTION':<15} {'TARGET':<12} {'NODE':<10} REASON"
    ]
    for r in document["records"]:
        reason = careful(r["reason"] or "")
        if r["expires"] is not None:
            reason = (reason + " " if reason else "") + f"(until {_plain_time(r['expires'])})"
        rows.append(
            f"{_plain_time(r['time']):<19} {careful(r['actor']):<12} {careful(r['from']):<8} "
            f"{careful(r['action']):<15} {careful(r['target'] or '-'):<12} "
            f"{careful(r['node']):<10} {reason}".rstrip()
        )
    if len(rows) == 1:
        return "no audit records"
    return "\n".join(rows)


def _plain_time(stamp: str) -> str:
    """``2026-12-07 20:31:02`` from RFC 3339's ``2026-12-07T20:31:02+00:00``."""
    return stamp[:19].replace("T", " ")


def locked_text(args: argparse.Namespace) -> str:
    """``bob is locked``: what ``lock`` says in a session, without the command's name."""
    return f"{args.name} is {args.command}ed"


def otp_reset_text(name: str) -> str:
    """What ``otp-reset`` prints, running or stopped (the session's ``otp reset`` words)."""
    return f"second factor of {name} removed"


def no_second_factor(name: str) -> str:
    """``otp-reset`` of an account that has none: refused (exit 1), one wording both ways."""
    return f"{name} has no second factor"


def added_text(name: str, fingerprint: str) -> str:
    """One wording for addkey whether the server runs or not, so one script works either way."""
    return f"added key {fingerprint} to {name}'s ~/.ssh/authorized_keys"


def _offline_change(
    args: argparse.Namespace, db: AccountDB, password: str, entries: list[Any]
) -> str:
    cost = DEFAULT_COST
    try:
        if args.command == "useradd":
            role = ROLE_ADMIN if args.admin else ROLE_USER
            db.create(args.name, hash_password(password, cost), role)
            return f"created {role} account {args.name}"
        if args.command == "passwd":
            db.set_password_hash(args.name, hash_password(password, cost))
            return f"password of {args.name} changed"
        if args.command == "userdel":
            db.delete(args.name)
            return f"deleted {args.name}"
        if args.command in ("lock", "unlock"):
            db.set_locked(args.name, args.command == "lock")
            return locked_text(args)
        if args.command == "otp-reset":
            if db.get(args.name) is None:
                raise NoSuchUser(args.name)
            if not OtpDB(db).disable(args.name):
                raise refuse(no_second_factor(args.name))
            return otp_reset_text(args.name)
        created = db.apply_batch(entries)
        return f"{len(created)} created, {len(entries) - len(created)} updated"
    except LastAdmin as e:
        raise refuse(str(e)) from None
    except UserExists:
        raise refuse(f"user '{args.name}' already exists") from None
    except NoSuchUser:
        raise refuse(f"user '{args.name}' does not exist") from None


# -- online: through the control socket ---------------------------------------------------


async def connect(reactor: Any, endpoint: str) -> amp.AMP:
    """The control endpoint as a Twisted endpoint string: a malformed one is a usage error (2), a
    refused connection "not reachable" (3), so a script can tell a typo from a server that is down.
    """
    try:
        client = clientFromString(reactor, endpoint)
    except (ValueError, KeyError, TypeError) as e:
        raise Failed(USAGE, f"bad --control endpoint {endpoint!r}: {e}") from None
    try:
        protocol: amp.AMP = await connectProtocol(client, amp.AMP())
    except (ConnectError, OSError) as e:
        raise Failed(UNREACHABLE, f"cannot reach the server at {endpoint}: {e}") from None
    return protocol


async def run_online(reactor: Any, args: argparse.Namespace, endpoint: str) -> str:
    """Passwords, keys and newusers lines are read before connecting, so a slow typist never holds
    a connection open on the server; the server's typed errors come back as the same lines the
    offline path prints.
    """
    password = read_password(args) if args.command in ("useradd", "passwd") else ""
    entries = read_newusers(args.hash_cost) if args.command == "newusers" else []
    key = read_key() if args.command == "addkey" else b""
    conn = await connect(reactor, endpoint)
    try:
        if args.command == "addkey":
            r = await conn.callRemote(control.AddKey, name=args.name, key=key)
            return added_text(args.name, r["fingerprint"])
        return await _online(conn, args, password, entries)
    except (control.BadRequest, control.NoShutdown, BackupError, LastAdmin) as e:
        raise refuse(str(e)) from None
    except UserExists:
        raise refuse(f"user '{args.name}' already exists") from None
    except NoSuchUser:
        raise refuse(f"user '{args.name}' does not exist") from None
    except amp.UnknownRemoteError as e:
        raise refuse(f"the server failed: {e}") from None
    finally:
        conn.transport.loseConnection()  # type: ignore[union-attr]


async def _online(
    conn: amp.AMP, args: argparse.Namespace, password: str, entries: list[Any]
) -> str:
    call = conn.callRemote
    cmd = args.command
    if cmd == "status":
        return status_text(await call(control.Status))
    if cmd == "wall":
        r = await call(control.Wall, text=args.wall_text)
        return f"delivered to {counted(r['reached'], 'session')}"
    if cmd == "who":
        data, total = b"", 1
        while len(data) < total:
            r = await call(control.Who, offset=len(data))
            data, total = data + r["chunk"], r["total"]
            if not r["chunk"] and len(data) < total:
                raise refuse("the session list changed while reading it; try again")
        document = json.loads(data)
        return json.dumps(document) if args.json else who_table(document)
    if cmd == "kick":
        r = await call(control.Kick, user=args.user, reason=args.reason)
        if not r["sessions"]:
            raise refuse(f"{args.user} is not logged in")
        return f"ended {counted(r['sessions'], 'session')} of {args.user}"
    if cmd in ("restart", "drain"):
        r = await call(control.RestartNode, drain=cmd == "drain")
        return f"parked {counted(r['parked'], 'session')}; stopping for a restart"
    if cmd == "shutdown":
        return await _shutdown(call, args)
    if cmd == "useradd":
        await call(control.UserAdd, name=args.name, password=password, admin=args.admin)
        return f"created {'admin' if args.admin else 'user'} account {args.name}"
    if cmd == "passwd":
        await call(control.Passwd, name=args.name, password=password)
        return f"password of {args.name} changed"
    if cmd == "userdel":
        await call(control.UserDel, name=args.name)
        return f"deleted {args.name}"
    if cmd in ("lock", "unlock"):
        await call(control.Lock, name=args.name, locked=cmd == "lock")
        return locked_text(args)
    if cmd == "otp-reset":
        r = await call(control.OtpReset, name=args.name)
        if not r["removed"]:
            raise refuse(no_second_factor(args.name))
        return otp_reset_text(args.name)
    if cmd in BAN_COMMANDS:
        return await _bans(call, args)
    if cmd == "backup":
        r = await call(control.Backup, path=args.file, force=args.force)
        return f"store copied to {args.file} ({counted(r['size'], 'byte')})"
    if cmd == "mute":
        r = await call(control.Mute, user=args.name, seconds=args.seconds, reason=args.reason)
        return muted_text(args.name, r["until"], args.reason, time.time())
    if cmd == "unmute":
        if not (await call(control.Unmute, user=args.name))["ended"]:
            raise refuse(f"{args.name} is not muted")
        return f"unmuted {args.name}"
    if cmd == "audit":
        return await _audit(call, args)
    raw = json.dumps(entries).encode()
    batch = ""
    for i in range(0, len(raw), control.PAGE):
        batch = (await call(control.NewUsersPage, batch=batch, page=raw[i : i + control.PAGE]))[
            "batch"
        ]
    r = await call(control.NewUsersCommit, batch=batch)
    return f"{r['created']} created, {r['updated']} updated"


async def _audit(call: Callable[..., Any], args: argparse.Namespace) -> str:
    query = audit_query(args)
    filters = {
        k: v
        for k, v in (("since", query.since), ("actor", query.actor), ("target", query.target))
        if v is not None
    }
    data, total = b"", 1
    while len(data) < total:
        r = await call(control.Audit, offset=len(data), limit=query.limit, **filters)
        data, total = data + r["chunk"], r["total"]
        if not r["chunk"] and len(data) < total:
            raise refuse("the ledger's answer was cut short; try again")
    document = json.loads(data)
    return json.dumps(document) if args.json else audit_table(document)


async def _bans(call: Callable[..., Any], args: argparse.Namespace) -> str:
    if args.command == "ban":
        return str((await call(control.Ban, words=args.words))["answer"])
    if args.command == "unban":
        lifted = (await call(control.Unban, target=args.target))["target"]
        if not lifted:
            raise refuse(f"{args.target} is not banned")
        return f"unbanned {lifted}"
    data, total = b"", 1
    while len(data) < total:
        r = await call(control.Bans, offset=len(data))
        data, total = data + r["chunk"], r["total"]
        if not r["chunk"] and len(data) < total:
            raise refuse("the ban list changed while reading it; try again")
    document = json.loads(data)
    if args.json:
        return json.dumps(document)
    return bans_table([ban_of(entry) for entry in document["bans"]]).rstrip("\n")


def ban_of(entry: dict[str, Any]) -> Ban:
    """A ban of the ``bans --json`` document, back as a ban for the table."""
    until = entry["until"]
    return Ban(
        entry["target"],
        entry["kind"],
        entry["by"],
        datetime.fromisoformat(entry["when"]).timestamp(),
        None if until is None else datetime.fromisoformat(until).timestamp(),
        entry["reason"],
    )


async def _shutdown(call: Callable[..., Any], args: argparse.Namespace) -> str:
    if args.cancel:
        if args.words:
            raise Failed(USAGE, "shutdown -c takes no other arguments")
        await call(control.Shutdown, cancel=True, text="")
        return "shutdown cancelled"
    when, text = args.when, " ".join(args.words[1:])
    r = await call(control.Shutdown, when=when, text=text, cancel=False)
    stamp = time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(r["at"]))
    now = when == "now" or (when.startswith("+") and parse_when(when, 0) == 0)
    return "shutting down now" if now else f"shutdown scheduled for {stamp}"


def status_text(r: dict[str, Any]) -> str:
    """The first line is the answer to "is it up?" and stays the same whatever else is configured;
    a scheduled shutdown, the cluster's live nodes (or that Redis does not answer) and the SSH host
    key fingerprints, which users check at their first connection, follow only when there is
    something to say.
    """
    text = (
        f"shellserver on {r['hostname']} is running: pid {r['pid']}, "
        f"up {' '.join(format_uptime(r['uptime']).split())}, "
        f"{counted(r['sessions'], 'session')}, {counted(r['users'], 'user')}"
    )
    if r.get("shutdown_at") is not None:
        stamp = time.strftime("%a %Y-%m-%d %H:%M:%S %Z", time.localtime(r["shutdown_at"]))
        text += f"\nshutdown scheduled for {stamp}"
    if r.get("node") is not None:  # clustered
        nodes = r.get("nodes") or []
        if nodes:
            text += (
                f"\nnode {r['node']}, in a cluster of {counted(len(nodes), 'live node')}: "
                + ", ".join(nodes)
            )
        else:
            text += f"\nnode {r['node']}: the cluster cannot be reached (Redis does not answer)"
    if r.get("store") is not None:  # PostgreSQL
        text += f"\nstore {r['store']}" + ("" if r.get("store_up") else " (cannot be reached)")
    for line in r.get("ssh_keys") or ():
        text += f"\nSSH host key {line}"
    return text


def who_table(document: dict[str, Any]) -> str:
    """The sessions as a table; clustered (the document lists the live nodes), a NODE column."""
    nodes = "nodes" in document
    head = f"{'USER':<12} {'TTY':<8} {'ROLE':<6} {'LOGIN':<25} {'IDLE':>5} MESG "
    rows = [head + (f"{'NODE':<12} FROM" if nodes else "FROM")]
    for s in document["sessions"]:
        row = (
            f"{s['user']:<12} {s['tty']:<8} {s['role']:<6} {s['login']:<25} "
            f"{format_idle(s['idle_s']):>5} {'+' if s['mesg'] else '-':<4} "
        )
        if nodes:
            row += f"{s['node']:<12} "
        rows.append(row + s["peer"])
    return "\n".join(rows)


# -- entry point -----------------------------------------------------------------------------


def control_endpoint(args: argparse.Namespace, datadir: DataDir) -> str:
    """``--control``; else the socket of ``--node``, of the one node running, or of the server.

    Nodes running exclude a server alone (datadir.py), so a ``control.sock``
    seen while they run is one a stopped server left behind.
    """
    if args.control is not None:
        return str(args.control)
    where = datadir.path.path
    nodes = datadir.running_nodes()
    if args.node is not None:
        if args.node not in nodes:
            running = f" (running: {', '.join(nodes)})" if nodes else ""
            raise Failed(
                UNREACHABLE, f"no shellserver node {args.node} is running on {where}{running}"
            )
        return f"unix:{datadir.node_socket(args.node).path}"
    if len(nodes) > 1:
        raise refuse(
            f"several nodes run on {where} ({', '.join(nodes)}); pick one with --node NAME"
        )
    sock = datadir.node_socket(nodes[0]) if nodes else datadir.control_socket
    return f"unix:{sock.path}"


def check_arguments(args: argparse.Namespace) -> None:
    """Bad arguments are found before the server, the store or the terminal is touched."""
    if args.node is not None:
        try:
            args.node = parse_node(args.node)
        except ValueError as e:
            raise Failed(USAGE, f"--node: {e}") from None
    if args.command == "useradd":
        # Reserved names are for the system (the initial admin is made by the server itself).
        problem = username_problem(args.name, registering=True)
        if problem is not None:
            raise refuse(problem)
    if args.command == "addkey":
        problem = username_problem(args.name)
        if problem is not None:
            raise refuse(problem)
    if args.command == "backup":
        args.file = os.path.abspath(args.file)  # the server's working directory is not ours
    if args.command == "shutdown" and not args.cancel:
        # The time comes first, as in a session; checked here so a typo never reaches the server.
        args.when = args.words[0] if args.words else "+1"
        if parse_when(args.when, time.time()) is None:
            usage = "shellserver shutdown [+MIN|now|HH:MM] [TEXT...] | shellserver shutdown -c"
            raise Failed(USAGE, f"{invalid_time(args.when)}\nUsage: {usage}")
    if args.command in ("mute", "unmute"):
        problem = username_problem(args.name)
        if problem is not None:
            raise refuse(problem)
    if args.command == "mute":
        args.seconds = parse_duration(args.duration)
        if args.seconds is None:
            raise Failed(USAGE, f"invalid duration '{args.duration}' (use {DURATION_FORMS})")
    if args.command == "audit":
        args.since_seconds = None
        if args.since is not None:
            args.since_seconds = parse_duration(args.since)
            if args.since_seconds is None:
                raise Failed(
                    USAGE, f"--since: invalid duration '{args.since}' (use {DURATION_FORMS})"
                )
        if not 1 <= args.limit <= audit.MAX_LIMIT:
            raise Failed(USAGE, f"--limit takes 1 to {audit.MAX_LIMIT}")
    if args.command == "ban":
        try:
            read_ban(args.words, operator(), time.time())
        except BadBan as e:
            usage = "shellserver ban TARGET [DURATION] [REASON...]"
            raise Failed(USAGE, f"{e}\nUsage: {usage}") from None
    if args.command == "unban":
        try:
            args.target = check_target(args.target)
        except BadBan as e:
            raise Failed(USAGE, f"{e}\nUsage: shellserver unban TARGET") from None
    if args.command == "wall":
        args.wall_text = " ".join(args.text)
        if not args.wall_text.strip():
            raise Failed(USAGE, "no text to broadcast (usage: shellserver wall TEXT...)")


def not_utf8(argv: list[str]) -> str | None:
    """The first argument that is not valid UTF-8 (Python keeps its bad bytes as surrogates)."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return ascii(arg.encode("utf-8", "surrogateescape"))[2:-1]
    return None


def main(argv: list[str] | None = None) -> NoReturn:
    """The ``shellserver`` console script. Arguments are checked before anything is touched;
    account commands run on the store directly when no server holds the data dir, otherwise
    everything goes through the control socket, so the CLI never writes the store under a running
    server.
    """
    argv = sys.argv[1:] if argv is None else argv
    bad = not_utf8(argv)
    if bad is not None:
        print(f"shellserver: argument '{bad}' is not valid UTF-8", file=sys.stderr)
        raise SystemExit(USAGE)
    args = parser().parse_args(argv)
    try:
        check_arguments(args)
    except Failed as e:
        _die(args.command, e)
    datadir = DataDir(FilePath(os.path.abspath(args.data)))
    datadir.homes = (
        FilePath(os.path.abspath(args.homes)) if args.homes else datadir.recorded_homes()
    )
    try:
        if args.command == "store":
            print(store_copy(args, datadir))
            sys.exit(OK)
        if args.control is None and args.command in OFFLINE_COMMANDS and not datadir.is_locked():
            print(run_offline(args, datadir))
            sys.exit(OK)
        if args.control is None and not datadir.is_locked():
            raise Failed(
                UNREACHABLE,
                f"no server is running on {datadir.path.path}; if the server keeps its "
                f"data elsewhere, give --data DIR or set {DATA_ENV}",
            )
        endpoint = control_endpoint(args, datadir)
    except Failed as e:
        _die(args.command, e)
    except (OSError, StoreError) as e:
        _die(args.command, Failed(REFUSED, str(e)))

    def start(reactor: Any) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(_online_main(reactor, args, endpoint))

    task.react(start)
    raise AssertionError("react returned")  # pragma: no cover


async def _online_main(reactor: Any, args: argparse.Namespace, endpoint: str) -> None:
    try:
        print(await run_online(reactor, args, endpoint))
    except Failed as e:
        _die(args.command, e)
    raise SystemExit(OK)


def _die(command: str, error: Failed) -> NoReturn:
    print(f"shellserver {command}: {error}", file=sys.stderr)
    raise SystemExit(error.code)


__all__ = ["main"]
