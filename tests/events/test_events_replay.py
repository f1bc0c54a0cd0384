"""Resuming streams: Last-Event-ID / ?since= replay from the event table, then live; resync after pruning."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from telentir.runtime import Runtime
from telentir.services.events import prune as prune_events

from ..events_support import RETRY_MS, STREAM_SETTINGS, Account, account, stored_ids
from ..sse_client import Frame, Refused, SSEStream, assert_refused, must_open, open_stream
from ..support import ServerProcess, running_server, runtime_over


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's server: memory broker, 1 s heartbeat."""
    with running_server(tmp_path_factory, "replay", **STREAM_SETTINGS) as srv:
        yield srv


@pytest.fixture
def alice(server: ServerProcess, server_rt: Runtime) -> Account:
    """A fresh user on the module server."""
    return account(server_rt, server)


def newest_id(rt: Runtime) -> int:
    """The newest event id in the table."""
    return int(rt.db.query_one("SELECT MAX(id) FROM events")[0])


def resume(params_or_header: str, cursor: int) -> dict[str, Any]:
    """open_stream keyword arguments resuming after `cursor` the given way."""
    if params_or_header == "header":
        return {"headers": {"Last-Event-ID": str(cursor)}}
    return {"params": {"since": str(cursor)}}


@pytest.mark.parametrize("how", ["header", "query"])
def test_reconnect_replays_exactly_the_missed_events_in_order_then_live(
    server: ServerProcess, server_rt: Runtime, alice: Account, streams: list[SSEStream], how: str
) -> None:
    key_id = alice.writes.key()
    first = must_open(server.url, "object_created", alice.key)
    alice.writes.object(key_id)
    cursor = int(first.next_event().id or "")
    first.close()
    missed = [alice.writes.object(key_id)["id"] for _ in range(5)]  # N writes while disconnected
    again = must_open(server.url, "object_created", alice.key, **resume(how, cursor))
    streams.append(again)
    replayed = [again.next_event() for _ in range(5)]
    assert [frame.json()["id"] for frame in replayed] == missed
    assert [int(frame.id or "") for frame in replayed] == stored_ids(server_rt, alice.id, "object_created", cursor)
    live = alice.writes.object(key_id)["id"]
    # The very next event is the live one: nothing replayed twice, nothing extra.
    assert again.next_event().json()["id"] == live


def test_replay_applies_the_filters(server: ServerProcess, alice: Account, streams: list[SSEStream]) -> None:
    key_id = alice.writes.key()
    parent, other = alice.writes.object(key_id)["id"], alice.writes.object(key_id)["id"]
    stream = must_open(server.url, "object_created", alice.key)
    alice.writes.object(key_id, related=parent)
    cursor = int(stream.next_event().id or "")
    stream.close()
    wanted = []
    for n in range(6):
        record = alice.writes.object(key_id, related=parent if n % 2 else other)
        if n % 2:
            wanted.append(record["id"])
    again = must_open(
        server.url, "object_created", alice.key, params={"relatedId": parent}, headers={"Last-Event-ID": str(cursor)}
    )
    streams.append(again)
    sentinel = alice.writes.object(key_id, related=parent)["id"]
    got = [again.next_event().json() for _ in range(len(wanted) + 1)]
    assert [record["id"] for record in got] == [*wanted, sentinel]
    assert {record["related_object_id"] for record in got} == {parent}


def test_no_gap_and_no_duplicate_while_writes_race_reconnects(
    server: ServerProcess, server_rt: Runtime, alice: Account
) -> None:
    """A writer never stops while the reader hangs up and resumes over and over."""
    key_id = alice.writes.key()
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(40):
                alice.writes.object(key_id)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write, name="racing-writer")
    received: list[Frame] = []
    cursor = 0
    writer.start()
    try:
        while not done.is_set():
            received += _read_for(server, alice, cursor, seconds=0.15)
            cursor = int(received[-1].id or "") if received else cursor
    finally:
        writer.join(timeout=60)
    assert not errors, errors
    expected = stored_ids(server_rt, alice.id, "object_created")
    received += _read_for(server, alice, cursor, count=len(expected) - len(received))
    assert [int(frame.id or "") for frame in received] == expected


def _read_for(
    server: ServerProcess, who: Account, cursor: int, seconds: float = 5.0, count: int | None = None
) -> list[Frame]:
    """Events from one short-lived stream resumed after `cursor` (0: from the start)."""
    stream = must_open(server.url, "object_created", who.key, headers={"Last-Event-ID": str(cursor)})
    frames: list[Frame] = []
    deadline = time.monotonic() + seconds
    try:
        while (count is None or len(frames) < count) and time.monotonic() < deadline:
            try:
                frames.append(stream.next_event(timeout=max(0.01, deadline - time.monotonic())))
            except AssertionError:
                break  # nothing more in this window
    finally:
        stream.close()
    return frames


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "12x"])
def test_a_malformed_cursor_is_400_json(server: ServerProcess, alice: Account, value: str) -> None:
    refused = open_stream(server.url, "object_created", alice.key, headers={"Last-Event-ID": value})
    assert isinstance(refused, Refused)
    assert_refused(refused, 400, "invalid_request")


# --- retention: pruning and resync -----------------------------------------------------------


