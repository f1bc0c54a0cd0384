"""Group commit (telentir/storage/group_commit.py): concurrent writers of a process share COMMITs, each
returning only once its own statements are committed, a failed one undoing only its own."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

import pytest

from telentir.storage import group_commit
from telentir.storage.db import SqliteDatabase

from ..support import wait_until

INSERT = "INSERT INTO limit_events (bucket, at, expires_at) VALUES (?, 1, 2)"


def _buckets(db: SqliteDatabase) -> set[str]:
    # A connection of its own: it sees only what is committed.
    with sqlite3.connect(db.path) as conn:
        return {row[0] for row in conn.execute("SELECT bucket FROM limit_events")}


def _run_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait()
        try:
            work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def test_concurrent_writers_share_commits_and_each_returns_with_its_row_committed(db: SqliteDatabase) -> None:
    unseen: list[str] = []

    def work(index: int) -> None:
        for n in range(40):
            bucket = f"{index}-{n}"
            with db.atomic() as tx:
                tx.execute(INSERT, (bucket,))
                # Reads inside the block see the block's own write (the transaction's connection).
                assert db.query_one("SELECT 1 FROM limit_events WHERE bucket = ?", (bucket,)) is not None
            with sqlite3.connect(db.path) as other:  # committed, as any other process sees it
                if other.execute("SELECT 1 FROM limit_events WHERE bucket = ?", (bucket,)).fetchone() is None:
                    unseen.append(bucket)

    assert _run_threads(16, work) == []
    assert unseen == []
    assert len(_buckets(db)) == 16 * 40
    assert db._group.commits < 16 * 40  # grouped: fewer COMMITs than writes


def test_a_failed_writer_undoes_only_its_own_statements(db: SqliteDatabase) -> None:
    def work(index: int) -> None:
        for n in range(30):
            try:
                with db.atomic() as tx:
                    tx.execute(INSERT, (f"{index}-{n}",))
                    if n % 3 == 0:
                        raise KeyError("refused")
            except KeyError:
                pass

    assert _run_threads(12, work) == []
    assert _buckets(db) == {f"{i}-{n}" for i in range(12) for n in range(30) if n % 3}


def test_a_failed_commit_fails_every_writer_of_its_batch_and_keeps_nothing(
    db: SqliteDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "MAX_AGE_SECONDS", 60.0)  # the first writer's wait must not close it
    inside, results = threading.Event(), dict[str, Exception | None]()
    release = threading.Event()

    def first() -> None:
        try:
            with db.atomic() as tx:
                tx.execute(INSERT, ("first",))
                inside.set()
                release.wait(10)  # until the second writer waits for the turn: the batch stays open
        except Exception as exc:
            results["first"] = exc
        else:
            results["first"] = None

    def second() -> None:
        inside.wait(10)
        try:
            with db.atomic() as tx:  # joins the first's batch, and makes its COMMIT fail
                tx.execute("PRAGMA defer_foreign_keys = ON")
                tx.execute(
                    "INSERT INTO api_keys (id, user_id, name, key_hash, created_at) "
                    "VALUES ('ak_x', 'usr_nobody', 'n', 'h', 't')"
                )
        except Exception as exc:
            results["second"] = exc
        else:
            results["second"] = None

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    wait_until(lambda: db._group._waiting == 1, timeout=10)
    release.set()
    for thread in threads:
        thread.join(timeout=30)
    assert "FOREIGN KEY" in str(results["first"]) and "FOREIGN KEY" in str(results["second"])
    assert results["first"] is not results["second"]  # each thread raised its own
    assert _buckets(db) == set()
    with db.atomic() as tx:  # the shared connection still works
        tx.execute(INSERT, ("after",))
    assert _buckets(db) == {"after"}


def test_one_writer_at_a_time_commits_each_transaction_alone(db: SqliteDatabase) -> None:
    for n in range(5):
        with db.atomic() as tx:
            tx.execute(INSERT, (str(n),))
        assert str(n) in _buckets(db)
    assert db._group.commits == 5


def test_a_batch_left_open_for_a_writer_that_never_came_is_committed_by_its_members(db: SqliteDatabase) -> None:
    # A writer counted as waiting that never takes its turn (interrupted in between, say).
    db._group._waiting += 1
    try:
        started = time.monotonic()
        with db.atomic() as tx:
            tx.execute(INSERT, ("alone",))
        assert time.monotonic() - started < 5
    finally:
        db._group._waiting -= 1
    assert _buckets(db) == {"alone"}


def test_a_nested_transaction_is_refused(db: SqliteDatabase) -> None:
    with db.atomic():
        with pytest.raises(RuntimeError, match="nested"):
            with db.atomic():
                pass
