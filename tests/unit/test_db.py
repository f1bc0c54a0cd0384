"""Database connections: parked by a finished request, reused by the next one."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from telentir.storage.db import SqliteDatabase


def in_thread(fn):
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def test_a_parked_connection_serves_the_next_thread(db: SqliteDatabase) -> None:
    first = db.conn
    db.park_connection()
    assert in_thread(lambda: db.conn) is first
    assert db.conn is not first  # taken by that thread (which never parked it): this one opens its own


def test_a_parked_connection_never_carries_an_open_transaction(db: SqliteDatabase) -> None:
    db.conn.execute("BEGIN")
    db.park_connection()
    assert in_thread(lambda: db.conn.in_transaction) is False


def test_close_also_closes_parked_connections(db: SqliteDatabase) -> None:
    conn = db.conn
    db.park_connection()
    db.close()
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
    with pytest.raises(RuntimeError):
        _ = db.conn
