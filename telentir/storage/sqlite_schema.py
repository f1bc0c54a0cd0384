"""SQLite's schema work: a new file filled with the whole schema, an older one migrated, scripts split.

Each runs on a connection of its own, outside `atomic()` (db.py), in `BEGIN IMMEDIATE` transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from . import schema


def split_script(script: str) -> list[str]:
    """The statements of an SQL script, each whole (`;` inside strings and comments is no end)."""
    statements, statement = [], ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            statements.append(statement)
            statement = ""
    return statements


def version_of(conn: sqlite3.Connection) -> int:
    return schema.version_of(conn)


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction on a connection of its own (schema work, outside `atomic`)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create(conn: sqlite3.Connection) -> None:
    """Fill a new, empty file with the whole current schema; refuse a file that holds something else."""
    if conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
        raise schema.SchemaError("the database file holds tables but no schema version: it is not Telentir's")
    execute_script(conn, schema.schema_sql())
    conn.execute(f"PRAGMA user_version = {schema.latest_version()}")  # an int: safe to format


def migrate_to_latest(conn: sqlite3.Connection) -> list[schema.Migration]:
    """Apply the pending migrations, each in its own transaction with the version it sets."""
    applied = []
    for step in schema.pending(version_of(conn)):
        with immediate(conn):
            if version_of(conn) >= step.version:
                continue  # another process applied it meanwhile
            execute_script(conn, step.sql)
            conn.execute(f"PRAGMA user_version = {step.version}")  # an int: safe to format
        applied.append(step)
    return applied


def execute_script(conn: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT our transaction first; run statement by statement instead.
    for statement in split_script(script):
        conn.execute(statement)
