"""Event feeds for SSE and WebSocket clients: subscribe, replay from the table, then live.

The order matters: the pattern subscription is confirmed *before* the cursor is fixed (the
client's, or the newest id for a fresh stream), so any event committed later rings the
doorbell. Broker messages are only doorbells: what to send is always read from the events
table after the last id sent, in id order. Nothing is lost, nothing is sent twice, and ids
only grow, even when several processes publish their commits out of order.

A stream ends with the credential that opened it (StreamGuard): a revocation is a record in
the same table, read in the same order, so nothing committed after it is ever sent.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from ..errors import BadRequest, EngineUnavailable, Forbidden, NotFound, Unauthorized
from ..pubsub import BrokerError, PubSub, compile_glob, escape_glob
from ..runtime import Runtime
from ..services import credentials, events, objects
from ..services.events import EVENT_TYPES, FILTERS
from .reads import REPLAY_CHUNK, Row

log = logging.getLogger(__name__)
CLOSED_CHECK_SECONDS = 1.0
BROKER_ENGINE = "redis"  # the engine name of an unreachable broker (only Redis can be away)
MAX_FILTER_LENGTH = 200
MAX_CURSOR = 2**63 - 1  # the largest id SQLite can hold: a larger cursor cannot be compared with one


@dataclass(frozen=True)
class Item:
    """One thing to send: an event, a resync notice, or a heartbeat."""

    # "open" | "event" | "resync" | "heartbeat" | "idle" (about to wait: send what is buffered) |
    # "revoked" (a credential's revocation record, `data` = its id: never sent, see StreamGuard)
    kind: str
    event_id: int | None = None
    event: str | None = None
    data: Any = None
    text: str | None = None  # `data` as compact JSON, encoded once and shared by every stream

    @property
    def data_json(self) -> str:
        """`data` as compact JSON."""
        return self.text if self.text is not None else json.dumps(self.data, separators=(",", ":"))


IDLE = Item("idle")
_REVOKED_PREFIX = events.REVOKED + ":"


class CredentialEnded(Exception):
    """The stream's credential was revoked or has expired: the stream ends here."""


class StreamGuard:
    """Ends a stream with the credential that opened it (docs/protocol.md §6).

    Revocation records are read from the event table in id order along with the stream's
    events, so the stream stops at its credential's record and never sends what was
    committed after it. Expiry is a matter of the clock. Each heartbeat also asks the
    database, for a record the stream cannot read (pruned, or before a cursor past it).
    """

    def __init__(self, credential: credentials.Credential) -> None:
        self.credential = credential
        self.ended: str | None = None  # why the stream ended: "credential_revoked" | "token_expired"

    def check_revocation(self, credential_id: str) -> None:
        """A revocation record was read: end the stream if it names this stream's credential."""
        if credential_id == self.credential.id:
            self._end("credential_revoked")

    def check_expiry(self) -> None:
        """End the stream once its credential has expired."""
        if self.seconds_left() <= 0:
            self._end("token_expired")

    def check_stored(self, rt: Runtime) -> None:
        """Ask the database whether the credential still authenticates; end the stream if not."""
        if (reason := credentials.why_ended(rt, self.credential)) is not None:
            self._end(reason)

    def seconds_left(self) -> float:
        """Seconds until the credential expires (infinite for an API key)."""
        left = self.credential.seconds_left()
        return float("inf") if left is None else left

    def _end(self, reason: str) -> NoReturn:
        self.ended = reason
        raise CredentialEnded(reason)


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
    """Validate the type, parameters, `userId` rule and resume cursor of a stream request."""
    if event_type not in EVENT_TYPES:
        raise NotFound(f"Unknown event type {event_type!r}; use one of {', '.join(EVENT_TYPES)}.")
    filter_names = [name for name, _ in FILTERS[event_type]]
    allowed = [*filter_names, "userId", "since"]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        # Ignoring a misspelt filter would widen the stream without the client knowing.
        raise BadRequest(f"Unknown query parameter {unknown[0]!r} for {event_type}: use {', '.join(allowed)}.")
    if "userId" in args and args["userId"] != user_id:
        raise Forbidden("userId may only be your own id.")
    filters = {name: value for name, value in args.items() if name in filter_names}
    for name, value in filters.items():
        if len(value) > MAX_FILTER_LENGTH:
            raise BadRequest(f"{name} is too long.")
    return FeedRequest(user_id, event_type, filters, _cursor(last_event_id, args.get("since")))


def _cursor(last_event_id: str | None, since: str | None) -> int | None:
    """The resume cursor: Last-Event-ID wins over `since`, and each sent must be valid."""
    header, query = _cursor_value(last_event_id), _cursor_value(since)
    return header if header is not None else query


