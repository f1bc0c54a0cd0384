"""SQLite's WAL checkpoints run on a thread of their own."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from telentir.storage.checkpoints import CHECKPOINT_EVERY
from telentir.storage.db import SqliteDatabase

PAGE = 4096


def _commits(db: SqliteDatabase, count: int) -> None:
    for _ in range(count):
        with db.atomic() as tx:
            tx.insert(
                "INSERT INTO events (user_id, type, channel, payload, created_at) VALUES (?, ?, ?, ?, ?)",
                ("usr", "t", "c", "x" * PAGE, "now"),
            )


def _checkpoint_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "telentir-sqlite-checkpoints"}


def test_the_thread_copies_committed_pages_into_the_database_file(tmp_path: Path) -> None:
    others = _checkpoint_threads()  # databases other tests of this process still hold open
    db = SqliteDatabase(tmp_path / "t.db")
    db.open_schema()
    try:
        db.conn.execute("PRAGMA wal_autocheckpoint = 0")  # no commit checkpoints: only the thread can
        before = (tmp_path / "t.db").stat().st_size
        _commits(db, 2 * CHECKPOINT_EVERY)
        assert len(_checkpoint_threads() - others) == 1
        deadline = time.monotonic() + 30
        while (tmp_path / "t.db").stat().st_size < before + CHECKPOINT_EVERY * PAGE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "t.db").stat().st_size >= before + CHECKPOINT_EVERY * PAGE
    finally:
        db.close()
    assert _checkpoint_threads() - others == set()  # close() stops it


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
