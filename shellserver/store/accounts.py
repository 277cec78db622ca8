"""The account store: users, roles, password hashes and login history in SQLite.

``AccountDB`` is synchronous and used from one thread at a time: the server's
single database thread, or the offline CLI directly. ``AccountStore`` is the
asynchronous face the server uses; it never blocks the reactor, running SQL
on the database thread and hashing on the hashing pool.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, TypeVar

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import Attribute, Interface, implementer

from shellserver.ops.datadir import DataDir
from shellserver.ops.threads import Runner
from shellserver.store.moderation_schema import schema_moderation
from shellserver.store.otpschema import schema_otp
from shellserver.store.passwords import (
    dummy_hash,
    hash_password,
    is_cheap,
    needs_rehash,
    verify_password,
)

# Re-exported: the store's errors are caught by their names here, wherever they are raised.
from shellserver.store.sql import ISQL, Rows
from shellserver.store.sql import ConstraintFailed as ConstraintFailed
from shellserver.store.sql import Duplicate as Duplicate
from shellserver.store.sql import StoreError as StoreError
from shellserver.store.sql import StoreTooNew as StoreTooNew
from shellserver.store.sql import StoreUnavailable as StoreUnavailable
from shellserver.store.sqlite import SQLite

log = Logger()

ROLE_USER = "user"
ROLE_ADMIN = "admin"
ROLES = (ROLE_USER, ROLE_ADMIN)
#: The account the first start makes, its password in ``<data>/initial-admin-password``.
INITIAL_ADMIN = "admin"
RESERVED_NAMES = frozenset({"new", "root", "admin", "guest", "system", "nobody", "all"})
SCHEMA_VERSION = 7

#: Used with fullmatch: ``$`` alone would accept a trailing newline ("evil\n").
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
T = TypeVar("T")


#: What a full or failing disk, or a store that cannot be reached, raises from the store or
#: the homes. The service is unavailable for a moment, not broken: logins and registrations say
#: so, since a crash or a traceback would cost every other session for one full disk.
UNAVAILABLE: tuple[type[Exception], ...] = (sqlite3.OperationalError, OSError, StoreUnavailable)


class UserExists(StoreError):
    """The name is taken: the primary key says so inside the insert, so two registrations racing
    for one name cannot both win, whatever was checked before."""


class NoSuchUser(StoreError):
    """A change named an account that is not there (deleted meanwhile, or mistyped by an admin):
    found from the row count of the change itself, with no separate read to race."""


class LastAdmin(StoreError):
    """Deleting, locking or demoting this account would leave no administrator who can log in.

    Its text is what the user is told (``admin is the last administrator``); it crosses
    the control socket as is.
    """

    @classmethod
    def of(cls, name: str) -> LastAdmin:
        """The refusal worded once, for the session command, the control socket and the CLI."""
        return cls(f"{name} is the last administrator")


class LoginFailed(StoreError):
    """Unknown user or wrong password: deliberately the same."""


class AccountLocked(StoreError):
    """The password was right, but the account is locked."""


def username_problem(name: str, registering: bool = False) -> str | None:
    """Why ``name`` cannot be a user name; ``registering``: a new account, not a system one."""
    if _NAME.fullmatch(name) is None:
        return "Usernames are 1-32 characters: a-z, 0-9, _ and -, starting with a letter."
    if registering and name in RESERVED_NAMES:
        return "That name is reserved; choose another."
    return None


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None: one rule for registration, ``passwd`` and the
    CLI, so no path accepts what another would refuse."""
    if len(password) < 8:
        return "Passwords must be at least 8 characters."
    return None


@frozen
class Account:
    """What the rest of the server knows of an account: never the hash, which stays in the store
    (and on its threads); frozen, so one read can be handed around without copies."""

    name: str
    role: str
    locked: bool
    created: float
    #: Whether a password login of the account needs a second code, when read with the
    #: password's hash at login (in the same trip to the store); None where not read.
    otp: bool | None = field(default=None, eq=False)

    @property
    def is_admin(self) -> bool:
        """Asked where the account, not a session, is at hand: at login during a shutdown,
        when only an admin (who may cancel it) is let in."""
        return self.role == ROLE_ADMIN