def _cursor_value(raw: str | None) -> int | None:
    """An event id: ASCII digits only, up to 2^63-1 (SQLite's largest integer); None when absent."""
    if raw is None or raw == "":
        return None
    # isascii: str.isdigit() also accepts "²" (int() refuses it) and "٥" (int() reads 5). The
    # length first: int() refuses strings of more than 4,300 digits with an error of its own.
    digits = raw.lstrip("0") or "0"
    if not (raw.isascii() and raw.isdigit()) or len(digits) > len(str(MAX_CURSOR)) or int(digits) > MAX_CURSOR:
        raise BadRequest(f"Last-Event-ID / since must be an event id: a whole number from 0 to {MAX_CURSOR}.")
    return int(digits)


# Takes a replayed stream (request, guard, cursor) off its thread: calls `release` (the feed's
# own subscription is no longer needed) and returns True once the stream has ended, or returns
# False at once if it cannot take it yet (the feed follows on its own and asks again at each
# wake-up, so a stream is never left unserved while the hub subscribes).
Handoff = Callable[[FeedRequest, StreamGuard, int, Callable[[], None]], bool]


def feed(
    rt: Runtime, req: FeedRequest, guard: StreamGuard, is_closed: Callable[[], bool], handoff: Handoff | None = None
) -> Generator[Item, None, None]:
    """Subscribe, replay what the cursor missed, then follow live; ends when the client or the credential goes.

    The first item, `open`, comes once the subscription is confirmed: callers take it
    before answering, so a full server or a dead broker is still a JSON error. With a
    `handoff` (the SSE hub), the live part is served elsewhere while this generator waits.
    """
    slots = rt.stream_slots
    slot = slots.acquire(req.user_id)
    pubsub: PubSub | None = None
    opened = False
    try:
        pubsub = rt.broker.pubsub()
        revocation = events.revocation_channel(req.user_id, guard.credential.id)
        _subscribe(rt, pubsub, req.pattern, escape_glob(revocation))
        # Read once subscribed and before answering: whatever commits later rings our doorbell.
        log_ends = events.horizon(rt, req.user_id)
        _check_still_valid(rt, guard)
        opened = True
        yield Item("open")
        last = yield from _replay(rt, req, log_ends, guard)
        yield IDLE

        def release() -> None:
            nonlocal pubsub
            if pubsub is not None:
                close_quietly(pubsub)
            pubsub = None

        def hand_off(cursor: int) -> bool:
            return handoff is not None and handoff(req, guard, cursor, release)

        yield from _follow(rt, req, guard, pubsub, last, is_closed, hand_off)
    except CredentialEnded as ended:
        log.info("event stream of %s ended: %s", req.user_id, ended)
    except EngineUnavailable as exc:
        if not opened:
            raise  # still a JSON 503 before the stream's headers
        # The database went away mid-stream (logged once by the storage layer): end cleanly, and
        # the client resumes from Last-Event-ID once it is back; nothing is lost meanwhile.
        log.info("event stream of %s ended: %s", req.user_id, exc.message)
    finally:
        # Free the subscription and the slot at once, whatever ended the stream.
        if pubsub is not None:
            close_quietly(pubsub)
        slots.release(slot)


def _check_still_valid(rt: Runtime, guard: StreamGuard) -> None:
    """401 if the credential was revoked (or expired) since the request authenticated.

    Asked after the cursor is fixed: a revocation committed later has a larger id than the
    cursor, so the stream reads its record; one committed earlier is seen here.
    """
    try:
        guard.check_stored(rt)
    except CredentialEnded as ended:
        if guard.ended == "token_expired":
            raise Unauthorized("The session has expired; log in again.", code="token_expired") from ended
        raise Unauthorized("The credential has been revoked.") from ended


def _subscribe(rt: Runtime, pubsub: PubSub, *patterns: str) -> None:
    """Subscribe and wait for the broker's confirmation; 503 `broker_unavailable` (with Retry-After) if none comes."""
    cause = "no subscription confirmation within 5 s"
    try:
        pubsub.psubscribe(*patterns)
        confirmed, deadline = 0, time.monotonic() + 5
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message is not None and message["type"] == "psubscribe":
                confirmed += 1
                if confirmed == len(patterns):
                    rt.health.ok(BROKER_ENGINE)
                    return
    except BrokerError as exc:
        cause = str(exc)
    # Logged once per outage (the health record); a new stream subscribes again once the broker is back.
    rt.health.failed(BROKER_ENGINE, cause)
    raise EngineUnavailable(
        BROKER_ENGINE, cause, code="broker_unavailable", message="The event broker is not answering; retry shortly."
    )


