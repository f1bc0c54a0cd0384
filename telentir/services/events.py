"""The event log: every change appends its event in its own transaction; old events are pruned.

The event table is the truth (streams replay from it). Once the transaction commits, the
broker is rung (`Runtime.doorbell`); a broker message is only a doorbell, so a broker
failure never fails or undoes the write. Pruning keeps the table within its retention
limits and records how far it went, so a stream resuming from a pruned cursor is told to
resync (docs/protocol.md §6).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..ids import iso, now_iso
from ..runtime import Runtime
from ..storage.db import Transaction

PRUNE_BATCH = 5000

# Filter fields per event type, in channel order (docs/protocol.md §6): payload key for each filter.
FILTERS: dict[str, tuple[tuple[str, str], ...]] = {
    "key_created": (("keyId", "key_id"),),
    "key_deleted": (("keyId", "key_id"),),
    "object_created": (("objectId", "id"), ("relatedId", "related_object_id")),
    "object_updated": (("objectId", "object_id"),),
    "object_deleted": (("objectId", "object_id"),),
    "publish": (("type", "type"), ("relatedId", "related_id"), ("objectId", "object_id")),
    "unpublish": (("type", "type"), ("relatedId", "related_id")),
}
EVENT_TYPES = tuple(FILTERS)
# A control record, never sent to a client: an API key or session token was revoked. Written
# in the revoking transaction, so every event committed after the revocation has a larger id,
# and streams, which read the table in id order, stop at it (docs/protocol.md §6).
REVOKED = "credential_revoked"


def channel_for(event_type: str, user_id: str, payload: dict[str, Any]) -> str:
    """`<type>:<user_id>:<f1>:<f2>…`, absent values as empty strings."""
    values = [_channel_value(payload.get(key)) for _, key in FILTERS[event_type]]
    return ":".join([event_type, user_id, *values])


def _channel_value(value: Any) -> str:
    return "" if value is None else str(value)


def append(
    rt: Runtime,
    tx: Transaction,
    event_type: str,
    user_id: str,
    payload: dict[str, Any],
    created_at: str,
    *,
    object_n: int | None = None,
) -> None:
    """Write the event row in `tx` and ring the broker once `tx` commits.

    `object_n`: the object row whose inline content is the event's ciphertext (an inline
    object's object_created, its payload's `content` None): the bytes are stored once, in that
    row, until `keep_created_content` copies them here.
    """
    channel = channel_for(event_type, user_id, payload)
    _append(rt, tx, event_type, user_id, channel, payload, created_at, object_n)


def keep_created_content(tx: Transaction, object_n: int) -> None:
    """Before an inline object's content changes or its row goes: its object_created event keeps the bytes.

    The event shared them with the row (object_n); they are copied into the event's own
    `content`, in the transaction of the change, so a stream reading the event (in one
    statement, see streaming/feed.py) finds the creation-time ciphertext before and after.
    """
    tx.execute(
        "UPDATE events SET content = (SELECT inline_content FROM objects WHERE n = ?), object_n = NULL "
        "WHERE object_n = ?",
        (object_n, object_n),
    )


def revocation_channel(user_id: str, credential_id: str) -> str:
    """`credential_revoked:<user_id>:<credential id>`: where a revocation rings."""
    return f"{REVOKED}:{user_id}:{credential_id}"


def append_revocation(rt: Runtime, tx: Transaction, user_id: str, credential_id: str) -> None:
    """Record in `tx` that a credential of the user was revoked; its streams end when they read it."""
    channel = revocation_channel(user_id, credential_id)
    _append(rt, tx, REVOKED, user_id, channel, {"credential": credential_id}, now_iso())


def _append(
    rt: Runtime,
    tx: Transaction,
    event_type: str,
    user_id: str,
    channel: str,
    payload: dict[str, Any],
    created_at: str,
    object_n: int | None = None,
) -> None:
    if tx.user_id not in (None, user_id):
        # A transaction scoped to one user is ordered against that user's writes only: another
        # user's event in it could commit after a larger id of theirs (a bug, not a client error).
        raise RuntimeError(f"a transaction scoped to user {tx.user_id} wrote an event of user {user_id}")
    data = json.dumps(payload, separators=(",", ":"))
    event_id = tx.insert(
        "INSERT INTO events (user_id, type, channel, payload, created_at, object_n) VALUES (?, ?, ?, ?, ?, ?)",
        (user_id, event_type, channel, data, created_at, object_n),
    )
    # Only the id travels: the message is a doorbell, and streams read the event itself from
    # the table in id order (whatever order doorbells arrive in), so it stays small however
    # large the object.
    message = json.dumps({"id": event_id, "event": event_type}, separators=(",", ":"))
    tx.after_commit(lambda: rt.doorbell.ring(channel, message))


def prune(rt: Runtime) -> int:
    """Drop events past the age or count limits (and expired tombstones); returns how many events went."""
    cutoff = datetime.now(UTC) - timedelta(seconds=rt.config.event_retention_seconds)
    cutoff_iso = iso(cutoff)  # to the millisecond, in the very format of created_at
    by_count = rt.db.query_one(
        "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?", (rt.config.event_retention_count,)
    )
    by_age = rt.db.query_value("SELECT MAX(id) FROM events WHERE created_at < ?", (cutoff_iso,))
    with rt.db.atomic() as tx:
        tx.execute("DELETE FROM object_tombstones WHERE deleted_at < ?", (cutoff_iso,))
    through = max(by_count[0] if by_count else 0, by_age or 0)
    if through == 0:
        return 0
    with rt.db.atomic() as tx:
        # Recorded first: a stream resuming from a cursor about to go is told to resync.
        tx.execute(
            "UPDATE event_retention SET pruned_through = CASE WHEN pruned_through > ? THEN pruned_through ELSE ? END "
            "WHERE id = 1",
            (through, through),
        )
    removed = 0
    while True:
        # Small batches, each its own transaction, so writers never wait long for the lock.
        with rt.db.atomic() as tx:
            batch: int = tx.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= ? ORDER BY id LIMIT ?)",
                (through, PRUNE_BATCH),
            ).rowcount
        removed += batch
        if batch < PRUNE_BATCH:
            return removed


@dataclass(frozen=True)
class Horizon:
    """Where the log stands for one user's new stream: newest id, how far it was pruned, oldest id kept."""

    newest: int
    pruned: int
    oldest: int | None


def horizon(rt: Runtime, user_id: str) -> Horizon:
    """The log's ends, read at a moment when no write of `user_id` is in flight.

    On PostgreSQL ids are committed in order per user, not across users (another user's
    larger id may be visible while this user's smaller one is still in flight): read then,
    every event of the user committed later lies beyond `newest`, and a stream that starts
    there misses none of them.
    """
    with rt.db.settled(user_id):
        return Horizon(newest_id(rt), pruned_through(rt), oldest_id(rt))


def newest_id(rt: Runtime) -> int:
    """The id of the newest event (0 when there is none)."""
    return int(rt.db.query_value("SELECT COALESCE(MAX(id), 0) FROM events"))


def pruned_through(rt: Runtime) -> int:
    """Every event with an id up to this one may have been pruned."""
    return int(rt.db.query_value("SELECT pruned_through FROM event_retention WHERE id = 1"))


def oldest_id(rt: Runtime) -> int | None:
    """The id of the oldest event kept, or None when there is none."""
    value = rt.db.query_value("SELECT MIN(id) FROM events")
    return None if value is None else int(value)
