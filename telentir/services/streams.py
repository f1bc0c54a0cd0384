"""Event feeds for SSE and WebSocket clients: subscribe, replay from the table, then live.

The order matters: the pattern subscription is confirmed *before* the cursor is fixed (the
client's, or the newest id for a fresh stream), so any event committed later rings the
doorbell. Broker messages are only doorbells: what to send is always read from the events
table after the last id sent, in id order. Nothing is lost, nothing is sent twice, and ids
only grow, even when several processes publish their commits out of order.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Generator, Iterator

from ..errors import BadRequest, Forbidden, NotFound, RateLimited, ServiceUnavailable
from ..ids import iso
from ..pubsub import compile_glob, escape_glob
from ..runtime import Runtime
from redis.exceptions import RedisError
from . import objects
from .events import EVENT_TYPES, FILTERS

log = logging.getLogger(__name__)
REPLAY_CHUNK = 500
CLOSED_CHECK_SECONDS = 1.0
MAX_FILTER_LENGTH = 200
PRUNE_BATCH = 5000


@dataclass(frozen=True)
class Item:
    """One thing to send: an event, a resync notice, or a heartbeat."""

    kind: str  # "open" | "event" | "resync" | "heartbeat"
    event_id: int | None = None
    event: str | None = None
    data: Any = None


class StreamSlots:
    """Counts open streams per process and per user, refusing past the caps."""

    def __init__(self, max_total: int, max_per_user: int) -> None:
        self.max_total, self.max_per_user = max_total, max_per_user
        self._lock = threading.Lock()
        self._per_user: Counter[str] = Counter()

    @property
    def open(self) -> int:
        """Streams open now in this process."""
        with self._lock:
            return sum(self._per_user.values())

    def acquire(self, user_id: str) -> None:
        """Take a slot, or raise 503 (process full) / 429 (user's cap)."""
        with self._lock:
            if sum(self._per_user.values()) >= self.max_total:
                raise ServiceUnavailable("Too many open event streams on this server; retry shortly.",
                                         code="too_many_streams")
            if self._per_user[user_id] >= self.max_per_user:
                raise RateLimited(retry_after=5, message="You have too many open event streams; close one first.")
            self._per_user[user_id] += 1

    def release(self, user_id: str) -> None:
        """Give a slot back."""
        with self._lock:
            self._per_user[user_id] -= 1
            if self._per_user[user_id] <= 0:
                del self._per_user[user_id]


@dataclass(frozen=True)
class FeedRequest:
    """What a client asked for: type, filters (camelCase → value), resume cursor."""

    user_id: str
    event_type: str
    filters: dict[str, str]
    since: int | None

    @property
    def pattern(self) -> str:
        """The broker pattern: `*` for absent filters, escaped values otherwise."""
        parts = [escape_glob(self.filters[name]) if name in self.filters else "*"
                 for name, _ in FILTERS[self.event_type]]
        return ":".join([self.event_type, escape_glob(self.user_id), *parts])


def parse_request(user_id: str, event_type: str, args: dict[str, str], last_event_id: str | None) -> FeedRequest:
    """Validate the type, filters, `userId` rule and resume cursor of a stream request."""
    if event_type not in EVENT_TYPES:
        raise NotFound(f"Unknown event type {event_type!r}; use one of {', '.join(EVENT_TYPES)}.")
    if "userId" in args and args["userId"] != user_id:
        raise Forbidden("userId may only be your own id.")
    allowed = {name for name, _ in FILTERS[event_type]}
    filters = {name: value for name, value in args.items() if name in allowed}
    for name, value in filters.items():
        if len(value) > MAX_FILTER_LENGTH:
            raise BadRequest(f"{name} is too long.")
    return FeedRequest(user_id, event_type, filters, _cursor(last_event_id, args.get("since")))


def _cursor(last_event_id: str | None, since: str | None) -> int | None:
    raw = last_event_id if last_event_id not in (None, "") else since
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise BadRequest("Last-Event-ID / since must be an event id (a whole number).")
    return int(raw)


def feed(rt: Runtime, req: FeedRequest, is_closed: Callable[[], bool]) -> Generator[Item, None, None]:
    """Subscribe, replay what the cursor missed, then follow live; ends when the client goes.

    The first item, `open`, comes once the subscription is confirmed: callers take it
    before answering, so a full server or a dead broker is still a JSON error.
    """
    slots: StreamSlots = rt.extras["stream_slots"]
    slots.acquire(req.user_id)
    pubsub = None
    try:
        pubsub = rt.broker.pubsub()
        _subscribe(pubsub, req.pattern)
        # Read once subscribed and before answering: whatever commits later rings our doorbell.
        start = _newest_id(rt) if req.since is None else req.since
        yield Item("open")
        last = yield from _replay(rt, req, start)
        yield from _follow(rt, req, pubsub, last, is_closed)
    finally:
        # Free the subscription and the slot at once, whatever ended the stream.
        if pubsub is not None:
            _close_quietly(pubsub)
        slots.release(req.user_id)


def _subscribe(pubsub: Any, pattern: str) -> None:
    try:
        pubsub.psubscribe(pattern)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message is not None and message["type"] == "psubscribe":
                return
    except (ConnectionError, OSError, RedisError) as exc:
        log.warning("event broker unavailable: %s", exc)
    raise ServiceUnavailable("The event broker is not answering; retry shortly.", code="broker_unavailable")


def _newest_id(rt: Runtime) -> int:
    return int(rt.db.query_one("SELECT COALESCE(MAX(id), 0) FROM events")[0])


def _replay(rt: Runtime, req: FeedRequest, start: int) -> Generator[Item, None, int]:
    """Replay stored events after the cursor (resync first if the cursor was pruned); returns the last id."""
    if req.since is None:
        return start  # a fresh stream replays nothing: everything from now on arrives live
    pruned_through = rt.db.query_one("SELECT pruned_through FROM event_retention WHERE id = 1")[0]
    if start < pruned_through:
        oldest = rt.db.query_one("SELECT MIN(id) FROM events")[0]
        yield Item("resync", event="resync", data={"since": oldest if oldest is not None else pruned_through + 1})
    return (yield from _stored_after(rt, req, start))


def _stored_after(rt: Runtime, req: FeedRequest, last: int, rung: int | None = None) -> Generator[Item, None, int]:
    """The stored events after id `last` that match the request, in id order; returns the last id read.

    `rung` is the id a doorbell announced: a read of the same rows by another stream that
    already reaches it can be shared (see RecentReads).
    """
    matcher = compile_glob(req.pattern)
    reads: RecentReads = rt.extras["recent_reads"]
    while True:
        rows = reads.rows_after(req.user_id, req.event_type, last, rung, lambda: _read_rows(rt, req, last))
        for event_id, channel, payload in rows:
            last = event_id
            if matcher.fullmatch(channel):
                yield Item("event", event_id, req.event_type, payload)
        if len(rows) < REPLAY_CHUNK:
            return last
        rung = None


Row = tuple[int, str, dict[str, Any]]


def _read_rows(rt: Runtime, req: FeedRequest, last: int) -> list[Row]:
    rows = rt.db.query("SELECT id, channel, payload FROM events WHERE user_id = ? AND type = ? AND id > ? "
                       "ORDER BY id LIMIT ?", (req.user_id, req.event_type, last, REPLAY_CHUNK))
    return [(r["id"], r["channel"], _payload(rt, req.event_type, r["payload"])) for r in rows]


class RecentReads:
    """Table reads shared by the streams of one process.

    When a write rings a thousand streams of one user, they all ask for the same rows
    (same user, type and cursor): the first reads the table, the others reuse its rows.
    Sharing is safe because SQLite commits one writer at a time: a read that saw event N saw
    every event before N, so its rows are complete up to their newest id, and a stream that
    needs more (a later doorbell) reads again.
    """

    def __init__(self, size: int = 512) -> None:
        self._lock = threading.Lock()
        self._size = size
        self._rows: OrderedDict[tuple[str, str, int], list[Row]] = OrderedDict()

    def rows_after(self, user_id: str, event_type: str, last: int, rung: int | None,
                   read: Callable[[], list[Row]]) -> list[Row]:
        """The rows after `last`, shared when a kept read already reaches `rung`."""
        if rung is None:
            return read()
        key = (user_id, event_type, last)
        # One lock for look-up and read: streams woken together wait for the first read
        # instead of all reading at once.
        with self._lock:
            rows = self._rows.get(key)
            if rows and rows[-1][0] >= rung:
                self._rows.move_to_end(key)
                return rows
            rows = read()
            if rows:
                self._rows[key] = rows
                if len(self._rows) > self._size:
                    self._rows.popitem(last=False)
            return rows


def _payload(rt: Runtime, event_type: str, stored: str) -> dict[str, Any]:
    payload = json.loads(stored)
    if event_type == "object_created" and payload["content"] is None:
        payload["content"] = objects.event_content(rt, payload["id"])
    return payload


def _follow(rt: Runtime, req: FeedRequest, pubsub: Any, last: int,
            is_closed: Callable[[], bool]) -> Iterator[Item]:
    """Live events: each broker message is a doorbell, and what happened is read from the table.

    Two processes may publish their commits out of id order; reading the table after `last`
    sends every event once, in id order (SQLite commits writers one at a time, so when an id
    is visible every smaller one is too). A `psubscribe` here is redis-py re-subscribing after
    a reconnect, when doorbells may have been missed: it rings too.
    """
    heartbeat = rt.config.sse_heartbeat_seconds
    next_beat = time.monotonic() + heartbeat
    while not is_closed():
        wait = max(0.0, min(CLOSED_CHECK_SECONDS, next_beat - time.monotonic()))
        try:
            message = pubsub.get_message(timeout=wait)
        except (ConnectionError, OSError, RedisError) as exc:
            # End cleanly: the client reconnects with Last-Event-ID and catches up from the table.
            log.warning("event stream ended: broker connection lost (%s)", exc)
            return
        if message is not None and (rung := _rung(message, last)) is not None:
            last = yield from _stored_after(rt, req, last, rung)
        elif time.monotonic() >= next_beat:
            # A doorbell lost on the way (a failed publish, a broker blip) costs at most one
            # heartbeat interval: every beat also reads the table.
            last = yield from _stored_after(rt, req, last)
            yield Item("heartbeat")
            next_beat = time.monotonic() + heartbeat


def _rung(message: dict[str, Any], last: int) -> int | None:
    """The event id a broker message announces, if it may be one not sent yet."""
    if message["type"] == "psubscribe":
        # redis-py re-subscribed after a reconnect: doorbells may have been missed, so read
        # afresh (no shared read reaches this id).
        return sys.maxsize
    if message["type"] != "pmessage":
        return None
    event_id = json.loads(message["data"])["id"]
    return event_id if event_id > last else None


def _close_quietly(pubsub: Any) -> None:
    try:
        pubsub.close()
    except Exception:
        log.debug("closing a subscription failed", exc_info=True)


# --- retention ------------------------------------------------------------------------

def prune_events(rt: Runtime) -> int:
    """Drop events past the age or count limits; returns how many went."""
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=rt.config.event_retention_seconds)
    cutoff_iso = iso(cutoff)  # to the millisecond, in the very format of created_at
    by_count = rt.db.query_one("SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?",
                               (rt.config.event_retention_count,))
    by_age = rt.db.query_one("SELECT MAX(id) FROM events WHERE created_at < ?", (cutoff_iso,))[0]
    with rt.db.atomic() as tx:
        tx.execute("DELETE FROM object_tombstones WHERE deleted_at < ?", (cutoff_iso,))
    through = max(by_count[0] if by_count else 0, by_age or 0)
    if through == 0:
        return 0
    with rt.db.atomic() as tx:
        # Recorded first: a stream resuming from a cursor about to go is told to resync.
        tx.execute("UPDATE event_retention SET pruned_through = MAX(pruned_through, ?) WHERE id = 1", (through,))
    removed = 0
    while True:
        # Small batches, each its own transaction, so writers never wait long for the lock.
        with rt.db.atomic() as tx:
            batch = tx.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= ? ORDER BY id "
                               "LIMIT ?)", (through, PRUNE_BATCH)).rowcount
        removed += batch
        if batch < PRUNE_BATCH:
            return removed
