"""SQLite's WAL checkpoints run on a thread of their own, and the WAL keeps its size."""

from __future__ import annotations

import threading
from pathlib import Path

from telentir.storage.checkpoints import CHECKPOINT_EVERY
from telentir.storage.db import SqliteDatabase

PAGE = 4096
SQLITE_AUTOCHECKPOINT_PAGES = 1000  # SQLite's default, left as it is
COMMITS = 80 * CHECKPOINT_EVERY


def _commits(db: SqliteDatabase, count: int) -> None:
    for _ in range(count):
        with db.atomic() as tx:
            tx.insert(
                "INSERT INTO events (user_id, type, channel, payload, created_at) VALUES (?, ?, ?, ?, ?)",
                ("usr", "t", "c", "x" * PAGE, "now"),
            )


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "telentir-sqlite-checkpoints"]


def test_the_wal_is_checkpointed_by_a_thread_and_keeps_its_size(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "t.db")
    db.open_schema()
    try:
        _commits(db, COMMITS)
        assert len(_checkpoint_threads()) == 1
        assert db.query_value("PRAGMA wal_autocheckpoint") == SQLITE_AUTOCHECKPOINT_PAGES
        # Each commit adds two pages or more, many times past SQLite's checkpoint, so the WAL
        # restarted: it overshoots that mark (a commit's checkpoint yields to the thread's) but
        # stays bounded.
        wal_pages = (tmp_path / "t.db-wal").stat().st_size / PAGE
        assert wal_pages < 5 * SQLITE_AUTOCHECKPOINT_PAGES < COMMITS * 2, wal_pages
    finally:
        db.close()
    assert _checkpoint_threads() == []  # close() stops it


def test_committed_rows_are_in_the_database_after_close(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "t.db")
    db.open_schema()
    _commits(db, CHECKPOINT_EVERY + 1)
    db.close()
    again = SqliteDatabase(tmp_path / "t.db")
    try:
        assert again.query_value("SELECT COUNT(*) FROM events") == CHECKPOINT_EVERY + 1
    finally:
        again.close()
