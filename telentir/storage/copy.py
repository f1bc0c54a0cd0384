"""Moving a deployment: copy an embedded data folder (SQLite + files) into PostgreSQL (+ a bucket).

`telentir copy-data` calls `copy_deployment`: with the server stopped, every table of the
SQLite file is copied into an empty PostgreSQL database (parents before children, ids
kept, identities continued after the highest id ever handed out, so event ids and
Last-Event-ID cursors keep their meaning), and every ciphertext file into the target
blob store, written before the rows that name it. `verify_copy` then compares row counts
and a hash of every table's rows, and reads every object's ciphertext back from the new
engines to compare it byte for byte.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .blobs import BlobStore
from .db import SqliteDatabase
from .postgres import PostgresDatabase

CHUNK = 500
OBJECTS = "objects"
HASH_MODULUS = 2**256

Progress = Callable[[int], None]  # called with how many more items (rows or blobs) are done


class CopyError(Exception):
    """The copy cannot start (a target that is not empty) or did not verify."""


@dataclass
class CopyReport:
    """What was copied and checked: rows per table, blobs, objects read back."""

    rows: dict[str, int] = field(default_factory=dict)
    blobs: int = 0
    objects_verified: int = 0


def tables_in_order(source: SqliteDatabase) -> list[str]:
    """The source's tables, each after the tables its foreign keys name."""
    names = [
        row[0]
        for row in source.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    ]
    parents = {name: {row[2] for row in source.query(f"PRAGMA foreign_key_list({name})")} for name in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = sorted(n for n in names if n not in ordered and parents[n] - {n} <= set(ordered))
        if not ready:
            raise CopyError(f"foreign keys form a cycle among {sorted(set(names) - set(ordered))}")
        ordered.extend(ready)
    return ordered


def count_items(source: SqliteDatabase, tables: list[str]) -> int:
    """Rows of every table plus blob files: the length of the progress bar."""
    rows = sum(int(source.query_value(f"SELECT COUNT(*) FROM {table}")) for table in tables)  # noqa: S608
    return rows + int(source.query_value("SELECT COUNT(*) FROM objects WHERE blob IS NOT NULL"))


def check_target_empty(target: PostgresDatabase, tables: list[str]) -> None:
    """Refuse a target holding data (a new schema holds only event_retention's starting row)."""
    for table in tables:
        count = int(target.query_value(f"SELECT COUNT(*) FROM {table}"))  # noqa: S608 - names from the schema
        if count and table != "event_retention":
            raise CopyError(f"the target database is not empty: {table} has {count} row(s)")


def copy_deployment(
    source: SqliteDatabase,
    source_blobs: BlobStore,
    target: PostgresDatabase,
    target_blobs: BlobStore | None,
    progress: Progress,
) -> CopyReport:
    """Copy every table (and, with `target_blobs`, every blob) from the embedded storage into the new engines."""
    tables = tables_in_order(source)
    check_target_empty(target, tables)
    with target.atomic() as tx:
        tx.execute("DELETE FROM event_retention")  # the new schema's starting row; the source's replaces it
    report = CopyReport()
    for table in tables:
        report.rows[table] = _copy_table(source, source_blobs, target, target_blobs, table, report, progress)
    _continue_identities(source, target)
    return report


def _copy_table(
    source: SqliteDatabase,
    source_blobs: BlobStore,
    target: PostgresDatabase,
    target_blobs: BlobStore | None,
    table: str,
    report: CopyReport,
    progress: Progress,
) -> int:
    columns = [info[1] for info in source.query(f"PRAGMA table_info({table})")]
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"  # noqa: S608
    copied = 0
    for chunk in _chunks(source, table, columns):
        rows = [list(row) for row in chunk]
        if table == OBJECTS and target_blobs is not None:
            moved = _move_blobs(rows, columns.index("blob"), source_blobs, target_blobs)
            report.blobs += moved
            progress(moved)
        with target.atomic() as tx:
            tx.execute_many(sql, rows)
        copied += len(rows)
        progress(len(rows))
    return copied


def _chunks(source: SqliteDatabase, table: str, columns: list[str]) -> Iterator[list[sqlite3.Row]]:
    # rowid order, read a chunk at a time: memory stays flat however large the table.
    last = -(2**63)
    select = f"SELECT rowid AS _rowid_, {', '.join(columns)} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"  # noqa: S608
    while True:
        rows = source.query(select, (last, CHUNK))
        if not rows:
            return
        last = rows[-1][0]
        yield [_without_rowid(row) for row in rows]


def _without_rowid(row: sqlite3.Row) -> Any:
    return tuple(row)[1:]


def _move_blobs(rows: list[list[Any]], blob_index: int, source: BlobStore, target: BlobStore) -> int:
    """Write the rows' blobs to the target store first (the rows then name the new ids)."""
    pending = [(row, row[blob_index]) for row in rows if row[blob_index] is not None]
    new_ids = target.write_many([source.read(blob_id) for _, blob_id in pending])
    for (row, _), new_id in zip(pending, new_ids, strict=True):
        row[blob_index] = new_id
    return len(pending)


def _continue_identities(source: SqliteDatabase, target: PostgresDatabase) -> None:
    # AUTOINCREMENT's high-water mark outlives pruned rows: ids must continue past it, not past MAX(id).
    high = {row[0]: int(row[1]) for row in source.query("SELECT name, seq FROM sqlite_sequence")}
    for table, column in target.identity_columns().items():
        last = int(target.query_value(f"SELECT COALESCE(MAX({column}), 0) FROM {table}"))  # noqa: S608
        target.continue_ids_after(table, column, max(last, high.get(table, 0)))


def table_digest(db: Any, table: str, columns: list[str]) -> tuple[int, str]:
    """(row count, order-independent hash of the rows' values) of `columns` of a table."""
    total, count = 0, 0
    for row in db.query(f"SELECT {', '.join(columns)} FROM {table}"):  # noqa: S608
        encoded = repr(tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)).encode()
        total = (total + int.from_bytes(hashlib.sha256(encoded).digest(), "big")) % HASH_MODULUS
        count += 1
    return count, f"{total:064x}"


