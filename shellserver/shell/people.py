"""Saved (offline) messages and ignore lists: the store's side of them, and what a login
and a logout do with them.

The SQL runs on the store's one database thread (``AccountStore.run_db``), like the rest of the
account store. The online ``write`` path never comes here: ignore lists are loaded into the hub
at login and kept there while the user has a session, so checking one is a dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred

from shellserver.hub.local import IHub, Message
from shellserver.hub.rooms import left_text
from shellserver.hub.session import Session
from shellserver.ops.metrics import Metrics
from shellserver.store.accounts import AccountDB, AccountStore, LoginRecord, username_problem
from shellserver.store.sql import ISQL

#: Saved messages kept per recipient, read or not: a bound on what others can make the store
#: hold for one user.
MAILBOX_LIMIT = 100
#: Unread saved messages from one sender in one mailbox: one pest cannot fill a mailbox and
#: crowd out everyone else's messages.
SENDER_LIMIT = 20
#: Bytes (UTF-8) of one saved message.
MESSAGE_LIMIT = 4096
#: Names on one user's ignore list.
IGNORE_LIMIT = 100

# What saving a message (or checking first) comes to.
SAVED = "saved"
NO_USER = "no-user"
IGNORED = "ignored"
FULL = "full"

#: The announcement a node makes when it deletes an account: every node takes the name out of
#: its users' ignore lists (and mutes), so a name created again inherits nothing.
USER_DELETED = "userdel"

# What ``ignore`` comes to.
ADDED = "added"
ALREADY = "already"


@frozen
class SavedMessage:
    """A saved message as ``messages`` shows it; the text stays as typed until shown."""

    id: int
    sender: str
    sent: float
    #: As typed: invalid UTF-8 kept as surrogates; sanitised only when shown.
    text: str
    read: bool


def to_blob(text: str) -> bytes:
    """Text as stored: the bytes typed, invalid UTF-8 included (SQLite TEXT refuses those)."""
    return text.encode("utf-8", "surrogateescape")


def _tx(db: AccountDB) -> Any:
    return db.sql.transaction()


def _conn(db: AccountDB) -> ISQL:
    return db.sql


def _mailbox_state(conn: ISQL, recipient: str, sender: str) -> str:
    if conn.execute("SELECT 1 FROM users WHERE name=?", (recipient,)).fetchone() is None:
        return NO_USER
    if conn.execute(
        'SELECT 1 FROM ignores WHERE "user"=? AND ignored=?', (recipient, sender)
    ).fetchone():
        return IGNORED
    (count,) = conn.execute(
        "SELECT count(*) FROM messages WHERE recipient=?", (recipient,)
    ).fetchone()
    if count >= MAILBOX_LIMIT:
        return FULL
    (from_sender,) = conn.execute(
        "SELECT count(*) FROM messages WHERE recipient=? AND sender=? AND read=0",
        (recipient, sender),
    ).fetchone()
    return FULL if from_sender >= SENDER_LIMIT else SAVED


def mailbox_state(db: AccountDB, recipient: str, sender: str) -> str:
    """Whether a message from ``sender`` could be saved for ``recipient`` now."""
    return _mailbox_state(_conn(db), recipient, sender)


def save_message(db: AccountDB, recipient: str, sender: str, body: bytes, when: float) -> str:
    """Check and save in one write transaction (``BEGIN IMMEDIATE``), so two senders, or one
    sender's two sessions, cannot overfill a mailbox or pass the per-sender limit together."""
    with _tx(db):
        state = _mailbox_state(_conn(db), recipient, sender)
        if state == SAVED:
            _conn(db).execute(
                "INSERT INTO messages (recipient, sender, sent, body) VALUES (?,?,?,?)",
                (recipient, sender, when, body),
            )
    return state


def saved_messages(db: AccountDB, user: str) -> list[SavedMessage]:
    """A user's saved messages, oldest first (database thread)."""
    rows = (
        _conn(db)
        .execute(
            "SELECT id, sender, sent, body, read FROM messages "
            "WHERE recipient=? ORDER BY id LIMIT ?",
            (user, MAILBOX_LIMIT),
        )
        .fetchall()
    )
    return [
        SavedMessage(r[0], r[1], r[2], bytes(r[3]).decode("utf-8", "surrogateescape"), bool(r[4]))
        for r in rows
    ]


def mark_read(db: AccountDB, user: str, ids: list[int]) -> None:
    """Shown messages are kept but no longer counted as new at login (database thread)."""
    with _tx(db):
        _conn(db).executemany(
            "UPDATE messages SET read=1 WHERE recipient=? AND id=?", [(user, i) for i in ids]
        )


def delete_messages(db: AccountDB, user: str, ids: list[int]) -> None:
    """Free a user's mailbox room (database thread)."""
    with _tx(db):
        _conn(db).executemany(
            "DELETE FROM messages WHERE recipient=? AND id=?", [(user, i) for i in ids]
        )


