"""Publications: an object published under a logical type for a related object (docs/protocol.md §5)."""

from __future__ import annotations

from typing import Any

from ..errors import NotFound
from ..ids import now_iso
from ..runtime import Runtime
from ..storage.db import Transaction
from . import events


def _check_owned(tx: Transaction, user_id: str, object_id: str, field: str) -> None:
    if not tx.execute("SELECT 1 FROM objects WHERE id = ? AND user_id = ?", (object_id, user_id)).fetchone():
        raise NotFound(f"{field}: no such object.")


def _record(row: Any) -> dict[str, Any]:
    return {
        "type": row["type"],
        "related_id": row["related_id"],
        "object_id": row["object_id"],
        "created_at": row["created_at"],
    }


def publish(rt: Runtime, user_id: str, pub_type: str, related_id: str, object_id: str) -> dict[str, Any]:
    """Record (or replace) the publication of `object_id` for `related_id` under `pub_type`."""
    now = now_iso()
    with rt.db.atomic(user_id=user_id) as tx:
        _check_owned(tx, user_id, related_id, "relatedId")
        _check_owned(tx, user_id, object_id, "objectId")
        tx.execute(
            "INSERT INTO publications (user_id, type, related_id, object_id, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (user_id, type, related_id) DO UPDATE SET object_id = excluded.object_id, "
            "created_at = excluded.created_at",
            (user_id, pub_type, related_id, object_id, now),
        )
        events.append(
            rt,
            tx,
            "publish",
            user_id,
            {"user_id": user_id, "type": pub_type, "related_id": related_id, "object_id": object_id, "timestamp": now},
            now,
        )
    return {"type": pub_type, "related_id": related_id, "object_id": object_id, "created_at": now}


def unpublish(rt: Runtime, user_id: str, pub_type: str, related_id: str) -> None:
    """Remove a publication (the ciphertext stays); 404 if nothing was published there."""
    now = now_iso()
    with rt.db.atomic(user_id=user_id) as tx:
        removed = tx.execute(
            "DELETE FROM publications WHERE user_id = ? AND type = ? AND related_id = ?",
            (user_id, pub_type, related_id),
        ).rowcount
        if not removed:
            raise NotFound("Nothing is published there.")
        events.append(
            rt,
            tx,
            "unpublish",
            user_id,
            {"user_id": user_id, "type": pub_type, "related_id": related_id, "timestamp": now},
            now,
        )


def list_publications(rt: Runtime, user_id: str, pub_type: str) -> list[dict[str, Any]]:
    """The caller's publications of one type, oldest first."""
    rows = rt.db.query(
        "SELECT * FROM publications WHERE user_id = ? AND type = ? ORDER BY created_at, related_id", (user_id, pub_type)
    )
    return [_record(r) for r in rows]
