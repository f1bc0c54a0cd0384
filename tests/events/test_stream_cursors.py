"""Event-stream cursors and parameters (docs/protocol.md §6), against the real server.

A cursor is ASCII digits up to 2^63-1, or a JSON 400. A cursor above the newest event id
(an older backup restored, a cursor from another server) starts the stream with
`event: resync`, exactly like one older than retention. A query parameter that is not a
filter of the type, `userId` or `since` is a 400 naming the allowed ones.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

from telentir.runtime import Runtime

from ..sse_client import Refused, SSEStream, Writes, must_open, open_stream
from ..support import Api, ServerProcess

User = Callable[..., tuple[dict[str, Any], Api]]
MAX_CURSOR = 2**63 - 1
BAD_CURSORS = {
    "superscript-two": "²",
    "arabic-indic-five": "٥",
    "fullwidth-one": "１",
    "past-2^63-1": str(MAX_CURSOR + 1),
    "5000-digits": "9" * 5000,
    "negative": "-1",
    "plus": "+1",
    "inner-space": "1 2",
    "hex": "0x10",
    "exponent": "1e3",
    "fraction": "1.0",
}


@pytest.fixture
def account(live_server: ServerProcess, new_live_user: User) -> tuple[dict[str, Any], Writes]:
    """A verified user on the live server, and a writer of events for them."""
    user, _ = new_live_user()
    return user, Writes(live_server.url, user["api_key"])


def newest_id(rt: Runtime) -> int:
    """The newest event id of the live server."""
    return int(rt.db.query_value("SELECT COALESCE(MAX(id), 0) FROM events"))


def refused(result: SSEStream | Refused) -> Refused:
    """The stream request was answered with an error (a stream that opened is closed first)."""
    if isinstance(result, SSEStream):
        result.close()
        raise AssertionError("the stream opened")
    return result


def assert_400(result: SSEStream | Refused) -> str:
    """A JSON 400 `invalid_request`; its message."""
    answer = refused(result)
    assert answer.status == 400, (answer.status, answer.body[:300])
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["error"] == "invalid_request", body
    return str(body["message"])


# --- the cursor's form ----------------------------------------------------------------


@pytest.mark.parametrize("value", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
@pytest.mark.parametrize("how", ["since", "Last-Event-ID"])
def test_a_cursor_that_is_not_ascii_digits_up_to_2_63_is_400(
    live_server: ServerProcess, account: tuple[dict[str, Any], Writes], how: str, value: str
) -> None:
    user, _ = account
    if how == "since":
        result = open_stream(live_server.url, "object_created", user["api_key"], params={"since": value})
    else:
        # Sent as UTF-8 bytes, as a client would send a non-ASCII header.
        raw = value.encode().decode("latin-1")
        result = open_stream(live_server.url, "object_created", user["api_key"], headers={"Last-Event-ID": raw})
    assert "since" in assert_400(result)


def test_a_bad_since_is_400_even_when_the_header_wins(
    live_server: ServerProcess, account: tuple[dict[str, Any], Writes]
) -> None:
    user, _ = account
    result = open_stream(
        live_server.url, "key_created", user["api_key"], params={"since": "²"}, headers={"Last-Event-ID": "1"}
    )
    assert_400(result)


@pytest.mark.parametrize("value", [str(MAX_CURSOR), "0" * 30 + "1", "0"])
def test_the_largest_cursor_and_leading_zeros_are_cursors(
    live_server: ServerProcess, account: tuple[dict[str, Any], Writes], value: str
) -> None:
    user, _ = account
    must_open(live_server.url, "key_deleted", user["api_key"], params={"since": value}).close()


# --- a cursor ahead of the log --------------------------------------------------------


@pytest.mark.parametrize("how", ["since", "Last-Event-ID"])
def test_a_cursor_ahead_of_the_log_is_told_to_resync_then_follows_live(
    live_server: ServerProcess, live_rt: Runtime, account: tuple[dict[str, Any], Writes], how: str
) -> None:
    user, writes = account
    writes.key()
    newest = newest_id(live_rt)
    cursor = str(newest + 1000)  # a backup restored from before these 1000 events
    kwargs: dict[str, Any] = {"params": {"since": cursor}} if how == "since" else {"headers": {"Last-Event-ID": cursor}}
    with must_open(live_server.url, "key_created", user["api_key"], **kwargs) as stream:
        first = stream.next_event()
        assert (first.event, first.id, first.json()) == ("resync", None, {"since": newest + 1})
        key_id = writes.key()
        live = stream.next_event()
        assert live.event == "key_created" and live.json()["key_id"] == key_id
        assert int(live.id or "") >= newest + 1


def test_since_minus_one_resumes_without_another_resync(
    live_server: ServerProcess, live_rt: Runtime, account: tuple[dict[str, Any], Writes]
) -> None:
    user, writes = account
    with must_open(live_server.url, "key_created", user["api_key"], params={"since": str(MAX_CURSOR)}) as ahead:
        since = ahead.next_event().json()["since"]
    key_id = writes.key()
    with must_open(live_server.url, "key_created", user["api_key"], headers={"Last-Event-ID": str(since - 1)}) as again:
        frame = again.next_event()
        assert frame.event == "key_created" and frame.json()["key_id"] == key_id


def test_the_newest_id_itself_is_not_ahead(
    live_server: ServerProcess, live_rt: Runtime, account: tuple[dict[str, Any], Writes]
) -> None:
    user, writes = account
    writes.key()
    cursor = newest_id(live_rt)
    with must_open(live_server.url, "key_created", user["api_key"], params={"since": str(cursor)}) as stream:
        key_id = writes.key()
        frame = stream.next_event()
        assert frame.event == "key_created" and frame.json()["key_id"] == key_id


def test_the_websocket_mirror_resyncs_an_ahead_cursor_too(
    live_server: ServerProcess, live_rt: Runtime, account: tuple[dict[str, Any], Writes]
) -> None:
    user, writes = account
    writes.key()
    newest = newest_id(live_rt)
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
        sock.sendall(upgrade_request(f"/api/ws/events/key_created?since={newest + 5}", user["api_key"]))
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert json.loads(first_text_frame(sock, rest)) == {
            "id": None,
            "event": "resync",
            "data": {"since": newest + 1},
        }


# --- parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_type, params, allowed",
    [
        ("key_created", {"objectId": "x"}, "keyId, userId, since"),
        ("object_created", {"objectid": "x"}, "objectId, relatedId, userId, since"),
        ("publish", {"cursor": "1"}, "type, relatedId, objectId, userId, since"),
        ("unpublish", {"objectId": "x"}, "type, relatedId, userId, since"),
    ],
)
def test_a_parameter_that_is_not_a_filter_of_the_type_is_400(
    live_server: ServerProcess,
    account: tuple[dict[str, Any], Writes],
    event_type: str,
    params: dict[str, str],
    allowed: str,
) -> None:
    user, _ = account
    message = assert_400(open_stream(live_server.url, event_type, user["api_key"], params=params))
    assert repr(next(iter(params))) in message and allowed in message


def test_a_repeated_parameter_is_400(live_server: ServerProcess, account: tuple[dict[str, Any], Writes]) -> None:
    user, _ = account
    stream = open_stream(live_server.url, "key_created", user["api_key"], params=[("keyId", "a"), ("keyId", "b")])
    assert "keyId" in assert_400(stream)


def test_the_websocket_handshake_refuses_an_unknown_parameter(
    live_server: ServerProcess, account: tuple[dict[str, Any], Writes]
) -> None:
    user, _ = account
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
        sock.sendall(upgrade_request("/api/ws/events/key_created?keyid=x", user["api_key"]))
        head, _ = read_head(sock)
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"application/json" in head


# --- WebSocket by hand ----------------------------------------------------------------


def upgrade_request(target: str, credential: str) -> bytes:
    """A WebSocket handshake request."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {target} HTTP/1.1",
        "Host: 127.0.0.1",
        "Connection: Upgrade",
        "Upgrade: websocket",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Key: {key}",
        f"Authorization: Bearer {credential}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response head, and whatever arrived behind it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def first_text_frame(sock: socket.socket, data: bytes) -> str:
    """The payload of the server's first frame (unmasked, as servers send), which must be text."""
    while len(data) < 2 or len(data) < _frame_end(data):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    assert data[0] == 0x81, data[:2]  # FIN + text
    start = _frame_end(data) - _payload_length(data)
    return data[start : _frame_end(data)].decode()


def _payload_length(data: bytes) -> int:
    length = data[1] & 0x7F
    if length == 126:
        return int.from_bytes(data[2:4], "big") if len(data) >= 4 else 1 << 20
    assert length < 127, "a resync message is short"
    return length


def _frame_end(data: bytes) -> int:
    header = 4 if data[1] & 0x7F == 126 else 2
    return header + _payload_length(data)