def _replay(rt: Runtime, req: FeedRequest, log_ends: events.Horizon, guard: StreamGuard) -> Generator[Item, None, int]:
    """Replay stored events after the cursor, after a resync if the log cannot continue it; returns the last id.

    A resync's `since` is the smallest id the stream still carries: every matching event
    with an id from `since` on follows, and `since - 1` resumes without another resync.
    """
    newest, pruned = log_ends.newest, log_ends.pruned
    if req.since is None:
        return newest  # a fresh stream replays nothing: everything from now on arrives live
    head = max(newest, pruned)  # the table may be empty once everything was pruned
    if req.since > head:
        # Ahead of the log (an older backup restored, a cursor from another server): the ids the
        # client holds are not ours. It reloads, and the stream goes on as a fresh one would.
        yield _resync(head + 1)
        return head
    if req.since < pruned:
        # Everything up to `pruned` may be gone, or (after a restore moved it past the restored
        # ids) no longer the log the client knew: the stream carries what follows it, from the
        # oldest kept id on, and `since - 1` then resumes without another resync.
        oldest = log_ends.oldest
        start = max(oldest if oldest is not None else pruned + 1, pruned + 1)
        yield _resync(start)
        return (yield from _stored_after(rt, req, start - 1, guard=guard))
    return (yield from _stored_after(rt, req, req.since, guard=guard))


def _resync(since: int) -> Item:
    return Item("resync", event="resync", data={"since": since})


def _stored_after(
    rt: Runtime, req: FeedRequest, last: int, rung: int | None = None, guard: StreamGuard | None = None
) -> Generator[Item, None, int]:
    """The stored events after id `last` that match the request, in id order; returns the last id read.

    `rung` is the id a doorbell announced: a read of the same rows by another stream that
    already reaches it can be shared (see RecentReads). With a `guard`, the stream's own
    revocation record or its expiry ends it (CredentialEnded) before anything after is
    yielded; without one, revocation records come out as `revoked` items.
    """
    matcher = compile_glob(req.pattern)
    while True:
        rows = rt.recent_reads.rows_after(
            req.user_id, req.event_type, last, rung, lambda after: _read_rows(rt, req, after)
        )
        for event_id, channel, payload, text in rows:
            last = event_id
            if channel.startswith(_REVOKED_PREFIX):
                if guard is None:
                    yield Item("revoked", event_id, data=payload["credential"])
                else:
                    guard.check_revocation(payload["credential"])
            elif matcher.fullmatch(channel):
                if guard is not None:
                    guard.check_expiry()
                yield Item("event", event_id, req.event_type, payload, text)
        if len(rows) < REPLAY_CHUNK:
            return last
        yield IDLE  # a long replay goes out chunk by chunk, not buffered whole
        rung = None


def events_after(rt: Runtime, req: FeedRequest, last: int, rung: int | None) -> tuple[list[Item], int]:
    """The events to send after id `last` (shared reads when `rung` is given) and the new cursor.

    Revocation records among them are `revoked` items: the caller ends the streams they name.
    """
    items: list[Item] = []
    reader = _stored_after(rt, req, last, rung)
    while True:
        try:
            item = next(reader)
        except StopIteration as stop:
            return items, stop.value
        if item.kind != "idle":
            items.append(item)


# Event rows with the ciphertext an object_created event shares with its object (see sent_payload).
SELECT_EVENTS = (
    "SELECT e.id, e.type, e.channel, e.payload, COALESCE(e.content, o.inline_content) AS content "
    "FROM events e LEFT JOIN objects o ON o.n = e.object_n"
)


def _read_rows(rt: Runtime, req: FeedRequest, last: int) -> list[Row]:
    # The user's revocation records come in the same read, in id order with the events. One
    # statement reads an event and the object row it shares its ciphertext with (object_n), so
    # it sees both before or both after a change that copies the bytes into the event.
    rows = rt.db.query(
        f"{SELECT_EVENTS} WHERE e.user_id = ? AND e.type IN (?, ?) AND e.id > ? ORDER BY e.id LIMIT ?",
        (req.user_id, req.event_type, events.REVOKED, last, REPLAY_CHUNK),
    )
    return [(r["id"], r["channel"], *sent_payload(rt, r["type"], r["payload"], r["content"])) for r in rows]