@pytest.fixture(scope="module")
def prune_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own: pruning is global, it must not disturb other tests."""
    with running_server(tmp_path_factory, "prune", **STREAM_SETTINGS) as srv:
        yield srv


@pytest.fixture
def pruning_rt(prune_server: ServerProcess) -> Callable[..., Runtime]:
    """Factory: a runtime over the prune server's data with the given retention settings."""
    made: list[Runtime] = []

    def factory(**retention: Any) -> Runtime:
        rt = runtime_over(prune_server.data_dir, **retention)
        made.append(rt)
        return rt

    yield factory  # type: ignore[misc]
    for rt in made:
        rt.close()


def test_resuming_from_a_pruned_cursor_sends_resync_first(
    prune_server: ServerProcess, pruning_rt: Callable[..., Runtime], streams: list[SSEStream]
) -> None:
    rt = pruning_rt(event_retention_count=3)
    bob = account(rt, prune_server)
    key_id = bob.writes.key()  # (the first request also makes the user's root: more events)
    made = [bob.writes.object(key_id)["id"] for _ in range(6)]
    ids = stored_ids(rt, bob.id, "object_created", after=newest_id(rt) - 6)
    assert len(ids) == 6
    assert prune_events(rt) > 0
    kept = rt.db.query("SELECT id, payload FROM events ORDER BY id")
    assert [row["id"] for row in kept] == ids[-3:]  # the three newest events of the whole table
    stream = must_open(prune_server.url, "object_created", bob.key, headers={"Last-Event-ID": str(ids[0])})
    streams.append(stream)
    stream.next_frame()  # retry:
    resync = stream.next_frame()
    assert (resync.event, resync.id, resync.json()) == ("resync", None, {"since": ids[-3]})
    expected = f'retry: {RETRY_MS}\n\nevent: resync\ndata: {{"since":{ids[-3]}}}\n\n'
    assert bytes(stream.raw).startswith(expected.encode())
    replayed = [stream.next_event().json()["id"] for _ in range(3)]
    assert replayed == made[-3:]
    live = bob.writes.object(key_id)["id"]
    assert stream.next_event().json()["id"] == live


def test_resuming_from_the_last_pruned_id_needs_no_resync(
    prune_server: ServerProcess, pruning_rt: Callable[..., Runtime], streams: list[SSEStream]
) -> None:
    rt = pruning_rt(event_retention_count=2)
    carol = account(rt, prune_server)
    key_id = carol.writes.key()
    made = [carol.writes.object(key_id)["id"] for _ in range(4)]
    ids = stored_ids(rt, carol.id, "object_created", after=newest_id(rt) - 4)
    prune_events(rt)
    pruned_through = rt.db.query_one("SELECT pruned_through FROM event_retention")[0]
    assert pruned_through == ids[1]
    stream = must_open(prune_server.url, "object_created", carol.key, params={"since": str(ids[1])})
    streams.append(stream)
    got = [stream.next_event() for _ in range(2)]
    assert [frame.event for frame in got] == ["object_created"] * 2
    assert [frame.json()["id"] for frame in got] == made[2:]


def test_age_retention_prunes_old_events_and_resyncs(
    prune_server: ServerProcess, pruning_rt: Callable[..., Runtime], streams: list[SSEStream]
) -> None:
    rt = pruning_rt(event_retention_seconds=1)
    dave = account(rt, prune_server)
    key_id = dave.writes.key()
    dave.writes.object(key_id)
    cursor = newest_id(rt)
    time.sleep(1.2)  # the point: what was written so far ages past the 1 s retention (only time does that)
    fresh = dave.writes.object(key_id)["id"]
    prune_events(rt)
    # Everything written before the pause is gone, to the millisecond; the fresh event stays.
    remaining = [row["id"] for row in rt.db.query("SELECT id FROM events ORDER BY id")]
    assert remaining == [newest_id(rt)] and remaining[0] > cursor
    stream = must_open(prune_server.url, "object_created", dave.key, headers={"Last-Event-ID": str(cursor - 1)})
    streams.append(stream)
    resync = stream.next_event()
    assert (resync.event, resync.json()) == ("resync", {"since": remaining[0]})
    assert stream.next_event().json()["id"] == fresh


def test_large_object_created_event_carries_its_content_without_copying_it(new_live_user, live_rt, live_server):
    """A file-backed ciphertext is read from its file when the event is sent, not stored twice."""
    user, api = new_live_user()
    key_id = api.put("/keys", json={"server": "default"}).json()
    before = live_rt.db.query_one("SELECT COALESCE(MAX(id), 0) FROM events")[0]
    big = "ab" * 40_000  # 40 kB: over the 16 KiB inline limit, so a file
    created = api.put("/objects", json={"keyId": key_id, "content": big, "authTag": "cd" * 16}).json()
    stored = live_rt.db.query_one(
        "SELECT payload FROM events WHERE user_id = ? AND type = 'object_created' AND id > ?", (user["id"], before)
    )["payload"]
    assert json.loads(stored)["content"] is None and len(stored) < 2000
    with must_open(live_server.url, "object_created", user["api_key"], params={"since": str(before)}) as stream:
        frame = stream.next_event(timeout=5)
    data = json.loads(frame.data)
    assert data["id"] == created["id"] and data["content"] == big
