"""Encrypted objects: create, read, patch, delete, relations (docs/protocol.md §4).

Small ciphertexts (up to TELENTIR_INLINE_MAX_BYTES) live in the row itself, so they commit
with it. Larger ones are files, in the architecture's write order: the file is made durable
first, then one `BEGIN IMMEDIATE` transaction checks ownership, writes the row and its event;
a replaced or deleted file is removed only after the commit. A crash leaves at most
unreferenced files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..errors import BadRequest, Conflict, NotFound
from ..ids import is_id, new_id, now_iso
from ..runtime import Runtime
from ..storage.db import Transaction, set_clause
from ..storage.rows import ObjectRow, as_row, as_row_or_none
from ..wire import object_record
from . import events, quotas

LIST_CHUNK = 256
READ_ATTEMPTS = 100
MAX_DEPTH = 10_000
_INSERT = (
    "INSERT INTO objects (id, user_id, key_id, blob, inline_content, size, auth_tag, related_id, metadata, "
    "created_at, updated_at) "
)
_ROW = (
    "(:id, :user_id, :key_id, :blob, :inline_content, :size, :auth_tag, :related_id, :metadata, :created_at, "
    ":updated_at)"
)
# _check_references's condition, as a WHERE (CAST: PostgreSQL must know the parameter's type).
_OWNED_REFERENCES = (
    "EXISTS (SELECT 1 FROM keys WHERE id = :key_id AND user_id = :user_id) AND (CAST(:related_id AS TEXT) IS NULL "
    "OR EXISTS (SELECT 1 FROM objects WHERE id = :related_id AND user_id = :user_id))"
)
PATCHABLE_COLUMNS = frozenset(
    {"key_id", "metadata", "related_id", "blob", "inline_content", "size", "auth_tag", "updated_at"}
)


def store_content(rt: Runtime, content: bytes) -> str | None:
    """Write a large ciphertext to a durable file (returns its blob id); None: it goes in the row."""
    return None if len(content) <= rt.config.inline_max_bytes else rt.blobs.write(content)


def insert_object(
    rt: Runtime,
    tx: Transaction,
    user_id: str,
    key_id: str,
    blob_id: str | None,
    content: bytes,
    tag: bytes,
    related_id: str | None,
    metadata: str,
    *,
    enforce_quota: bool = True,
) -> str:
    """Insert an object row (content in the row, or in the already-written blob) and its event, inside `tx`.

    Its bytes count towards the user's quota; past it (unless `enforce_quota` is off) the
    transaction is refused with 413 `quota_exceeded`.
    """
    row = _insert_row(rt, tx, user_id, key_id, blob_id, content, tag, related_id, metadata, enforce_quota)
    return str(row["id"])


def _insert_row(
    rt: Runtime,
    tx: Transaction,
    user_id: str,
    key_id: str,
    blob_id: str | None,
    content: bytes,
    tag: bytes,
    related_id: str | None,
    metadata: str,
    enforce_quota: bool = True,
    check_references: bool = False,
) -> ObjectRow:
    """insert_object, returning the row as written; `check_references`: 404 unless the key and parent are theirs.

    The check rides in the INSERT itself (inserting nothing when it fails): a create runs one
    statement fewer while it holds the write lock, where each costs a hand-off of the GIL.
    """
    object_id, now = new_id("obj"), now_iso()
    row: ObjectRow = {
        "id": object_id,
        "user_id": user_id,
        "key_id": key_id,
        "blob": blob_id,
        "inline_content": content if blob_id is None else None,
        "size": len(content),
        "auth_tag": tag,
        "related_id": related_id,
        "metadata": metadata,
        "created_at": now,
        "updated_at": now,
    }
    values = "VALUES " + _ROW if not check_references else "SELECT " + _ROW.strip("()") + " WHERE " + _OWNED_REFERENCES
    inserted = tx.execute(_INSERT + values + " RETURNING n", row).fetchone()
    if inserted is None:  # the guarded INSERT found the key or the parent missing (or another user's)
        _check_references(tx, user_id, key_id, related_id)  # raises the 404 that applies
        raise RuntimeError("the object's references were refused, then found")
    object_n = inserted[0]
    quotas.add_bytes(rt, tx, user_id, len(content), enforce=enforce_quota)
    # The ciphertext is not copied into the event row. A file-backed (large) one: streams read it
    # from the object when they send the event (see event_content). An inline one: the event
    # shares the row's bytes (object_n) until they change (events.keep_created_content).
    shared = None if blob_id else object_n
    events.append(rt, tx, "object_created", user_id, _created_payload(row), now, object_n=shared)
    return row


def _created_payload(row: ObjectRow) -> dict[str, Any]:
    """The stored payload: `content` None, filled in by the streams that send it (streaming/feed.py)."""
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "metadata": json.loads(row["metadata"]),
        "key_id": row["key_id"],
        "related_object_id": row["related_id"],
        # Kept as null rather than left out: the key stays in its place in the JSON text, so
        # the payload a stream sends is the very text events stored before version 10 hold.
        # Streams splice the hex in at the last `"content":null` (streaming/feed.py): only
        # server-made values may follow it, never anything a client chose.
        "content": None,
        "auth_tag": bytes(row["auth_tag"]).hex(),
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def event_content(rt: Runtime, object_id: str) -> str | None:
    """Hex ciphertext of a file-backed object for its object_created event (None once deleted)."""
    row = rt.db.query_one("SELECT * FROM objects WHERE id = ?", (object_id,))
    record = None if row is None else _with_content(rt, row)
    return None if record is None else record["content"]


def _check_references(tx: Transaction, user_id: str, key_id: str | None, related_id: str | None) -> None:
    """404 unless the key and the parent (each when given) exist and are the caller's.

    One statement for both: under load every statement costs the thread a hand-off of the GIL.
    """
    key_ok, parent_ok = tx.execute(
        # CAST: PostgreSQL must know a parameter's type, and `? IS NULL` alone does not say it.
        "SELECT CAST(? AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM keys WHERE id = ? AND user_id = ?), "
        "CAST(? AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM objects WHERE id = ? AND user_id = ?)",
        (key_id, key_id, user_id, related_id, related_id, user_id),
    ).fetchone()
    if not key_ok:
        raise NotFound("keyId: no such key.", code="key_not_found")
    if not parent_ok:
        raise NotFound("relatedId: no such object.", code="related_not_found")


def create_object(
    rt: Runtime, user_id: str, key_id: str, content: bytes, tag: bytes, related_id: str | None, metadata: str
) -> dict[str, Any]:
    """PUT/POST /objects: store ciphertext under the caller's key, optionally under a parent."""
    # A file is written before the write lock is taken, so concurrent writers overlap their fsyncs.
    blob_id = store_content(rt, content)
    with rt.db.atomic(user_id=user_id) as tx:
        if blob_id is not None:
            tx.after_rollback(lambda: rt.blobs.delete(blob_id))
        row = _insert_row(rt, tx, user_id, key_id, blob_id, content, tag, related_id, metadata, check_references=True)
    # Answered from the row as written: reading it back would cost a statement and can only
    # find the same values (or, after a concurrent delete, nothing to answer with).
    return object_record(row, content)