def verify_copy(
    source: SqliteDatabase,
    source_blobs: BlobStore,
    target: PostgresDatabase,
    target_blobs: BlobStore,
    progress: Progress,
) -> CopyReport:
    """Compare counts and row hashes of every table, then every object's ciphertext, byte for byte."""
    report = CopyReport()
    for table in tables_in_order(source):
        columns = [info[1] for info in source.query(f"PRAGMA table_info({table})")]
        if table == OBJECTS:
            columns.remove("blob")  # blob ids are new in a new store; contents are compared below
        want, got = table_digest(source, table, columns), table_digest(target, table, columns)
        if want != got:
            raise CopyError(f"{table}: {want[0]} row(s) in the source, {got[0]} copied, or their values differ")
        report.rows[table] = want[0]
    report.objects_verified = _verify_contents(source, source_blobs, target, target_blobs, progress)
    return report


def _verify_contents(
    source: SqliteDatabase,
    source_blobs: BlobStore,
    target: PostgresDatabase,
    target_blobs: BlobStore,
    progress: Progress,
) -> int:
    checked, last = 0, 0
    while True:
        rows = source.query(
            "SELECT n, id, blob, inline_content FROM objects WHERE n > ? ORDER BY n LIMIT ?", (last, CHUNK)
        )
        if not rows:
            return checked
        copies = {
            r["id"]: r
            for r in target.query(
                "SELECT id, blob, inline_content FROM objects WHERE n >= ? AND n <= ?", (rows[0]["n"], rows[-1]["n"])
            )
        }
        for row in rows:
            copy = copies.get(row["id"])
            if copy is None or _content(source_blobs, row) != _content(target_blobs, copy):
                raise CopyError(f"object {row['id']}: its ciphertext did not read back the same from the target")
            checked += 1
        last = rows[-1]["n"]
        progress(len(rows))


def _content(blobs: BlobStore, row: Any) -> bytes:
    return bytes(row["inline_content"]) if row["blob"] is None else blobs.read(row["blob"])
