"""Event feeds for SSE and WebSocket clients: subscribe, replay from the table, then live.

The order matters: the pattern subscription is confirmed *before* the cursor is fixed (the
client's, or the newest id for a fresh stream), so any event committed later rings the
doorbell. Broker messages are only doorbells: what to send is always read from the events
table after the last id sent, in id order. Nothing is lost, nothing is sent twice, and ids
only grow, even when several processes publish their commits out of order.
"""

from __future__ import annotations

import bisect
import json
import logging
import sys
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.exceptions import RedisError

from ..errors import BadRequest, Forbidden, NotFound, RateLimited, ServiceUnavailable
from ..ids import iso
from ..pubsub import compile_glob, escape_glob
from ..runtime import Runtime
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

    kind: str  # "open" | "event" | "resync" | "heartbeat" | "idle" (about to wait: send what is buffered)
    event_id: int | None = None
    event: str | None = None
    data: Any = None
    text: str | None = None  # `data` as compact JSON, encoded once and shared by every stream

    @property
    def data_json(self) -> str:
        """`data` as compact JSON."""
        return self.text if self.text is not None else json.dumps(self.data, separators=(",", ":"))


IDLE = Item("idle")


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
                raise ServiceUnavailable(
                    "Too many open event streams on this server; retry shortly.", code="too_many_streams"
                )
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
        parts = [
            escape_glob(self.filters[name]) if name in self.filters else "*" for name, _ in FILTERS[self.event_type]
        ]
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


# Takes a replayed stream (request, cursor) off its thread: calls `release` (the feed's own
# subscription is no longer needed) and returns True once the stream has ended, or returns
# False at once if it cannot take it.
Handoff = Callable[[FeedRequest, int, Callable[[], None]], bool]


def feed(
    rt: Runtime, req: FeedRequest, is_closed: Callable[[], bool], handoff: Handoff | None = None
) -> Generator[Item, None, None]:
    """Subscribe, replay what the cursor missed, then follow live; ends when the client goes.

    The first item, `open`, comes once the subscription is confirmed: callers take it
    before answering, so a full server or a dead broker is still a JSON error. With a
    `handoff` (the SSE hub), the live part is served elsewhere while this generator waits.
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
        yield IDLE

        def release() -> None:
            nonlocal pubsub
            _close_quietly(pubsub)
            pubsub = None

        if handoff is not None and handoff(req, last, release):
            return
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
        rows = reads.rows_after(req.user_id, req.event_type, last, rung, lambda after: _read_rows(rt, req, after))
        for event_id, channel, payload, text in rows:
            last = event_id
            if matcher.fullmatch(channel):
                yield Item("event", event_id, req.event_type, payload, text)
        if len(rows) < REPLAY_CHUNK:
            return last
        yield IDLE  # a long replay goes out chunk by chunk, not buffered whole
        rung = None


def events_after(rt: Runtime, req: FeedRequest, last: int, rung: int | None) -> tuple[list[Item], int]:
    """The events to send after id `last` (shared reads when `rung` is given) and the new cursor."""
    items: list[Item] = []
    reader = _stored_after(rt, req, last, rung)
    while True:
        try:
            item = next(reader)
        except StopIteration as stop:
            return items, stop.value
        if item.kind != "idle":
            items.append(item)


Row = tuple[int, str, dict[str, Any], str]  # id, channel, payload, payload as JSON text


def _read_rows(rt: Runtime, req: FeedRequest, last: int) -> list[Row]:
    rows = rt.db.query(
        "SELECT id, channel, payload FROM events WHERE user_id = ? AND type = ? AND id > ? ORDER BY id LIMIT ?",
        (req.user_id, req.event_type, last, REPLAY_CHUNK),
    )
    return [(r["id"], r["channel"], *_payload(rt, req.event_type, r["payload"])) for r in rows]


class RecentReads:
    """Table reads shared by the streams of one process.

    When a write rings a thousand streams of one user, they all need the same new rows. Each
    (user, type) keeps a window: every row after a cursor `start`, complete up to its newest
    id. Sharing is safe because SQLite commits one writer at a time and ids grow with each
    commit: a read that saw event N saw every event before N. A stream whose cursor lies in
    the window and whose doorbell it reaches takes its rows from there; otherwise one stream
    reads the rows after the window's newest (or after its own cursor) and extends it for all.
    """

    def __init__(self, size: int = 512, keep: int = 2 * REPLAY_CHUNK) -> None:
        self._size, self._keep = size, keep
        self._lock = threading.Lock()  # guards the two maps' membership
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}

    def rows_after(
        self, user_id: str, event_type: str, last: int, rung: int | None, read: Callable[[int], list[Row]]
    ) -> list[Row]:
        """The rows after `last` (up to REPLAY_CHUNK read at once), shared when a window reaches `rung`."""
        if rung is None:
            return read(last)
        key = (user_id, event_type)
        # A hit takes no lock: a thousand streams woken together queueing on one lock cost
        # more than the rows they share.
        if (rows := _covering(self._windows.get(key), last, rung)) is not None:
            return rows
        with self._key_lock(key):  # streams that miss together wait for one read
            window = self._windows.get(key)
            if (rows := _covering(window, last, rung)) is not None:
                return rows
            if window is not None and window.start <= last <= window.newest:
                window = window.extended(read(window.newest), self._keep)
            else:
                window = _Window(last, read(last))
            self._store(key, window)
        # A stream so far behind that the trimmed window starts past its cursor reads its own rows.
        return window.after(last) if window.start <= last else read(last)

    def _key_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _store(self, key: tuple[str, str], window: _Window) -> None:
        with self._lock:
            self._windows[key] = window
            self._windows.move_to_end(key)
            if len(self._windows) > self._size:
                old, _ = self._windows.popitem(last=False)
                self._key_locks.pop(old, None)


class _Window:
    """Every row of one (user, type) after `start`, complete up to `newest`; never changed once made."""

    def __init__(self, start: int, rows: list[Row]) -> None:
        self.start, self.rows = start, rows
        self.ids = [row[0] for row in rows]
        self.newest = self.ids[-1] if rows else start

    def extended(self, more: list[Row], keep: int) -> _Window:
        """This window plus the rows read after its newest, trimmed to the newest `keep` rows."""
        rows = self.rows + more
        if len(rows) <= keep:
            return _Window(self.start, rows)
        # Dropping the oldest rows moves the start to the newest dropped id: what follows it is complete.
        return _Window(rows[-keep - 1][0], rows[-keep:])

    def after(self, last: int) -> list[Row]:
        """The rows after id `last`."""
        return self.rows[bisect.bisect_right(self.ids, last) :]


def _covering(window: _Window | None, last: int, rung: int) -> list[Row] | None:
    """The window's rows after `last` if it holds every row from `last` through `rung`, else None."""
    if window is None or not window.start <= last <= window.newest or window.newest < rung:
        return None
    return window.after(last)


