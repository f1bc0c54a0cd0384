"""The outbox: every change appends its event in its own transaction; the broker is rung after commit.

The event table is the truth (streams replay from it); a broker message is only a doorbell,
so a broker failure is logged and counted, never allowed to fail or undo the write.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

from ..pubsub.memory import MemoryBroker
from ..runtime import Runtime
from ..storage.db import Transaction

log = logging.getLogger(__name__)

# Filter fields per event type, in channel order (spec §6): payload key for each filter.
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


class PublishStats:
    """Counts of broker publishes, for /readyz-style visibility and tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.published = 0
        self.failed = 0

    def count(self, ok: bool) -> None:
        """Record one publish attempt."""
        with self._lock:
            if ok:
                self.published += 1
            else:
                self.failed += 1


def channel_for(event_type: str, user_id: str, payload: dict[str, Any]) -> str:
    """`<type>:<user_id>:<f1>:<f2>…`, absent values as empty strings."""
    values = [_channel_value(payload.get(key)) for _, key in FILTERS[event_type]]
    return ":".join([event_type, user_id, *values])


def _channel_value(value: Any) -> str:
    return "" if value is None else str(value)


def append(
    rt: Runtime, tx: Transaction, event_type: str, user_id: str, payload: dict[str, Any], created_at: str
) -> None:
    """Write the event row in `tx` and publish it on the broker once `tx` commits."""
    data = json.dumps(payload, separators=(",", ":"))
    channel = channel_for(event_type, user_id, payload)
    cursor = tx.execute(
        "INSERT INTO events (user_id, type, channel, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        (user_id, event_type, channel, data, created_at),
    )
    # Only the id travels: the message is a doorbell, and streams read the event itself from
    # the table in id order (whatever order doorbells arrive in), so it stays small however
    # large the object.
    message = json.dumps({"id": cursor.lastrowid, "event": event_type}, separators=(",", ":"))
    tx.after_commit(lambda: rt.extras["doorbell"].ring(channel, message))


class Doorbell:
    """Rings the broker from one background thread, so a slow or hung broker never delays a write.

    A doorbell that cannot be rung (queue full, broker down) is dropped and counted: streams
    still send the event at their next heartbeat, when they read the table anyway.
    """

    def __init__(self, broker: Any, stats: PublishStats, max_pending: int = 10_000) -> None:
        self.broker, self.stats = broker, stats
        # The in-process broker cannot hang: ringing it inline spares every write a hand-off to
        # the publisher thread (two context switches and a GIL hand-off, measured on create).
        self.inline = isinstance(broker, MemoryBroker)
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="telentir-doorbell", daemon=True)
        if not self.inline:
            self._thread.start()

    def ring(self, channel: str, message: str) -> None:
        """Publish at once (in-process broker) or queue a publish; never blocks, never raises."""
        if self.inline:
            self._publish((channel, message))
            return
        try:
            self._queue.put_nowait((channel, message))
        except queue.Full:
            self.stats.count(False)
            log.warning(
                "doorbell queue full; dropped the doorbell of %s (streams catch up at their heartbeat)", channel
            )

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self._publish(item)

    def _publish(self, item: tuple[str, str]) -> None:
        try:
            self.broker.publish(*item)
            self.stats.count(True)
        except Exception:
            self.stats.count(False)
            log.warning(
                "broker publish failed on %s; streams will catch up from the event table", item[0], exc_info=True
            )

    def close(self) -> None:
        """Ring what is queued, then stop (waits a few seconds at most)."""
        if self.inline:
            return
        try:
            self._queue.put(None, timeout=5)
        except queue.Full:
            return
        self._thread.join(timeout=5)
