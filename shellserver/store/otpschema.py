"""The second factor's tables, as one migration of the account store (``accounts.MIGRATIONS``).

Apart from ``otp.py`` so the account store can register it without importing the module
that uses the account store.
"""

from __future__ import annotations

import sqlite3


def schema_otp(db: sqlite3.Connection) -> None:
    """The second factor's two tables. Both go with their user (``ON DELETE CASCADE``), and
    the recovery codes with the secret, so ``otp reset`` or a deleted account leaves nothing."""
    script = """
        CREATE TABLE otp (
            user TEXT PRIMARY KEY REFERENCES users (name) ON DELETE CASCADE,
            secret TEXT NOT NULL,
            last_step INTEGER NOT NULL,
            enabled REAL NOT NULL
        );
        CREATE TABLE otp_recovery (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user TEXT NOT NULL REFERENCES otp (user) ON DELETE CASCADE,
            code_hash TEXT NOT NULL
        );
        CREATE INDEX otp_recovery_user ON otp_recovery (user);
        """
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)