def _row(rt: Runtime, user_id: str, object_id: str) -> ObjectRow:
    row = (
        rt.db.query_one("SELECT * FROM objects WHERE id = ? AND user_id = ?", (object_id, user_id))
        if is_id(object_id, "obj")
        else None
    )
    if row is None:
        raise NotFound("No such object.")
    return as_row(ObjectRow, row)


def get_object(rt: Runtime, user_id: str, object_id: str) -> dict[str, Any]:
    """The caller's object with its ciphertext; 404 if absent or someone else's."""
    record = _with_content(rt, _row(rt, user_id, object_id))
    if record is None:
        raise NotFound("No such object.")
    return record


def _with_content(rt: Runtime, row: ObjectRow) -> dict[str, Any] | None:
    """The record of `row` with its ciphertext; None if the object was deleted meanwhile.

    Reads take no lock, and a patch or delete removes the old file right after its commit:
    a row read a moment before that commit names a file that is gone. Read the row again.
    """
    for _ in range(READ_ATTEMPTS):
        if row["blob"] is None:  # then the content is in the row (the table's CHECK)
            return object_record(row, bytes(row["inline_content"] or b""))
        try:
            return object_record(row, rt.blobs.read(row["blob"]))
        except FileNotFoundError:
            fresh = as_row_or_none(ObjectRow, rt.db.query_one("SELECT * FROM objects WHERE n = ?", (row["n"],)))
            if fresh is None:
                return None
            if fresh["blob"] == row["blob"]:
                raise  # the current row names a missing file: damage, not a race
            row = fresh
    raise RuntimeError(f"object {row['id']} kept changing while being read")


def is_store(rt: Runtime, object_id: str) -> bool:
    """Whether the object is one of a root's eight store objects."""
    return rt.db.query_one("SELECT 1 FROM stores WHERE object_id = ?", (object_id,)) is not None


