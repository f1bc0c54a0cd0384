"""Deleted rows erased from the SQLite files, not only unlinked from their b-trees (an account's deletion).

SQLite leaves a deleted row's bytes in the freed space of its pages, and the WAL keeps older
page images until a checkpoint copies them back and the file restarts: ciphertext kept inline
(and the event payloads that repeat it) would stay readable on disk after the account that
owned it is gone. Inside `erasing`, this thread writes alone on its own connection (never in a
group commit, group_commit.py), with `secure_delete` (freed content overwritten with zeros); at
the end a TRUNCATE checkpoint moves every page into the database file and empties the WAL.
PostgreSQL keeps dead row versions until VACUUM reuses their space, which this does not force
(docs/deploy.md: deleting an account).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from .db import Database, SqliteDatabase

log = logging.getLogger(__name__)


@contextmanager
def erasing(db: Database) -> Iterator[None]:
    """Deletes made by this thread inside the block leave no copy in the SQLite files (a no-op elsewhere)."""
    if not isinstance(db, SqliteDatabase):
        yield
        return
    with db.writing_alone() as conn:  # this thread's own connection, for its transactions and reads
        conn.execute("PRAGMA secure_delete = ON")
        try:
            yield
        finally:
            conn.execute("PRAGMA secure_delete = OFF")
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error:
        # A full disk, say: the zeroed pages stay in the WAL, committed, for a later checkpoint.
        log.warning("the WAL could not be checkpointed after an erasure", exc_info=True)
        return
    if busy:  # a reader held an older snapshot past the busy timeout: the next checkpoint finishes it
        log.warning("the WAL still holds pages of an erasure: a reader was busy")
