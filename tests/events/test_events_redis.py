"""Streams with the Redis broker: Redis dying mid-stream, subscriptions freed, doorbells.

Streams across gunicorn workers, on Redis and on the in-process broker alike, are in
test_workers.py.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
from flask.testing import FlaskClient

from telentir.pubsub import BrokerUnavailable
from telentir.pubsub.redis_backend import RedisBroker
from telentir.runtime import Runtime

from ..events_support import HEARTBEAT, STREAM_SETTINGS, account
from ..private_services import redis_url
from ..redis_server import RedisServer, settled_numpat, wait_for_numpat
from ..sse_client import (
    Refused,
    SSEStream,
    StreamEnded,
    assert_refused,
    must_open,
    open_stream,
)
from ..support import FIXED_MASTER_KEY, ServerProcess, make_user, running_server, runtime_over, wait_until

pytestmark = pytest.mark.embedded_only("a Redis of its own that it stops, and the in-process broker's doorbells")


@pytest.fixture
def redis_up(own_redis: RedisServer) -> RedisServer:
    """The dedicated Redis, restarted if an earlier test left it down."""
    if not own_redis.answers():
        own_redis.start()
    return own_redis


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, own_redis: RedisServer) -> Iterator[ServerProcess]:
    """One worker on the dedicated Redis, 1 s heartbeat."""
    with running_server(tmp_path_factory, "redis-one", **STREAM_SETTINGS, TELENTIR_BROKER_URL=own_redis.url) as srv:
        yield srv


# --- Redis dies and comes back ---------------------------------------------------------------


def test_killing_redis_mid_stream_loses_nothing(
    server: ServerProcess, server_rt: Runtime, redis_up: RedisServer, streams: list[SSEStream]
) -> None:
    alice = account(server_rt, server)
    key_id = alice.writes.key()
    stream = must_open(server.url, "object_created", alice.key)
    streams.append(stream)
    alice.writes.object(key_id)
    cursor = int(stream.next_event().id or "")
    redis_up.stop()
    started = time.monotonic()
    missed = [alice.writes.object(key_id)["id"] for _ in range(3)]  # writes keep succeeding...
    assert time.monotonic() - started < 3.0  # ...and promptly
    _ends_cleanly_or_keeps_serving(stream)
    refused = open_stream(server.url, "object_created", alice.key)
    assert isinstance(refused, Refused), "a stream opened with no broker behind it"
    assert_refused(refused, 503, "broker_unavailable")
    redis_up.start()
    resumed = must_open(server.url, "object_created", alice.key, headers={"Last-Event-ID": str(cursor)})
    fresh = must_open(server.url, "object_created", alice.key)
    streams += [resumed, fresh]
    assert [resumed.next_event().json()["id"] for _ in range(3)] == missed
    live = alice.writes.object(key_id)["id"]
    assert resumed.next_event().json()["id"] == live
    assert fresh.next_event().json()["id"] == live


def test_a_hung_redis_does_not_slow_writes_and_streams_keep_serving(
    server: ServerProcess, server_rt: Runtime, redis_up: RedisServer, streams: list[SSEStream]
) -> None:
    """Redis stopped (not dead): writes answer at once (the doorbell rings from its own thread)."""
    alice = account(server_rt, server)
    key_id = alice.writes.key()
    stream = must_open(server.url, "object_created", alice.key)
    streams.append(stream)
    assert stream.next_frame().retry is not None
    pid = redis_up.pid()
    durations: list[float] = []
    made: list[str] = []

    def write() -> None:
        started = time.monotonic()
        made.append(alice.writes.object(key_id)["id"])
        durations.append(time.monotonic() - started)

    os.kill(pid, signal.SIGSTOP)
    frames = []
    try:
        writers = [threading.Thread(target=write) for _ in range(3)]
        for thread in writers:
            thread.start()
        # The stream keeps serving meanwhile: its heartbeat also reads the table, so objects
        # already committed arrive even though their doorbells are stuck in the hung Redis.
        while not any(frame.is_heartbeat for frame in frames):
            frames.append(stream.next_frame(timeout=HEARTBEAT * 2))
        for thread in writers:
            thread.join(timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert len(made) == 3 and max(durations) < 1.0, durations
    made.append(alice.writes.object(key_id)["id"])
    # Whatever the hang held back comes from the table, in order, each event once.
    got = [frame.json()["id"] for frame in frames if frame.is_event]
    while len(got) < 4:
        got.append(stream.next_event().json()["id"])
    assert sorted(got[:3]) == sorted(made[:3]) and got[3] == made[3] and len(set(got)) == 4


def _ends_cleanly_or_keeps_serving(stream: SSEStream) -> None:
    """Within two heartbeats the stream either ends properly (last chunk sent) or beats."""
    try:
        frame = stream.next_frame(timeout=HEARTBEAT * 2)
    except StreamEnded:
        assert stream.ended_cleanly, "the stream was cut, not ended"
        return
    assert frame.is_heartbeat, frame


@pytest.fixture(scope="module")
def threaded_server(tmp_path_factory: pytest.TempPathFactory, own_redis: RedisServer) -> Iterator[ServerProcess]:
    """Like `server`, with TELENTIR_SSE_HUB=false: each stream keeps its own subscription and thread."""
    settings = {**STREAM_SETTINGS, "TELENTIR_BROKER_URL": own_redis.url, "TELENTIR_SSE_HUB": "false"}
    with running_server(tmp_path_factory, "redis-threaded", **settings) as srv:
        yield srv


def test_disconnect_releases_the_redis_subscription_within_a_heartbeat(
    threaded_server: ServerProcess, redis_up: RedisServer, streams: list[SSEStream]
) -> None:
    server = threaded_server
    with closing(runtime_over(server.data_dir)) as rt:
        alice = account(rt, server)
    # Other servers of this module share the Redis (each with its hub's one subscription): count from
    # theirs, once settled: a stream there holds its own subscription until its hub takes it over
    # (within a second), and one whose client left until its server notices (within a heartbeat).
    base = settled_numpat(redis_up, quiet=HEARTBEAT + 0.5)
    streams += [must_open(server.url, kind, alice.key) for kind in ("key_created", "object_created", "publish")]
    # Each stream's own pattern, and the revocation pattern of their one credential (NUMPAT counts it once).
    wait_for_numpat(redis_up, base + 4, timeout=HEARTBEAT + 1)
    leaving = streams.pop(1)
    leaving.close()
    wait_for_numpat(redis_up, base + 3, timeout=HEARTBEAT + 0.5)  # the subscription does not outlive its client
    for stream in streams:
        stream.close()
    streams.clear()
    wait_for_numpat(redis_up, base, timeout=HEARTBEAT + 1)


# --- the broker is only a doorbell ----------------------------------------------------------


def test_a_failing_publish_never_fails_the_write(
    client: FlaskClient, rt: Runtime, user: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = {"Authorization": f"Bearer {user['api_key']}"}
    key_id = client.put("/api/keys", json={"server": "default"}, headers=auth).get_json()
    stats = rt.publish_stats
    published, failed = stats.published, stats.failed

    def broken(channel: str, message: str) -> int:
        raise BrokerUnavailable("the broker is gone")

    monkeypatch.setattr(rt.broker, "publish", broken)
    resp = client.put("/api/objects", json={"keyId": key_id, "content": "00", "authTag": "ab" * 16}, headers=auth)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    object_id = resp.get_json()["id"]
    row = rt.db.query_one("SELECT channel, payload FROM events WHERE type = 'object_created' ORDER BY id DESC")
    assert json.loads(row["payload"])["id"] == object_id
    assert row["channel"] == f"object_created:{user['id']}:{object_id}:"
    # A Redis doorbell rings from its own thread, after the answer.
    wait_until(lambda: stats.failed != failed, timeout=5, interval=0.01, message="the failed publish to be counted")
    assert (stats.published, stats.failed) == (published, failed + 1)
    assert client.get(f"/api/objects/{object_id}", headers=auth).status_code == 200


def test_the_in_process_broker_is_rung_before_the_write_answers(tmp_path) -> None:
    """The memory broker cannot hang, so its doorbell skips the publisher thread; Redis's does not."""
    from telentir.pubsub.doorbell import Doorbell, PublishStats
    from telentir.pubsub.memory import MemoryBroker

    broker = MemoryBroker()
    subscriber = broker.pubsub()
    subscriber.psubscribe("t:*")
    assert subscriber.get_message(timeout=1)["type"] == "psubscribe"
    bell = Doorbell(broker, PublishStats())
    try:
        bell.ring("t:1", "ding")
        assert bell.inline and subscriber.get_message(timeout=0) == {
            "type": "pmessage",
            "pattern": "t:*",
            "channel": "t:1",
            "data": "ding",
        }
    finally:
        bell.close()
        subscriber.close()
    remote = Doorbell(RedisBroker(redis_url()), PublishStats())
    try:
        assert not remote.inline
    finally:
        remote.close()
        remote.broker.close()