def update_object(rt: Runtime, user_id: str, object_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """PATCH /objects/{id}: any of key_id, metadata, related_id, and content+auth_tag together."""
    _row(rt, user_id, object_id)  # 404 before any file is written
    content = changes.pop("content", None)
    new_blob = None if content is None else store_content(rt, content)
    with rt.db.atomic(user_id=user_id) as tx:
        if new_blob is not None:
            tx.after_rollback(lambda: rt.blobs.delete(new_blob))
        if content is not None:
            changes.update(blob=new_blob, inline_content=None if new_blob else content, size=len(content))
        old = _locked_row(tx, user_id, object_id)
        old_blob = old["blob"]
        if content is not None and old_blob is None:
            events.keep_created_content(tx, old["n"])  # the creation-time bytes outlive the row's
        _apply_update(rt, tx, user_id, object_id, changes)
        if content is not None:
            quotas.add_bytes(rt, tx, user_id, len(content) - int(old["size"]))
        if content is not None and old_blob is not None:
            tx.after_commit(lambda: rt.blobs.delete(old_blob))
    return get_object(rt, user_id, object_id)


def _locked_row(tx: Transaction, user_id: str, object_id: str) -> ObjectRow:
    # Re-read inside the write transaction: a concurrent delete may have won the lock first.
    row = tx.execute("SELECT * FROM objects WHERE id = ? AND user_id = ?", (object_id, user_id)).fetchone()
    if row is None:
        raise NotFound("No such object.")
    return as_row(ObjectRow, row)


def _apply_update(rt: Runtime, tx: Transaction, user_id: str, object_id: str, changes: dict[str, Any]) -> None:
    if (
        changes.get("related_id") is not None
        and tx.execute("SELECT 1 FROM stores WHERE object_id = ?", (object_id,)).fetchone()
    ):
        raise Conflict("A store object cannot be placed under another object.", code="store_object")
    _check_references(tx, user_id, changes.get("key_id"), changes.get("related_id"))
    if changes.get("related_id") is not None:
        _check_no_cycle(tx, object_id, changes["related_id"])
    now = now_iso()
    values = {**changes, "updated_at": now}
    tx.execute(
        f"UPDATE objects SET {set_clause(values, PATCHABLE_COLUMNS)} WHERE id = :id",  # noqa: S608 - checked columns
        {**values, "id": object_id},
    )
    key_id = tx.execute("SELECT key_id FROM objects WHERE id = ?", (object_id,)).fetchone()[0]
    _updated_event(rt, tx, user_id, object_id, key_id, now)


def _updated_event(rt: Runtime, tx: Transaction, user_id: str, object_id: str, key_id: str, now: str) -> None:
    events.append(
        rt,
        tx,
        "object_updated",
        user_id,
        {"object_id": object_id, "key_id": key_id, "user_id": user_id, "updated_at": now},
        now,
    )


def _check_no_cycle(tx: Transaction, object_id: str, new_parent: str) -> None:
    ancestors = tx.execute(
        # The start is read from its row (it exists: checked above), so both terms share the
        # column's type and collation, as PostgreSQL requires.
        "WITH RECURSIVE up(id, depth) AS (SELECT id, 0 FROM objects WHERE id = ? UNION ALL "
        "SELECT o.related_id, up.depth + 1 FROM objects o JOIN up ON o.id = up.id "
        "WHERE o.related_id IS NOT NULL AND up.depth < ?) SELECT 1 FROM up WHERE id = ? LIMIT 1",
        (new_parent, MAX_DEPTH, object_id),
    ).fetchone()
    if ancestors:
        raise Conflict("relatedId would make the object its own ancestor.", code="relation_cycle")


def delete_object(rt: Runtime, user_id: str, object_id: str, cascade: bool) -> None:
    """DELETE /objects/{id}: the object, its file, relations and publications; children detached or removed."""
    _row(rt, user_id, object_id)
    if is_store(rt, object_id):
        raise Conflict("A store object of the root cannot be deleted.", code="store_object")
    with rt.db.atomic(user_id=user_id) as tx:
        _locked_row(tx, user_id, object_id)
        doomed = _subtree(tx, object_id) if cascade else [object_id]
        blobs = _remove_objects(rt, tx, user_id, doomed)
        tx.after_commit(lambda: rt.blobs.delete_many(blobs))


def _subtree(tx: Transaction, object_id: str) -> list[str]:
    rows = tx.execute(
        "WITH RECURSIVE down(id) AS (SELECT id FROM objects WHERE id = ? UNION SELECT o.id FROM objects o JOIN down "
        "ON o.related_id = down.id) SELECT id FROM down",
        (object_id,),
    ).fetchall()
    return [r[0] for r in rows]


def _remove_objects(rt: Runtime, tx: Transaction, user_id: str, ids: list[str]) -> list[str]:
    now, blobs, doomed, freed = now_iso(), [], set(ids), 0
    for object_id in ids:
        row = tx.execute("SELECT blob, related_id, n, size FROM objects WHERE id = ?", (object_id,)).fetchone()
        freed += int(row["size"])
        if row["blob"] is not None:
            blobs.append(row["blob"])
        if row["related_id"] is not None:
            tx.execute(
                "INSERT INTO object_tombstones (id, related_id, n, deleted_at) VALUES (?, ?, ?, ?) ON CONFLICT (id) "
                "DO UPDATE SET related_id = excluded.related_id, n = excluded.n, deleted_at = excluded.deleted_at",
                (object_id, row["related_id"], row["n"], now),
            )
        _drop_publications(rt, tx, user_id, object_id, now)
        _detach_children(rt, tx, user_id, object_id, now, doomed)
        if row["blob"] is None:
            events.keep_created_content(tx, row["n"])  # its object_created event outlives the row
        tx.execute("DELETE FROM objects WHERE id = ?", (object_id,))
        events.append(
            rt, tx, "object_deleted", user_id, {"object_id": object_id, "user_id": user_id, "deleted_at": now}, now
        )
    quotas.add_bytes(rt, tx, user_id, -freed)
    return blobs


def _detach_children(rt: Runtime, tx: Transaction, user_id: str, parent_id: str, now: str, doomed: set[str]) -> None:
    children = tx.execute("SELECT id, key_id FROM objects WHERE related_id = ?", (parent_id,)).fetchall()
    tx.execute("UPDATE objects SET related_id = NULL, updated_at = ? WHERE related_id = ?", (now, parent_id))
    for child in children:
        if child["id"] not in doomed:  # children removed by a cascade get object_deleted instead
            _updated_event(rt, tx, user_id, child["id"], child["key_id"], now)


def _drop_publications(rt: Runtime, tx: Transaction, user_id: str, object_id: str, now: str) -> None:
    rows = tx.execute(
        "SELECT type, related_id FROM publications WHERE user_id = ? AND (object_id = ? OR related_id = ?)",
        (user_id, object_id, object_id),
    ).fetchall()
    for row in rows:
        tx.execute(
            "DELETE FROM publications WHERE user_id = ? AND type = ? AND related_id = ?",
            (user_id, row["type"], row["related_id"]),
        )
        events.append(
            rt,
            tx,
            "unpublish",
            user_id,
            {"user_id": user_id, "type": row["type"], "related_id": row["related_id"], "timestamp": now},
            now,
        )


# --- relations ------------------------------------------------------------------------


def related_page(
    rt: Runtime, user_id: str, parent_id: str, limit: int, after: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of children, oldest first, and the cursor of the next page (None on the last)."""
    _row(rt, user_id, parent_id)
    start = _cursor_position(rt, parent_id, after)
    rows = rt.db.query(
        "SELECT * FROM objects WHERE related_id = ? AND n > ? ORDER BY n LIMIT ?", (parent_id, start, limit + 1)
    )
    page = list(_child_records(rt, parent_id, rows[:limit]))
    return page, (rows[limit - 1]["id"] if len(rows) > limit else None)


def count_related(rt: Runtime, user_id: str, parent_id: str) -> int:
    """How many children one of the user's objects has now (404 if it is not theirs)."""
    _row(rt, user_id, parent_id)
    return int(rt.db.query_value("SELECT COUNT(*) FROM objects WHERE related_id = ?", (parent_id,)))


def _child_records(rt: Runtime, parent_id: str, rows: list[Any]) -> Iterator[dict[str, Any]]:
    for row in rows:
        record = _with_content(rt, row)
        if record is not None and record["related_object_id"] == parent_id:  # not deleted or moved meanwhile
            yield record


def _cursor_position(rt: Runtime, parent_id: str, after: str | None) -> int:
    if after is None:
        return 0
    # A cursor naming an object deleted since (read a page, delete it, ask for the next) is
    # resolved through its tombstone.
    row = (
        rt.db.query_one(
            "SELECT n FROM objects WHERE id = ? AND related_id = ? UNION ALL "
            "SELECT n FROM object_tombstones WHERE id = ? AND related_id = ? LIMIT 1",
            (after, parent_id, after, parent_id),
        )
        if is_id(after, "obj")
        else None
    )
    if row is None:
        raise BadRequest(
            "after must be the id of an object in this list (the X-Next-Cursor value).", code="invalid_cursor"
        )
    return int(row["n"])


def iter_related(rt: Runtime, user_id: str, parent_id: str) -> Iterator[dict[str, Any]]:
    """Every child, oldest first, read in chunks so memory stays flat however many there are."""
    _row(rt, user_id, parent_id)
    return _iter_children(rt, parent_id)


def _iter_children(rt: Runtime, parent_id: str) -> Iterator[dict[str, Any]]:
    position = 0
    while True:
        # Short queries per chunk: no read transaction stays open while the client reads slowly.
        rows = rt.db.query(
            "SELECT * FROM objects WHERE related_id = ? AND n > ? ORDER BY n LIMIT ?", (parent_id, position, LIST_CHUNK)
        )
        yield from _child_records(rt, parent_id, rows)
        if len(rows) < LIST_CHUNK:
            return
        position = rows[-1]["n"]
