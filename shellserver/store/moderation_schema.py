"""The tables of moderation: the audit ledger and mutes, and the index that lets an account's
deletion find the messages it sent. One self-contained migration, registered by the store."""

from __future__ import annotations

import sqlite3


def schema_moderation(db: sqlite3.Connection) -> None:
    """The ledger has no foreign key: a record outlives the accounts it names (who did what to
    whom must still be read after a ``userdel``). A mute goes with its user (``ON DELETE
    CASCADE``), so a name created again never inherits one. Plain SQL, with no word a
    PostgreSQL port would have to quote."""
    script = """
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            origin TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            reason TEXT,
            expires REAL,
            node TEXT NOT NULL
        );
        CREATE INDEX audit_at ON audit (at);
        CREATE INDEX audit_actor ON audit (actor, id);
        CREATE INDEX audit_target ON audit (target, id);
        CREATE TABLE mutes (
            name TEXT PRIMARY KEY REFERENCES users (name) ON DELETE CASCADE,
            until REAL NOT NULL,
            reason TEXT,
            muted_by TEXT NOT NULL,
            muted_at REAL NOT NULL
        );
        CREATE INDEX messages_sender ON messages (sender, read);
        """
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
