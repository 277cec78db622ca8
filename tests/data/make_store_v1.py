"""How tests/data/store-v1.sqlite was made: by the code at commit 2eaa289 (schema version 1).

Kept for the record; the file itself is committed, so the test opens a store that today's
(then) code really made, not one rebuilt by the code under test.
Run from the repository root with that commit installed: python tests/data/make_store_v1.py
"""

import os

from shellserver.store.accounts import ROLE_ADMIN, AccountDB
from shellserver.store.passwords import hash_password

PATH = os.path.join(os.path.dirname(__file__), "store-v1.sqlite")

if os.path.exists(PATH):
    os.remove(PATH)
db = AccountDB.open(PATH)
db.create("admin", hash_password("admin-password", 4), ROLE_ADMIN, now=1764000000.0)
db.create("alice", hash_password("alice-password", 4), now=1764000100.0)
db.create("bob", hash_password("bob-password", 4), now=1764000200.0)
record = db.record_login("alice", "tel/0", "127.0.0.1", 1764000300.0)
db.record_logout(record, 1764000400.0)
db._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
db._db.execute("PRAGMA journal_mode=DELETE")
db.close()