def _payload(rt: Runtime, event_type: str, stored: str) -> tuple[dict[str, Any], str]:
    """The payload and its JSON text (the stored text itself unless file-backed content was added)."""
    payload = json.loads(stored)
    if event_type == "object_created" and payload["content"] is None:
        payload["content"] = objects.event_content(rt, payload["id"])
        return payload, json.dumps(payload, separators=(",", ":"))
    return payload, stored


def _follow(rt: Runtime, req: FeedRequest, pubsub: Any, last: int, is_closed: Callable[[], bool]) -> Iterator[Item]:
    """Live events: each broker message is a doorbell, and what happened is read from the table.

    Two processes may publish their commits out of id order; reading the table after `last`
    sends every event once, in id order (SQLite commits writers one at a time, so when an id
    is visible every smaller one is too). A `psubscribe` here is redis-py re-subscribing after
    a reconnect, when doorbells may have been missed: it rings too.

    A stream that sent less than `sse_batch_ms` ago holds the next doorbell until then and
    sends everything rung meanwhile as one batch: a burst costs each stream one wake-up per
    interval instead of one per event, and an idle stream still sends at once.
    """
    heartbeat, batch = rt.config.sse_heartbeat_seconds, rt.config.sse_batch_ms / 1000
    next_beat, sent_at = time.monotonic() + heartbeat, -batch
    pending: int | None = None  # the highest id rung and not yet read
    while not is_closed():
        now = time.monotonic()
        if pending is not None and now >= sent_at + batch:
            last = yield from _stored_after(rt, req, last, pending)
            pending, sent_at = None, now
            yield IDLE
        elif now >= next_beat:
            # A doorbell lost on the way (a failed publish, a broker blip) costs at most one
            # heartbeat interval: every beat also reads the table.
            last = yield from _stored_after(rt, req, last)
            yield Item("heartbeat")
            yield IDLE
            next_beat = time.monotonic() + heartbeat
        else:
            due = next_beat if pending is None else min(next_beat, sent_at + batch)
            try:
                pending = _ring(
                    pubsub, last, pending, max(0.0, min(CLOSED_CHECK_SECONDS, due - now)), held=pending is not None
                )
            except (ConnectionError, OSError, RedisError) as exc:
                # End cleanly: the client reconnects with Last-Event-ID and catches up from the table.
                log.warning("event stream ended: broker connection lost (%s)", exc)
                return


def _ring(pubsub: Any, last: int, pending: int | None, wait: float, held: bool) -> int | None:
    """Wait up to `wait` s for doorbells; returns the highest id rung so far (None if none).

    While a batch is held the stream sleeps instead of waking for each doorbell, then takes
    every doorbell queued meanwhile without waiting.
    """
    if held:
        time.sleep(wait)
        wait = 0.0
    while (message := pubsub.get_message(timeout=wait)) is not None:
        if (rung := _rung(message, last)) is not None:
            pending = max(pending or 0, rung)
        wait = 0.0
    return pending


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
    cutoff = datetime.now(UTC) - timedelta(seconds=rt.config.event_retention_seconds)
    cutoff_iso = iso(cutoff)  # to the millisecond, in the very format of created_at
    by_count = rt.db.query_one(
        "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?", (rt.config.event_retention_count,)
    )
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
            batch = tx.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE id <= ? ORDER BY id LIMIT ?)",
                (through, PRUNE_BATCH),
            ).rowcount
        removed += batch
        if batch < PRUNE_BATCH:
            return removed