@frozen
class LoginRecord:
    """One row of the login history, as ``last`` and ``finger`` show it; ``logout`` is None
    while the session runs (or until the next start closes what a crash left open)."""

    id: int
    user: str
    tty: str
    peer: str
    login: float
    logout: float | None


def _schema_v1(db: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would COMMIT the migration's transaction.
    script = """
        CREATE TABLE users (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('user', 'admin')),
            pw_hash TEXT NOT NULL,
            locked INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL
        );
        CREATE TABLE logins (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user TEXT NOT NULL,
            tty TEXT NOT NULL,
            peer TEXT NOT NULL,
            login REAL NOT NULL,
            logout REAL
        );
        CREATE INDEX logins_user ON logins (user, login);
        """
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _schema_v2(db: sqlite3.Connection) -> None:
    """Saved (offline) messages and ignore lists; both go with their user (``ON DELETE
    CASCADE``), so a name registered again never inherits another person's mail or ignores."""
    script = """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            recipient TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
            sender TEXT NOT NULL,
            sent REAL NOT NULL,
            body TEXT NOT NULL,
            read INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX messages_recipient ON messages (recipient, id);
        CREATE TABLE ignores (
            user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
            ignored TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
            PRIMARY KEY (user, ignored)
        ) WITHOUT ROWID;
        CREATE INDEX ignores_ignored ON ignores (ignored);
        """
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _schema_bans(db: sqlite3.Connection) -> None:
    """Bans (store/bans.py): one row per target (a user, an address, a network, a key
    fingerprint), not tied to an account, so a name can be banned before it is registered;
    ``expires`` NULL is a permanent ban."""
    db.execute(
        """
        CREATE TABLE bans (
            target TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('user', 'address', 'network', 'key')),
            actor TEXT NOT NULL,
            created REAL NOT NULL,
            expires REAL,
            reason TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX bans_expires ON bans (expires)")


def _schema_parked(db: sqlite3.Connection) -> None:
    """Sessions parked by a restart or a drain (store/parked.py); they go with their account
    (``ON DELETE CASCADE``), so a name registered again never resumes another person's
    session."""
    db.execute(
        """
        CREATE TABLE parked (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            node TEXT NOT NULL,
            owner TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
            tty TEXT NOT NULL,
            parked REAL NOT NULL,
            until REAL NOT NULL,
            state TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX parked_owner ON parked (owner)")
    db.execute("CREATE INDEX parked_node ON parked (node)")


def _schema_v3(db: sqlite3.Connection) -> None:
    """The SSH host keys, when the store keeps them (PostgreSQL: every node presents the same
    keys); the embedded store leaves the table empty, its keys stay in ``<data>/ssh``."""
    db.execute("CREATE TABLE host_keys (kind TEXT PRIMARY KEY, key BLOB NOT NULL)")


#: MIGRATIONS[v] brings a store from version v to v + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _schema_v1,
    1: _schema_v2,
    2: _schema_bans,
    3: schema_otp,
    4: schema_moderation,
    5: _schema_parked,
    6: _schema_v3,
}

#: The same migrations as PostgreSQL's DDL, version for version (a test keeps the keys equal):
#: a table added to ``MIGRATIONS`` needs only its DDL here. The types PostgreSQL spells
#: otherwise: REAL is DOUBLE PRECISION, a BLOB is BYTEA, ``INTEGER PRIMARY KEY AUTOINCREMENT``
#: is ``BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY`` (by default, so ``store copy``
#: can keep the ids), and ``user`` is a reserved word, quoted.
POSTGRESQL_MIGRATIONS: dict[int, str] = {
    0: """
        CREATE TABLE users (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('user', 'admin')),
            pw_hash TEXT NOT NULL,
            locked INTEGER NOT NULL DEFAULT 0,
            created DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE logins (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            "user" TEXT NOT NULL,
            tty TEXT NOT NULL,
            peer TEXT NOT NULL,
            login DOUBLE PRECISION NOT NULL,
            logout DOUBLE PRECISION
        );
        CREATE INDEX logins_user ON logins ("user", login);
        """,
    1: """
        CREATE TABLE messages (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            recipient TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
            sender TEXT NOT NULL,
            sent DOUBLE PRECISION NOT NULL,
            body BYTEA NOT NULL,
            read INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX messages_recipient ON messages (recipient, id);
        CREATE TABLE ignores (
            "user" TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
            ignored TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
            PRIMARY KEY ("user", ignored)
        );
        CREATE INDEX ignores_ignored ON ignores (ignored);
        """,
    2: """
        CREATE TABLE bans (
            target TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('user', 'address', 'network', 'key')),
            actor TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            expires DOUBLE PRECISION,
            reason TEXT NOT NULL
        );
        CREATE INDEX bans_expires ON bans (expires);
        """,
    3: """
        CREATE TABLE otp (
            "user" TEXT PRIMARY KEY REFERENCES users (name) ON DELETE CASCADE,
            secret TEXT NOT NULL,
            last_step BIGINT NOT NULL,
            enabled DOUBLE PRECISION NOT NULL
        );
        CREATE TABLE otp_recovery (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            "user" TEXT NOT NULL REFERENCES otp ("user") ON DELETE CASCADE,
            code_hash TEXT NOT NULL
        );
        CREATE INDEX otp_recovery_user ON otp_recovery ("user");
        """,
    4: """
        CREATE TABLE audit (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL,
            actor TEXT NOT NULL,
            origin TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            reason TEXT,
            expires DOUBLE PRECISION,
            node TEXT NOT NULL
        );
        CREATE INDEX audit_at ON audit (at);
        CREATE INDEX audit_actor ON audit (actor, id);
        CREATE INDEX audit_target ON audit (target, id);
        CREATE TABLE mutes (
            name TEXT PRIMARY KEY REFERENCES users (name) ON DELETE CASCADE,
            until DOUBLE PRECISION NOT NULL,
            reason TEXT,
            muted_by TEXT NOT NULL,
            muted_at DOUBLE PRECISION NOT NULL
        );
        CREATE INDEX messages_sender ON messages (sender, read);
        """,
    5: """
        CREATE TABLE parked (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            node TEXT NOT NULL,
            owner TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
            tty TEXT NOT NULL,
            parked DOUBLE PRECISION NOT NULL,
            until DOUBLE PRECISION NOT NULL,
            state TEXT NOT NULL
        );
        CREATE INDEX parked_owner ON parked (owner);
        CREATE INDEX parked_node ON parked (node);
        """,
    6: "CREATE TABLE host_keys (kind TEXT PRIMARY KEY, key BYTEA NOT NULL)",
}

_USER_COLS = "name, role, locked, created"


def _account(row: tuple[Any, ...]) -> Account:
    return Account(row[0], row[1], bool(row[2]), row[3])


def _record(row: tuple[Any, ...]) -> LoginRecord:
    return LoginRecord(*row)


class IAccountDB(Interface):
    """The store's synchronous face, called on a database thread (or by the offline CLI):
    accounts, login history, and the SQL the store's other modules run (``sql``)."""

    sql = Attribute("the ISQL the store's SQL runs on")
    where = Attribute("the store's name in messages: a path, or a URL without its password")

    def connect() -> None:
        """Open and migrate before anyone reads."""

    def close() -> None:
        """Close at the service's stop, after the database threads are done."""

    def get(name: str) -> Account | None:
        """The account without its hash."""

    def get_hash(name: str) -> tuple[Account, str] | None:
        """The account (with :attr:`Account.otp`) and its hash in one read."""

    def create(
        name: str, pw_hash: str, role: str = ROLE_USER, now: float | None = None
    ) -> Account:
        """Insert; UserExists for a taken name."""

    def set_password_hash(name: str, pw_hash: str) -> None:
        """Store a hash made elsewhere."""

    def replace_hash(name: str, old: str, new: str) -> bool:
        """Swap ``old`` for ``new`` only if unchanged meanwhile."""

    def set_role(name: str, role: str) -> None:
        """Refused when it would demote the last administrator."""

    def set_locked(name: str, locked: bool) -> None:
        """Refused when it would lock out the last administrator."""

    def delete(name: str) -> None:
        """Delete with what goes with the account; refused for the last administrator."""

    def users() -> list[Account]:
        """Every account, sorted by name."""

    def count() -> int:
        """How many accounts."""

    def apply_batch(entries: Sequence[tuple[str, str, str | None]]) -> list[str]:
        """Create or update in one transaction; the names created."""

    def record_logins(entries: Sequence[tuple[str, str, str, float]]) -> list[int]:
        """Several logins in one transaction; their ids."""

    def record_logout(record_id: int, when: float) -> None:
        """Close a login row by its id."""

    def close_open_logins(when: float) -> int:
        """Close the rows a crashed server left open."""

    def history(name: str | None = None, limit: int = 50) -> list[LoginRecord]:
        """Newest first, bounded."""

    def last_login(name: str) -> LoginRecord | None:
        """The newest login record."""

    def host_keys() -> dict[str, bytes]:
        """The SSH host keys kept in the store, by kind."""

    def add_host_key(kind: str, key: bytes) -> bytes:
        """Keep ``key`` unless a key of that kind is there already; the one kept."""


@implementer(IAccountDB)
class AccountDB:
    """The store's SQL, written once for both databases, used by one thread at a time per
    connection: the server's database threads (through :class:`AccountStore`) or the CLI.

    ``AccountDB(path)`` is the embedded SQLite store; :class:`PostgresAccountDB`
    (``store/postgres.py``) is the same class over PostgreSQL. Made in two steps, like a
    file: the constructor names the store and touches nothing, so the server can build
    every part that uses it before it has bound its ports (a port in use must stop the
    start having created nothing); :meth:`connect` then opens and migrates it, once the
    data dir is claimed. :meth:`open` does both, for callers that need it at once (the CLI,
    tests).
    """

    #: Each schema version's step for this database (``migrate``'s ``steps``).
    migrations: ClassVar[Mapping[int, Any]] = MIGRATIONS

    def __init__(self, path: str) -> None:
        self.path = path
        self.sql: ISQL = SQLite(path)

    @property
    def where(self) -> str:
        """The store's name in messages (the URL without its password, for PostgreSQL)."""
        return str(self.sql.where)

    @classmethod
    def open(cls, path: str) -> AccountDB:
        """The store at ``path``, opened now: for callers with nothing to bind first."""
        db = cls(path)
        db.connect()
        return db

    def connect(self) -> None:
        """Open and migrate before anyone reads: the one way a store is opened, so the server
        and the CLI see the same schema."""
        self.sql.connect()
        try:
            self.sql.migrate(SCHEMA_VERSION, self.migrations)
        except BaseException:
            self.sql.close()
            raise

    @property
    def _db(self) -> ISQL:
        """The SQL to run statements on (``execute(...).fetchone()`` as on a cursor)."""
        return self.sql

    def _transaction(self) -> AbstractContextManager[ISQL]:
        """One write transaction (``sql.transaction()``)."""
        return self.sql.transaction()

    def close(self) -> None:
        """Called at the service's stop after the database thread is done, so no write is lost;
        a store never opened (a start that failed first) has nothing to close."""
        self.sql.close()

    # -- users -----------------------------------------------------------------

    def get(self, name: str) -> Account | None:
        """The account without its hash: what every caller but a password check needs."""
        row = self.sql.execute(f"SELECT {_USER_COLS} FROM users WHERE name=?", (name,)).fetchone()
        return None if row is None else _account(row)

    def get_hash(self, name: str) -> tuple[Account, str] | None:
        """The account and its hash in one read, so a login costs one trip to the database."""
        row = self.sql.execute(
            f"SELECT {_USER_COLS}, pw_hash, "
            'EXISTS (SELECT 1 FROM otp WHERE otp."user"=users.name) FROM users WHERE name=?',
            (name,),
        ).fetchone()
        if row is None:
            return None
        return Account(row[0], row[1], bool(row[2]), row[3], bool(row[5])), row[4]

    def create(
        self, name: str, pw_hash: str, role: str = ROLE_USER, now: float | None = None
    ) -> Account:
        """Insert, and let the primary key refuse a taken name (:class:`UserExists`): no
        read-then-insert window for a racing registration."""
        created = time.time() if now is None else now
        try:
            with self.sql.transaction():
                self.sql.execute(
                    "INSERT INTO users (name, role, pw_hash, locked, created) VALUES (?,?,?,0,?)",
                    (name, role, pw_hash, created),
                )
        except Duplicate:
            raise UserExists(name) from None
        return Account(name, role, False, created)

    def _update(self, sql: str, *params: Any) -> None:
        with self.sql.transaction():
            if self.sql.execute(sql, params).rowcount == 0:
                raise NoSuchUser(params[-1])

    def set_password_hash(self, name: str, pw_hash: str) -> None:
        """Takes a hash made elsewhere: hashing is slow and must not hold the database thread."""
        self._update("UPDATE users SET pw_hash=? WHERE name=?", pw_hash, name)

    def replace_hash(self, name: str, old: str, new: str) -> bool:
        """Swap ``old`` for ``new`` only if nobody changed the password in between."""
        with self.sql.transaction():
            done = self.sql.execute(
                "UPDATE users SET pw_hash=? WHERE name=? AND pw_hash=?", (new, name, old)
            )
        return done.rowcount == 1

    def _admins(self) -> int:
        """Administrators who can log in: role admin, not locked."""
        rows = self.sql.execute(
            "SELECT count(*) FROM users WHERE role=? AND locked=0", (ROLE_ADMIN,)
        )
        return int(_first(rows))

    def _update_keeping_an_admin(self, sql: str, *params: Any) -> None:
        """``_update``, refused with LastAdmin if it would leave no administrator who can log
        in. The count and the change are one write transaction (one writer at a time), so two
        processes removing the last two admins at once cannot both succeed."""
        name = params[-1]
        with self.sql.transaction():
            before = self._admins()
            if self.sql.execute(sql, params).rowcount == 0:
                raise NoSuchUser(name)
            if before and not self._admins():
                raise LastAdmin.of(name)

    def set_role(self, name: str, role: str) -> None:
        """Refused (:class:`LastAdmin`) when it would demote the last administrator."""
        self._update_keeping_an_admin("UPDATE users SET role=? WHERE name=?", role, name)

    def set_locked(self, name: str, locked: bool) -> None:
        """Refused (:class:`LastAdmin`) when it would lock out the last administrator."""
        self._update_keeping_an_admin("UPDATE users SET locked=? WHERE name=?", int(locked), name)

    def delete(self, name: str) -> None:
        """The account's mailbox, its mute and every ignore entry naming it go with it
        (foreign-key cascades), and so do the messages it sent that are still unread, in the
        same transaction: a name created again later inherits none of them. Refused when it is
        the last administrator."""
        with self._transaction():
            before = self._admins()
            if self._db.execute("DELETE FROM users WHERE name=?", (name,)).rowcount == 0:
                raise NoSuchUser(name)
            if before and not self._admins():
                raise LastAdmin.of(name)
            self._db.execute("DELETE FROM messages WHERE sender=? AND read=0", (name,))

    def users(self) -> list[Account]:
        """Every account, sorted by name so a listing is stable from one call to the next."""
        rows = self.sql.execute(f"SELECT {_USER_COLS} FROM users ORDER BY name").fetchall()
        return [_account(r) for r in rows]

    def count(self) -> int:
        """Asked at start: an empty store gets its first ``admin``."""
        return int(_first(self.sql.execute("SELECT count(*) FROM users")))

    def locked_names(self) -> list[str]:
        """The locked accounts' names, which every node holds in memory (the personal pages
        withhold theirs). Bounded by the accounts; only an administrator locks one."""
        rows = self._db.execute("SELECT name FROM users WHERE locked=1 ORDER BY name").fetchall()
        return [str(row[0]) for row in rows]

    def apply_batch(self, entries: Sequence[tuple[str, str, str | None]]) -> list[str]:
        """Create or update every (name, hash, role) in one transaction: all or nothing.

        Returns the names that were created. Raises LastAdmin when the batch would demote
        every administrator who can log in.
        """
        created: list[str] = []
        with self.sql.transaction():
            before = self._admins()
            for name, pw_hash, role in entries:
                done = self.sql.execute(
                    "UPDATE users SET pw_hash=?, role=coalesce(?, role) WHERE name=?",
                    (pw_hash, role, name),
                )
                if done.rowcount == 0:
                    self.sql.execute(
                        "INSERT INTO users (name, role, pw_hash, locked, created) "
                        "VALUES (?,?,?,0,?)",
                        (name, role or ROLE_USER, pw_hash, time.time()),
                    )
                    created.append(name)
            if before and not self._admins():
                demoted = [name for name, _, role in entries if role == ROLE_USER]
                raise LastAdmin.of(demoted[-1] if demoted else "admin")
        return created

    # -- login history -----------------------------------------------------------

    def record_login(self, name: str, tty: str, peer: str, when: float) -> int:
        """One login, its id kept by the session so its logout can close the same row."""
        return self.record_logins([(name, tty, peer, when)])[0]

    def record_logins(self, entries: Sequence[tuple[str, str, str, float]]) -> list[int]:
        """Several logins in one transaction (a storm of logins commits once per batch)."""
        with self.sql.transaction():
            return [
                self.sql.insert(
                    'INSERT INTO logins ("user", tty, peer, login) VALUES (?,?,?,?)', entry
                )
                for entry in entries
            ]

    def record_logout(self, record_id: int, when: float) -> None:
        """Closes a row by its id, not by user and tty, which a later session may reuse."""
        self.sql.execute("UPDATE logins SET logout=? WHERE id=?", (when, record_id))

    def close_open_logins(self, when: float) -> int:
        """Sessions a crashed server left open end when the next one starts."""
        return self.sql.execute(
            "UPDATE logins SET logout=? WHERE logout IS NULL", (when,)
        ).rowcount

    def history(self, name: str | None = None, limit: int = 50) -> list[LoginRecord]:
        """Newest first and bounded, for ``last`` and for the addresses pacing trusts: the
        table grows with every login, so no caller reads all of it."""
        cols = 'id, "user", tty, peer, login, logout'
        if name is None:
            rows = self.sql.execute(
                f"SELECT {cols} FROM logins ORDER BY login DESC, id DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self.sql.execute(
                f'SELECT {cols} FROM logins WHERE "user"=? ORDER BY login DESC, id DESC LIMIT ?',
                (name, limit),
            ).fetchall()
        return [_record(r) for r in rows]

    def last_login(self, name: str) -> LoginRecord | None:
        """The newest record, for the "Last login" lines of finger and the greeting: one row
        by the index, not the history."""
        found = self.history(name, 1)
        return found[0] if found else None

    # -- SSH host keys ------------------------------------------------------------

    def host_keys(self) -> dict[str, bytes]:
        """The host keys kept in the store, by kind (``ed25519``, ``rsa``)."""
        rows = self.sql.execute("SELECT kind, key FROM host_keys ORDER BY kind").fetchall()
        return {kind: bytes(key) for kind, key in rows}

    def add_host_key(self, kind: str, key: bytes) -> bytes:
        """Keep ``key`` as the host key of its kind unless another node kept one first; the key
        kept, which every node then presents (the first node's wins, under the write lock)."""
        with self.sql.transaction():
            row = self.sql.execute("SELECT key FROM host_keys WHERE kind=?", (kind,)).fetchone()
            if row is not None:
                return bytes(row[0])
            self.sql.execute("INSERT INTO host_keys (kind, key) VALUES (?,?)", (kind, key))
        return key


def _first(rows: Rows) -> Any:
    """The first column of the first row (a count)."""
    row = rows.fetchone()
    assert row is not None, "an aggregate always has a row"
    return row[0]


def ensure_initial_admin(db: AccountDB, datadir: DataDir, cost: int) -> FilePath[str] | None:
    """On an empty store, create ``admin`` and leave its password in a 0600 file."""
    if db.count():
        return None
    password = secrets.token_urlsafe(12)
    try:
        db.create(INITIAL_ADMIN, hash_password(password, cost), ROLE_ADMIN)
    except UserExists:  # another node sharing the store made it first: its data dir has it
        return None
    target = datadir.admin_password_path
    datadir.write_secret(target, password + "\n")
    return target


@define(eq=False)
class AccountStore:
    """The store as the reactor uses it: every call returns a Deferred, SQL runs on the
    database thread (``run_db``) and hashing on the hashing pool (``run_hash``), so a slow
    disk or an scrypt hash never stalls a session."""

    db: AccountDB
    run_db: Runner
    run_hash: Runner
    hash_cost: int
    _dummy: str | None = field(default=None, init=False)
    #: Logins to record, appended on the reactor thread and taken on the database thread
    #: (a deque: append and popleft are safe across the two).
    _logins: deque[tuple[tuple[str, str, str, float], Deferred[int]]] = field(
        factory=deque, init=False
    )
    _logging_in: bool = field(default=False, init=False)

    async def _dummy_hash(self) -> str:
        """Made once, on the hashing pool like every hash: never a stall of the reactor."""
        if self._dummy is None:
            made: str = await self.run_hash(dummy_hash, self.hash_cost)
            if self._dummy is None:
                self._dummy = made
        return self._dummy

    def authenticate(self, name: str, password: str) -> Deferred[Account]:
        """The login check behind the cred checker: an unknown name is checked against a dummy
        hash of the same cost and fails like a wrong password, so timing tells no names."""
        return self._d(self._authenticate(name, password))

    async def _authenticate(self, name: str, password: str) -> Account:
        found, ok = await self.run_db(self._read_and_check_cheap, name, password)
        stored = found[1] if found is not None else await self._dummy_hash()
        if ok is None:
            ok = await self.run_hash(verify_password, password, stored)
        if not ok or found is None:
            raise LoginFailed()
        account: Account = found[0]
        if account.locked:
            raise AccountLocked(account.name)
        if needs_rehash(stored, self.hash_cost):
            rehash = self._d(self._rehash(name, stored, password))
            rehash.addErrback(_rehash_failed, name)
        return account

    async def _rehash(self, name: str, old: str, password: str) -> None:
        """In the background: the login does not wait for a second hash."""
        new = await self.hash(password)
        await self.run_db(self.db.replace_hash, name, old, new)

    def _read_and_check_cheap(
        self, name: str, password: str
    ) -> tuple[tuple[Account, str] | None, bool | None]:
        """On the database thread: the account and hash, and, for a cheap hash, the check.

        A cheap hash (test and benchmark accounts, ``--hash-cost`` 5 or less)
        is checked here rather than on the hashing pool: one thread round trip
        per login instead of two. ``None`` for the check means "not done":
        the hash is dear, or the user is unknown and the dummy hash is not made yet.
        """
        found = self.db.get_hash(name)
        stored = found[1] if found is not None else self._dummy
        if stored is not None and is_cheap(stored):
            return found, verify_password(password, stored)
        return found, None

    def _d(self, coro: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(coro)

    def check_password(self, name: str, password: str) -> Deferred[bool]:
        """``passwd``'s check of the old password: a plain answer, no lock or rehash logic,
        and the same cost for an account deleted meanwhile."""

        async def check() -> bool:
            found = await self.run_db(self.db.get_hash, name)
            stored = found[1] if found is not None else await self._dummy_hash()
            ok: bool = await self.run_hash(verify_password, password, stored)
            return ok and found is not None

        return self._d(check())

    def hash(self, password: str) -> Deferred[str]:
        """A new hash at the server's cost, on the hashing pool (scrypt takes tens of ms)."""
        return self.run_hash(hash_password, password, self.hash_cost)

    def create_user(self, name: str, password: str, role: str = ROLE_USER) -> Deferred[Account]:
        """Registration and ``useradd``: hashed first, off the database thread, so the insert
        is short; a name taken meanwhile fails with :class:`UserExists`."""

        async def create() -> Account:
            pw_hash = await self.hash(password)
            account: Account = await self.run_db(self.db.create, name, pw_hash, role)
            return account

        return self._d(create())

    def set_password(self, name: str, password: str) -> Deferred[None]:
        """``passwd`` and the admin's password change: hashed on the pool, then written."""

        async def change() -> None:
            pw_hash = await self.hash(password)
            await self.run_db(self.db.set_password_hash, name, pw_hash)

        return self._d(change())

    def get(self, name: str) -> Deferred[Account | None]:
        """An account for code on the reactor (``finger``, ``useradd``'s check, the realm)."""
        return self.run_db(self.db.get, name)

    def users(self) -> Deferred[list[Account]]:
        """:meth:`AccountDB.users` off the reactor thread."""
        return self.run_db(self.db.users)

    def count(self) -> Deferred[int]:
        """:meth:`AccountDB.count` off the reactor thread."""
        return self.run_db(self.db.count)

    def delete(self, name: str) -> Deferred[None]:
        """``userdel`` (the admin operation decides about the home and the sessions)."""
        return self.run_db(self.db.delete, name)

    def set_locked(self, name: str, locked: bool) -> Deferred[None]:
        """``lock``/``unlock``; the admin operation ends the sessions of a locked account."""
        return self.run_db(self.db.set_locked, name, locked)

    def set_role(self, name: str, role: str) -> Deferred[None]:
        """:meth:`AccountDB.set_role` off the reactor thread."""
        return self.run_db(self.db.set_role, name, role)

    def record_login(self, name: str, tty: str, peer: str, when: float) -> Deferred[int]:
        """Batched: logins asked for while the database thread is busy are written together
        in its next trip, one transaction for all (a login storm commits once per batch,
        not once per login)."""
        d: Deferred[int] = Deferred()
        self._logins.append(((name, tty, peer, when), d))
        if not self._logging_in:
            self._flush_logins()
        return d

    def _flush_logins(self) -> None:
        self._logging_in = True
        pending = self._logins
        self.run_db(_take_logins, self.db, pending).addBoth(self._logins_written)

    def _logins_written(self, result: object) -> None:
        self._logging_in = False
        if isinstance(result, tuple):
            waiting, outcome = result
            for (_, d), got in zip(waiting, outcome, strict=True):
                d.callback(got)
        elif isinstance(result, _BatchFailed):
            for _, d in result.waiting:
                d.errback(result.failure)
        else:  # the runner itself failed: fail whoever is waiting
            failure = result if isinstance(result, Failure) else Failure(RuntimeError(result))
            while self._logins:
                self._logins.popleft()[1].errback(failure)
        if self._logins:
            self._flush_logins()

    def record_logout(self, record_id: int, when: float) -> Deferred[None]:
        """Not batched like logins: nothing waits for it, and the database thread finishes
        the queued ones before the store closes at the service's stop."""
        return self.run_db(self.db.record_logout, record_id, when)

    def history(self, name: str | None = None, limit: int = 50) -> Deferred[list[LoginRecord]]:
        """``last``, and the addresses per-account pacing trusts."""
        return self.run_db(self.db.history, name, limit)

    def last_login(self, name: str) -> Deferred[LoginRecord | None]:
        """``finger``'s "Last login" line."""
        return self.run_db(self.db.last_login, name)

    def apply_batch(self, entries: Sequence[tuple[str, str, str | None]]) -> Deferred[list[str]]:
        """``newusers`` through the control socket: one transaction, all or nothing."""
        return self.run_db(self.db.apply_batch, entries)


def _rehash_failed(failure: Failure, name: str) -> None:
    """The old hash stays and is replaced at a later login; a full disk is one line."""
    if failure.check(*UNAVAILABLE):
        log.warn(
            "rehashing {user} failed, the old hash is kept: {error}",
            user=name,
            error=f"{type(failure.value).__name__}: {failure.value}",
        )
    else:
        log.failure("rehashing {user} failed", failure, user=name)


@define
class _BatchFailed:
    waiting: list[tuple[tuple[str, str, str, float], Deferred[int]]]
    failure: Failure


def _take_logins(
    db: AccountDB, pending: deque[tuple[tuple[str, str, str, float], Deferred[int]]]
) -> tuple[list[tuple[tuple[str, str, str, float], Deferred[int]]], list[int]] | _BatchFailed:
    """On the database thread: every login queued so far, in one transaction. The Deferreds
    only travel back: they are fired on the reactor thread."""
    waiting = []
    while pending:
        waiting.append(pending.popleft())
    try:
        return waiting, db.record_logins([entry for entry, _ in waiting])
    except Exception:
        return _BatchFailed(waiting, Failure())