def test_a_lost_doorbell_is_caught_up_at_the_next_heartbeat(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With every publish failing, a live stream still gets the event within one heartbeat."""
    from telentir import close_app, create_app
    from telentir.services import credentials, keyring, roots
    from telentir.streaming import feed as streams

    app = create_app(
        {
            "data_dir": tmp_path / "data",
            "master_key": FIXED_MASTER_KEY,
            "log_level": "ERROR",
            "sse_heartbeat_seconds": 0.3,
        }
    )
    rt = app.extensions["telentir"]
    try:
        user = make_user(rt)
        roots.ensure_root(rt, user["id"])
        guard = streams.StreamGuard(credentials.authenticate_principal(rt, user["api_key"]).credential)
        feed = streams.feed(rt, streams.parse_request(user["id"], "key_created", {}, None), guard, lambda: False)
        assert next(feed).kind == "open"

        def broken(channel: str, message: str) -> int:
            raise BrokerUnavailable("the broker is gone")

        monkeypatch.setattr(rt.broker, "publish", broken)
        key = keyring.create_key(rt, user["id"], "default", None, None, "{}")
        started = time.monotonic()
        items = [_next_sent(feed) for _ in range(2)]
        assert [i.kind for i in items] == ["event", "heartbeat"], items
        assert items[0].data["key_id"] == key["id"] and time.monotonic() - started < 1.5
        feed.close()
    finally:
        close_app(app)


def _next_sent(feed):
    """The feed's next item that goes to the client (skipping its `idle` flush points)."""
    return next(item for item in feed if item.kind != "idle")


def test_streams_of_one_user_share_one_table_read_per_doorbell(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write seen by many streams of one user is read from the table once, and every stream gets it."""
    from telentir import close_app, create_app
    from telentir.services import credentials, keyring, roots
    from telentir.streaming import feed as streams

    app = create_app({"data_dir": tmp_path / "data", "master_key": FIXED_MASTER_KEY, "log_level": "ERROR"})
    rt = app.extensions["telentir"]
    reads: list[int] = []
    real_read = streams._read_rows
    monkeypatch.setattr(streams, "_read_rows", lambda rt_, req, last: reads.append(last) or real_read(rt_, req, last))
    try:
        user = make_user(rt)
        roots.ensure_root(rt, user["id"])
        guard = streams.StreamGuard(credentials.authenticate_principal(rt, user["api_key"]).credential)
        feeds = [
            streams.feed(rt, streams.parse_request(user["id"], "key_created", {}, None), guard, lambda: False)
            for _ in range(5)
        ]
        assert [next(feed).kind for feed in feeds] == ["open"] * 5
        key = keyring.create_key(rt, user["id"], "default", None, None, "{}")
        items = [_next_sent(feed) for feed in feeds]
        assert {(i.kind, i.data["key_id"]) for i in items} == {("event", key["id"])}
        assert len(reads) == 1, reads
        for feed in feeds:
            feed.close()
    finally:
        close_app(app)
