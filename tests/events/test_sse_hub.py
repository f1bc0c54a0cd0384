"""The SSE hub: live streams served by one hub per process, not a thread each (real gunicorn, real sockets)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from urllib.parse import urlsplit

import pytest
import requests

from telentir.runtime import Runtime

from ..events_support import HEARTBEAT, RETRY_MS, STREAM_SETTINGS, Account, account
from ..redis_server import RedisServer, wait_for_numpat
from ..sse_client import HttpConnection, SSEStream, must_open, open_when_free
from ..support import FIXED_MASTER_KEY, ServerProcess, make_user, running_server, runtime_over, wait_until

BIG_CONTENT = "ab" * 16 * 1024  # a 16 KiB ciphertext: its object_created event carries 32 KiB of hex


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory: pytest.TempPathFactory, own_redis: RedisServer) -> Iterator[ServerProcess]:
    """One worker on a Redis of its own, hub on (the default)."""
    with running_server(tmp_path_factory, "hub", **STREAM_SETTINGS, TELENTIR_BROKER_URL=own_redis.url) as srv:
        yield srv


@pytest.fixture(scope="module")
def hub_rt(hub_server: ServerProcess) -> Iterator[Runtime]:
    with closing(runtime_over(hub_server.data_dir)) as rt:
        yield rt


def test_one_subscription_serves_every_stream_of_the_process(
    hub_server: ServerProcess, hub_rt: Runtime, own_redis: RedisServer, streams: list[SSEStream]
) -> None:
    """Twenty streams hold one Redis subscription (the hub's), not twenty, and each gets the event once."""
    alice, bob = account(hub_rt, hub_server), account(hub_rt, hub_server)
    streams += [must_open(hub_server.url, "key_created", who.key) for who in [alice] * 15 + [bob] * 5]
    wait_for_numpat(own_redis, 1, timeout=HEARTBEAT + 1)
    key = alice.writes.key()
    for stream in streams[:15]:
        assert stream.next_event().json()["key_id"] == key
    theirs, mine = bob.writes.key(), alice.writes.key()
    for stream in streams[:15]:  # never bob's key
        assert stream.next_event().json()["key_id"] == mine
    for stream in streams[15:]:
        assert stream.next_event().json()["key_id"] == theirs


def test_a_leaving_client_frees_its_slot_at_once(
    server_factory: Callable[..., ServerProcess], own_redis: RedisServer
) -> None:
    """The hub watches each socket: a client that hangs up gives its slot back well within a heartbeat."""
    server = server_factory(
        "hub-capped",
        TELENTIR_SSE_RETRY_MS=str(RETRY_MS),
        TELENTIR_BROKER_URL=own_redis.url,
        TELENTIR_SSE_MAX_STREAMS_PER_USER="1",
        TELENTIR_SSE_HEARTBEAT_SECONDS="30",
    )
    with closing(runtime_over(server.data_dir)) as rt:
        alice = account(rt, server)
    must_open(server.url, "key_created", alice.key).close()
    again = open_when_free(server.url, "key_created", alice.key, timeout=2.0)
    try:
        key = alice.writes.key()
        assert again.next_event().json()["key_id"] == key
    finally:
        again.close()


def test_an_http_1_0_client_gets_a_plain_body(hub_server: ServerProcess, hub_rt: Runtime) -> None:
    """gunicorn frames HTTP/1.0 answers without chunks, and so does the hub."""
    alice = account(hub_rt, hub_server)
    url = urlsplit(hub_server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(f"GET /api/events/key_created HTTP/1.0\r\nAuthorization: Bearer {alice.key}\r\n\r\n".encode())
        received = _read_until(sock, b"retry: ")
        key = alice.writes.key()
        received += _read_until(sock, key.encode() + b'"')
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower(), head
    frames = [block for block in body.split(b"\n\n") if block.startswith(b"id: ")]
    assert json.loads(frames[0].split(b"data: ", 1)[1])["key_id"] == key, body


def test_head_answers_the_stream_headers_and_ends(hub_server: ServerProcess, hub_rt: Runtime) -> None:
    """HEAD carries no body: the answer is the stream's headers and it ends, freeing the connection."""
    alice = account(hub_rt, hub_server)
    conn = HttpConnection(hub_server.url, timeout=5)
    try:
        conn.send_request("HEAD", "/api/events/key_created", {"Authorization": f"Bearer {alice.key}"})
        status, headers = conn.read_head()
        assert status == 200 and headers["content-type"].startswith("text/event-stream")
        # The same keep-alive connection answers the next request: the HEAD did not become a stream.
        assert conn.request("GET", "/healthz")[0] == 200
    finally:
        conn.close()
    refused = requests.head(
        f"{hub_server.url}/api/events/nope", headers={"Authorization": f"Bearer {alice.key}"}, timeout=5
    )
    assert refused.status_code == 404


def test_a_client_that_stops_reading_is_cut_and_the_others_keep_up(
    hub_server: ServerProcess, hub_rt: Runtime, streams: list[SSEStream]
) -> None:
    """A stalled reader's backlog is bounded: past it that stream ends, and nobody else waits for it."""
    alice = account(hub_rt, hub_server)
    key_id = alice.writes.key()
    url = urlsplit(hub_server.url)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((url.hostname, url.port))
    stalled.sendall(
        f"GET /api/events/object_created HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.key}\r\n\r\n".encode()
    )
    _read_until(stalled, b"retry: ")
    reader = must_open(hub_server.url, "object_created", alice.key)
    streams.append(reader)
    made = [_big_object(alice, key_id) for _ in range(400)]  # ~13 MB of frames: past any socket buffers
    got = [reader.next_event(timeout=30).json()["id"] for _ in made]
    assert got == made
    stalled.settimeout(30)
    drained = 0
    while chunk := stalled.recv(1 << 20):  # the cut stream ends: buffered bytes, then end of file
        drained += len(chunk)
    stalled.close()
    assert drained < 32 * 1024 * len(made), "the stalled stream was sent everything instead of being cut"


def _big_object(who: Account, key_id: str) -> str:
    return str(who.writes.object(key_id, content=BIG_CONTENT)["id"])


def _read_until(sock: socket.socket, marker: bytes, timeout: float = 10.0) -> bytes:
    data, deadline = b"", time.monotonic() + timeout
    while marker not in data:
        assert time.monotonic() < deadline, data[-300:]
        chunk = sock.recv(65536)
        assert chunk, data[-300:]
        data += chunk
    return data


# --- the hub in-process: what must not take it down --------------------------------------


def test_a_message_that_is_not_a_doorbell_is_ignored(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    from telentir.streaming.hub import SSEHub

    hub = SSEHub(rt)
    try:
        assert hub.ready.wait(5)
        rt.broker.publish("object_created:usr_x:obj_y:", "not json")
        rt.broker.publish("object_created:usr_x:obj_y:", '{"no": "id"}')
        wait_until(
            lambda: caplog.text.count("not a doorbell") >= 2,
            timeout=5,
            interval=0.02,
            message=lambda: f"two 'not a doorbell' warnings in the log:\n{caplog.text}",
        )
        assert hub.alive and hub.ready.is_set()
    finally:
        hub.close()
    hub.close()  # a second close does nothing


def test_a_broker_outage_is_logged_once_not_at_every_try_to_subscribe_again(
    rt: Runtime, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub tries to subscribe again every RESUBSCRIBE_PAUSE_SECONDS: one warning per outage, one when back.

    The hub reports to the health record (storage/health.py), which logs the outage and counts every try.
    """
    from telentir.pubsub import BrokerUnavailable
    from telentir.storage import health
    from telentir.streaming import hub as hub_module

    monkeypatch.setattr(hub_module, "RESUBSCRIBE_PAUSE_SECONDS", 0.02)
    monkeypatch.setattr(health, "QUIET_SECONDS", 0.2)  # the outage ends at a success 0.2 s after its last failure
    monkeypatch.setattr(rt.broker, "in_process", False)  # as Redis: a broker that can be away
    real_pubsub, tries = rt.broker.pubsub, []
    away = threading.Event()

    def pubsub(*args: object, **kwargs: object) -> object:
        if away.is_set():
            tries.append(time.monotonic())
            raise BrokerUnavailable("Redis is unavailable: Connection refused.")
        return real_pubsub(*args, **kwargs)

    monkeypatch.setattr(rt.broker, "pubsub", pubsub)
    caplog.set_level("INFO", logger="telentir")
    away.set()
    hub = hub_module.SSEHub(rt)
    try:
        wait_until(lambda: len(tries) >= 10, timeout=5, message="ten tries to subscribe")
        assert not hub.ready.is_set() and rt.health.is_away("redis")
        away.clear()
        assert hub.ready.wait(5)

        def lines(logger: str) -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.INFO]

        wait_until(lambda: len(lines("telentir.storage")) >= 2, timeout=5, message="the outage's end in the log")
        outage = lines("telentir.storage")
        assert len(outage) == 2, outage  # one line when lost, one when back: none per try
        lost, back = outage
        assert lost.startswith("Redis is unavailable: ") and "Connection refused" in lost, lost
        assert back.startswith("Redis is back: ") and f"({len(tries)} of them)" in back, back  # every try counted
        assert not rt.health.is_away("redis")
        assert not lines("telentir.streaming.hub")
    finally:
        hub.close()


def test_a_stopped_hub_is_replaced_on_next_use(rt: Runtime) -> None:
    from telentir.streaming.hub import hub_for

    first = hub_for(rt)
    assert hub_for(rt) is first
    first.close()
    second = hub_for(rt)
    assert second is not first and second.alive


def test_a_stream_the_hub_cannot_take_yet_is_served_meanwhile_then_handed_over(tmp_path) -> None:
    """Until the hub is subscribed the stream's own thread serves it (events, heartbeats); then the hub takes over."""
    from telentir import close_app, create_app
    from telentir.services import credentials, keyring, roots
    from telentir.streaming import feed as streams

    settings = {"data_dir": tmp_path / "data", "master_key": FIXED_MASTER_KEY, "log_level": "ERROR"}
    app = create_app({**settings, "sse_heartbeat_seconds": 0.3})
    rt = app.extensions["telentir"]
    asked: list[int] = []
    released: list[bool] = []
    hub_ready_at = time.monotonic() + 1.0

    def handoff(req: streams.FeedRequest, guard: streams.StreamGuard, last: int, release: Callable[[], None]) -> bool:
        asked.append(last)
        if time.monotonic() < hub_ready_at:
            return False  # as while the hub's subscription is not confirmed yet
        release()
        released.append(True)
        return True

    try:
        user = make_user(rt)
        roots.ensure_root(rt, user["id"])
        guard = streams.StreamGuard(credentials.authenticate_principal(rt, user["api_key"]).credential)
        feed = streams.feed(
            rt, streams.parse_request(user["id"], "key_created", {}, None), guard, lambda: False, handoff
        )
        assert next(feed).kind == "open"
        key = keyring.create_key(rt, user["id"], "default", None, None, "{}")
        sent: list[streams.Item] = []
        for item in feed:  # ends once handed over
            if item.kind != "idle":
                sent.append(item)
            if time.monotonic() > hub_ready_at + 5:
                break
        assert released == [True], "the stream was never handed to the hub"
        kinds = [item.kind for item in sent]
        assert kinds[0] == "event" and sent[0].data["key_id"] == key["id"], sent
        assert kinds.count("heartbeat") >= 2, kinds  # a beat every 0.3 s while waiting for the hub
        assert asked[-1] == sent[0].event_id and len(asked) > 2, asked
    finally:
        close_app(app)


@pytest.mark.embedded_only("the in-process broker, the only one an idle hub unsubscribes from")
def test_an_idle_hub_gives_its_subscription_up_and_takes_it_again(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no stream for IDLE_RELEASE_SECONDS the hub unsubscribes (its worker is rung no more); a stream keeps it."""
    from telentir.services import credentials
    from telentir.streaming import feed as streams
    from telentir.streaming import hub as hub_module

    monkeypatch.setattr(hub_module, "IDLE_RELEASE_SECONDS", 0.3)
    hub = hub_module.SSEHub(rt)
    client, server_end = socket.socketpair()
    try:
        assert hub.ready.wait(5) and rt.broker.subscriber_count() == 1
        wait_until(lambda: not hub.ready.is_set() and rt.broker.subscriber_count() == 0, timeout=5)
        assert not hub.reserve()  # not now: it subscribes again for the stream's next try
        assert hub.ready.wait(5) and rt.broker.subscriber_count() == 1
        assert hub.reserve()
        user = make_user(rt)
        guard = streams.StreamGuard(credentials.authenticate_principal(rt, user["api_key"]).credential)
        req = streams.parse_request(user["id"], "object_created", {}, None)
        served = threading.Thread(target=hub.attach, args=(req, guard, server_end, False, 0))
        served.start()
        time.sleep(1.0)  # three idle spells long: the stream keeps the subscription
        assert hub.ready.is_set() and rt.broker.subscriber_count() == 1
        client.close()  # the client leaves: the stream ends, then the hub is idle again
        served.join(timeout=5)
        assert not served.is_alive()
        wait_until(lambda: not hub.ready.is_set() and rt.broker.subscriber_count() == 0, timeout=5)
    finally:
        hub.close()
        client.close()
        server_end.close()