def ignore_list(db: AccountDB, user: str) -> list[str]:
    """The names a user ignores, sorted (database thread)."""
    rows = (
        _conn(db)
        .execute('SELECT ignored FROM ignores WHERE "user"=? ORDER BY ignored', (user,))
        .fetchall()
    )
    return [r[0] for r in rows]


def add_ignore(db: AccountDB, user: str, other: str) -> str:
    """Ignoring someone also discards what they saved for you: it is never delivered."""
    conn = _conn(db)
    with _tx(db):
        if conn.execute("SELECT 1 FROM users WHERE name=?", (other,)).fetchone() is None:
            return NO_USER
        if conn.execute(
            'SELECT 1 FROM ignores WHERE "user"=? AND ignored=?', (user, other)
        ).fetchone():
            return ALREADY
        (count,) = conn.execute('SELECT count(*) FROM ignores WHERE "user"=?', (user,)).fetchone()
        if count >= IGNORE_LIMIT:
            return FULL
        conn.execute('INSERT INTO ignores ("user", ignored) VALUES (?,?)', (user, other))
        conn.execute("DELETE FROM messages WHERE recipient=? AND sender=?", (user, other))
    return ADDED


def remove_ignore(db: AccountDB, user: str, other: str) -> bool:
    """False when the name was not on the list, so ``unignore`` can say so (database thread)."""
    with _tx(db):
        cur = _conn(db).execute('DELETE FROM ignores WHERE "user"=? AND ignored=?', (user, other))
    return cur.rowcount == 1


def login_state(db: AccountDB, user: str) -> tuple[frozenset[str], int, LoginRecord | None]:
    """What a login needs in one trip to the store (each trip is a thread hand-off and a
    reactor wake-up): the ignore list, the unread count and the previous login."""
    (unread,) = (
        _conn(db)
        .execute("SELECT count(*) FROM messages WHERE recipient=? AND read=0", (user,))
        .fetchone()
    )
    return frozenset(ignore_list(db, user)), int(unread), db.last_login(user)


def run(store: AccountStore, func: Any, *args: Any) -> Deferred[Any]:
    """``func(db, *args)`` on the database thread."""
    return store.run_db(func, store.db, *args)


def valid_user(name: str) -> bool:
    """A name that could be an account: anything else never reaches the store."""
    return username_problem(name) is None


def new_messages_notice(unread: int) -> str:
    """The line a login shows when messages wait, so a user learns of them without asking."""
    if not unread:
        return ""
    noun = "new message" if unread == 1 else "new messages"
    return f"You have {unread} {noun}; type 'messages' to read them.\n"


async def session_starting(
    store: AccountStore,
    user: str,
    known: tuple[frozenset[str], int, LoginRecord | None] | None = None,
) -> tuple[frozenset[str], str, LoginRecord | None]:
    """Before the session is made: the user's ignore list (for ``attach``), the login notice,
    the previous login ("Last login: ..."). ``known``: :func:`login_state` read in the same
    instant by an earlier trip of this login (saves a trip to the store)."""
    ignores, unread, previous = known if known is not None else await run(store, login_state, user)
    return ignores, new_messages_notice(unread), previous


async def attach(hub: IHub, session: Session, ignores: frozenset[str]) -> None:
    """Make ``session`` reachable, its user's ignore list in the hub from then on.

    The list loaded at login is put there only now, as the session is attached: had it been
    put there on loading, the user's last other session ending meanwhile would drop it. When
    the user has a session already, the hub's list is the current one (``ignore`` keeps it).
    """
    if not await hub.sessions_of(session.user):
        hub.set_ignores(session.user, ignores)
    await hub.attach(session)


async def session_ended(hub: IHub, metrics: Metrics, session: Session) -> None:
    """After the session is detached: leave its rooms (telling them), drop the ignore list when
    the user has no session left."""
    for room in await hub.part_all_rooms(session.id):
        reached, dropped = await hub.send_room(
            room, Message.of(left_text(room, session.user)), session.user
        )
        metrics.messages("room", reached, dropped)
    if not await hub.sessions_of(session.user):
        hub.set_ignores(session.user, None)


def forget_user(hub: IHub, name: str) -> int:
    """``name``'s account was deleted: take it out of the ignore lists of this node's users,
    so a session that outlives the deletion does not go on ignoring whoever takes the name
    next (the store's lists lose it in the deletion itself). How many lists changed."""
    changed = 0
    for user in {s.user for s in hub.local_sessions()}:
        names = hub.ignores(user)
        if name in names:
            hub.set_ignores(user, (names - {name}) or None)
            changed += 1
    return changed


def deletions(hub: IHub) -> Callable[[str, dict[str, Any]], None]:
    """The subscriber (``IHub.subscribe_announcements``) through which another node's
    deletion of an account reaches this node's sessions."""

    def heard(kind: str, fields: dict[str, Any]) -> None:
        if kind == USER_DELETED:
            forget_user(hub, str(fields["user"]))

    return heard
