"""The WebSocket mirror of the event streams: /api/ws/events/{type} (docs/protocol.md §6)."""

from __future__ import annotations

import base64
import os
import statistics
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from ..events_support import HEARTBEAT, STREAM_SETTINGS, Account
from ..sse_client import Refused, open_stream, open_when_free
from ..support import ServerProcess, assert_error, running_server
from ..ws_client import WsClient, close_ws, receive_json, ws_url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's server: memory broker, 1 s heartbeat; 2 streams per user."""
    with running_server(tmp_path_factory, "ws", **STREAM_SETTINGS, TELENTIR_SSE_MAX_STREAMS_PER_USER="2") as srv:
        yield srv


@pytest.fixture
def sockets(server: ServerProcess) -> Iterator[Callable[..., WsClient]]:
    """Factory: a connected WebSocket client for a credential, closed at the end of the test."""
    opened: list[WsClient] = []

    def connect(event_type: str, credential: str, query: str = "") -> WsClient:
        ws = WsClient.connect(ws_url(server.url, event_type, query), headers={"Authorization": f"Bearer {credential}"})
        opened.append(ws)
        return ws

    yield connect
    for ws in opened:
        close_ws(ws)


def handshake(server: ServerProcess, path: str, credential: str | None) -> requests.Response:
    """A WebSocket upgrade request sent by hand, to see an answer given instead of `101`."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    with requests.Session() as session:
        return session.get(server.url + path, headers=headers, timeout=10)


def test_ws_without_credentials_is_401_json_before_the_handshake(server: ServerProcess) -> None:
    assert_error(handshake(server, "/api/ws/events/object_created", None), 401, "unauthorized")


def test_ws_unknown_type_is_404_json_before_the_handshake(
    server: ServerProcess, new_account: Callable[[], Account]
) -> None:
    assert_error(handshake(server, "/api/ws/events/object_exploded", new_account().key), 404, "not_found")


def test_ws_user_id_of_someone_else_is_403_json_before_the_handshake(
    server: ServerProcess, new_account: Callable[[], Account]
) -> None:
    alice, bob = new_account(), new_account()
    resp = handshake(server, f"/api/ws/events/object_created?userId={bob.id}", alice.key)
    assert_error(resp, 403, "forbidden")


@pytest.mark.parametrize("drop, version", [("Sec-WebSocket-Version", None), (None, "8"), ("Sec-WebSocket-Key", None)])
def test_ws_malformed_handshake_is_400_json(
    server: ServerProcess, new_account: Callable[[], Account], drop: str | None, version: str | None
) -> None:
    headers = {
        "Authorization": f"Bearer {new_account().key}",
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": version or "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
    headers.pop(drop or "", None)
    with requests.Session() as session:
        resp = session.get(server.url + "/api/ws/events/object_created", headers=headers, timeout=10)
    assert_error(resp, 400, "invalid_request")


def test_ws_sends_each_event_as_a_json_text_message(
    new_account: Callable[[], Account], sockets: Callable[..., WsClient]
) -> None:
    alice = new_account()
    key_id = alice.writes.key()
    ws = sockets("object_created", alice.key, f"userId={alice.id}")
    latencies = []
    previous = 0
    for _ in range(5):
        started = time.monotonic()
        record = alice.writes.object(key_id)
        message = receive_json(ws, timeout=2.0)
        latencies.append(time.monotonic() - started)
        assert set(message) == {"id", "event", "data"}
        assert message["event"] == "object_created" and message["data"]["id"] == record["id"]
        assert isinstance(message["id"], int) and message["id"] > previous
        previous = message["id"]
    print(
        f"WebSocket delivery latency: median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
    assert max(latencies) < 1.0, latencies


def test_ws_filters_include_exclude_and_never_widen(
    new_account: Callable[[], Account], sockets: Callable[..., WsClient]
) -> None:
    alice, bob = new_account(), new_account()
    key_id = alice.writes.key()
    parent, other = alice.writes.object(key_id)["id"], alice.writes.object(key_id)["id"]
    filtered = sockets("object_created", alice.key, f"relatedId={parent}")
    starred = sockets("object_created", alice.key, "relatedId=*")
    bob_key = bob.writes.key()
    bob.writes.object(bob_key)  # another user's event: nobody here may see it
    alice.writes.object(key_id, related=other)  # excluded by the filter
    wanted = alice.writes.object(key_id, related=parent)["id"]
    message = receive_json(filtered)
    assert message["data"]["id"] == wanted and message["data"]["related_object_id"] == parent
    # `*` is a literal value, not a wildcard: both events above were published and went by.
    assert starred.receive(timeout=HEARTBEAT) is None
    assert filtered.receive(timeout=0.2) is None


def test_ws_resumes_with_since(new_account: Callable[[], Account], sockets: Callable[..., WsClient]) -> None:
    alice = new_account()
    key_id = alice.writes.key()
    first = sockets("object_updated", alice.key)
    record = alice.writes.object(key_id)
    alice.writes.update(record["id"], {"n": 0})
    cursor = receive_json(first)["id"]
    close_ws(first)
    for n in range(1, 4):
        alice.writes.update(record["id"], {"n": n})
    again = sockets("object_updated", alice.key, f"since={cursor}&objectId={record['id']}")
    replayed = [receive_json(again) for _ in range(3)]
    assert [m["id"] for m in replayed] == sorted(m["id"] for m in replayed) and replayed[0]["id"] > cursor
    alice.writes.update(record["id"], {"n": 4})
    live = receive_json(again)
    assert live["id"] > replayed[-1]["id"] and live["event"] == "object_updated"


def test_ws_over_the_cap_is_429_json_before_the_handshake(
    server: ServerProcess, new_account: Callable[[], Account], sockets: Callable[..., WsClient]
) -> None:
    alice = new_account()
    sockets("object_created", alice.key)
    sockets("object_created", alice.key)
    assert_error(handshake(server, "/api/ws/events/object_created", alice.key), 429, "rate_limited")


def test_ws_is_subscribed_once_the_handshake_is_done(
    new_account: Callable[[], Account], sockets: Callable[..., WsClient]
) -> None:
    """A write made right after `connect()` returns is never missed (no race with the subscription)."""
    alice = new_account()
    key_id = alice.writes.key()
    for _ in range(10):  # the race it guards against is narrow: try it several times
        ws = sockets("key_deleted", alice.key)
        alice.writes.delete_key(key_id)
        assert receive_json(ws, timeout=2.0)["data"]["key_id"] == key_id
        close_ws(ws)
        key_id = alice.writes.key()


def test_ws_disconnect_frees_the_slot_within_a_heartbeat(
    server: ServerProcess, new_account: Callable[[], Account], sockets: Callable[..., WsClient]
) -> None:
    alice = new_account()
    keep = sockets("object_created", alice.key)
    leaving = sockets("object_created", alice.key)
    refused = open_stream(server.url, "object_created", alice.key)
    assert isinstance(refused, Refused) and refused.status == 429
    close_ws(leaving)
    stream = open_when_free(server.url, "object_created", alice.key, timeout=HEARTBEAT + 0.5)
    try:
        record = alice.writes.object(alice.writes.key())
        assert stream.next_event().json()["id"] == record["id"]
        assert receive_json(keep)["data"]["id"] == record["id"]
    finally:
        stream.close()