def sent_payload(rt: Runtime, event_type: str, stored: str, content: bytes | None) -> tuple[dict[str, Any], str]:
    """The payload and its JSON text (the stored text itself unless the ciphertext was added).

    An object_created payload's `content` is the ciphertext's hex: stored in the payload by
    events written before schema version 10; since then the bytes come with the row (`content`,
    its own or its object's: events.keep_created_content), or, for a file-backed object, from
    the object. The text sent is the same either way: the stored JSON with `content` filled in.
    """
    payload = json.loads(stored)
    if event_type == "object_created" and payload["content"] is None:
        payload["content"] = bytes(content).hex() if content is not None else objects.event_content(rt, payload["id"])
        # Spliced in rather than dumped again (every stream of the user reads the event): the
        # last `"content":null` is the field itself, since only server-made hex and times follow
        # it (services/objects.py _created_payload), whatever the metadata before it holds.
        head, found, tail = stored.rpartition(_NULL_CONTENT)
        if found and payload["content"] is not None:
            return payload, f'{head}"content":"{payload["content"]}"{tail}'
        return payload, json.dumps(payload, separators=(",", ":"))
    return payload, stored


_NULL_CONTENT = '"content":null'


def _follow(
    rt: Runtime,
    req: FeedRequest,
    guard: StreamGuard,
    pubsub: PubSub,
    last: int,
    is_closed: Callable[[], bool],
    hand_off: Callable[[int], bool] = lambda cursor: False,
) -> Iterator[Item]:
    """Live events: each broker message is a doorbell, and what happened is read from the table.

    Two processes may publish their commits out of id order; reading the table after `last`
    sends every event once, in id order (a user's writes commit in id order, so when an id
    of the user is visible every smaller one of the user is too). A `psubscribe` here is redis-py re-subscribing after
    a reconnect, when doorbells may have been missed: it rings too.

    A stream that sent less than `sse_batch_ms` ago holds the next doorbell until then and
    sends everything rung meanwhile as one batch: a burst costs each stream one wake-up per
    interval instead of one per event, and an idle stream still sends at once.

    The guard ends the stream at its credential's revocation record, at its expiry (the
    waits below never outlast it), or when a heartbeat finds the credential no longer valid.
    """
    heartbeat, batch = rt.config.sse_heartbeat_seconds, rt.config.sse_batch_ms / 1000
    next_beat, sent_at = time.monotonic() + heartbeat, -batch
    pending: int | None = None  # the highest id rung and not yet read
    while not is_closed():
        # Everything yielded so far was followed by IDLE, so it is on the wire: another
        # server of the stream (the hub) may take over from `last` (and returns once it ended).
        if hand_off(last):
            return
        guard.check_expiry()
        now = time.monotonic()
        if pending is not None and now >= sent_at + batch:
            last = yield from _stored_after(rt, req, last, pending, guard)
            pending, sent_at = None, now
            yield IDLE
        elif now >= next_beat:
            # A doorbell lost on the way (a failed publish, a broker blip) costs at most one
            # heartbeat interval: every beat also reads the table, and asks after the credential.
            guard.check_stored(rt)
            last = yield from _stored_after(rt, req, last, guard=guard)
            yield Item("heartbeat")
            yield IDLE
            next_beat = time.monotonic() + heartbeat
        else:
            due = next_beat if pending is None else min(next_beat, sent_at + batch)
            due = min(due, now + guard.seconds_left())
            try:
                pending = _await_doorbells(
                    pubsub, last, pending, max(0.0, min(CLOSED_CHECK_SECONDS, due - now)), held=pending is not None
                )
            except BrokerError as exc:
                # End cleanly: the client reconnects with Last-Event-ID and catches up from the table.
                log.warning("event stream ended: broker connection lost (%s)", exc)
                return


def _await_doorbells(pubsub: PubSub, last: int, pending: int | None, wait: float, held: bool) -> int | None:
    """Wait up to `wait` s for doorbells; returns the highest id rung so far (None if none).

    While a batch is held the stream sleeps instead of waking for each doorbell, then takes
    every doorbell queued meanwhile without waiting.
    """
    if held:
        time.sleep(wait)
        wait = 0.0
    while (message := pubsub.get_message(timeout=wait)) is not None:
        if (announced := _announced_id(message, last)) is not None:
            pending = max(pending or 0, announced)
        wait = 0.0
    return pending


def _announced_id(message: dict[str, Any], last: int) -> int | None:
    """The event id a broker message announces, if it may be one not sent yet."""
    if message["type"] == "psubscribe":
        # redis-py re-subscribed after a reconnect: doorbells may have been missed, so read
        # afresh (no shared read reaches this id).
        return sys.maxsize
    if message["type"] != "pmessage":
        return None
    event_id = json.loads(message["data"])["id"]
    return event_id if event_id > last else None


def close_quietly(pubsub: PubSub) -> None:
    """Close a subscription whose broker may already be gone (nothing left to do about a failure)."""
    try:
        pubsub.close()
    except Exception:
        log.debug("closing a subscription failed", exc_info=True)
