"""Server-Sent Events over real sockets against a real server (docs/protocol.md §6).

One module-scoped server with a 1 s heartbeat keeps the module fast; caps get their own
small server. Absence is proven without sleeping blind: either a later matching write
(a sentinel) arrives first, or a heartbeat arrives after the witness stream got the event.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import pytest

from telentir.runtime import Runtime
from telentir.streaming.feed import Item
from telentir.streaming.frames import retry_frame, sse_frame

from ..dataplane_support import PAYLOAD_FIELDS
from ..events_support import HEARTBEAT, RETRY_MS, STREAM_SETTINGS, Account, account
from ..sse_client import Frame, Refused, SSEParser, SSEStream, assert_refused, must_open, open_stream, open_when_free
from ..support import ServerProcess, running_server, runtime_over


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The module's server: memory broker, 1 s heartbeat, retry 1500 ms, the default stream caps.

    The filter scenario holds more of one user's streams (one per filter) than its fair share:
    on a quiet box that is allowed (tests/dataplane/test_resource_limits.py tests the share).
    """
    with running_server(tmp_path_factory, "sse", **STREAM_SETTINGS) as srv:
        yield srv


# --- the frame formatter, pinned byte for byte ------------------------------------------


@pytest.mark.parametrize(
    "item, expected",
    [
        (
            Item("event", 42, "object_updated", {"object_id": "obj_1", "n": 1}),
            'id: 42\nevent: object_updated\ndata: {"object_id":"obj_1","n":1}\n\n',
        ),
        (Item("event", 0, "key_created", {}), "id: 0\nevent: key_created\ndata: {}\n\n"),
        # A newline inside a value is escaped by JSON: data stays one line; non-ASCII is escaped too.
        (
            Item("event", 7, "publish", {"type": "a\nb", "x": "é"}),
            'id: 7\nevent: publish\ndata: {"type":"a\\nb","x":"\\u00e9"}\n\n',
        ),
        (Item("resync", event="resync", data={"since": 101}), 'event: resync\ndata: {"since":101}\n\n'),
        (Item("heartbeat"), ": keep-alive\n\n"),
    ],
)
def test_sse_frame_is_pinned_byte_for_byte(item: Item, expected: str) -> None:
    assert sse_frame(item) == expected


def test_retry_frame_is_pinned() -> None:
    assert retry_frame(3000) == "retry: 3000\n\n"


# --- the test client's parser (the tests below rely on it) -----------------------------


def test_parser_reads_fields_comments_and_multiline_data() -> None:
    parser = SSEParser()
    frames = parser.feed(b"retry: 10\n\n: hello\n\nid: 3\nevent: x\ndata: a\ndata:b\ndata:  c\n\n")
    assert [(f.retry, f.comments, f.id, f.event, f.data) for f in frames] == [
        (10, [], None, None, None),
        (None, ["hello"], None, None, None),
        (None, [], "3", "x", "a\nb\n c"),
    ]
    assert frames[1].is_heartbeat and frames[2].is_event


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_parser_accepts_every_line_ending_split_anywhere(newline: bytes) -> None:
    text = b"id: 1" + newline + b'data: {"a":"\xc3\xa9"}' + newline + newline + b": keep-alive" + newline * 2
    parser = SSEParser()
    frames = [frame for i in range(len(text)) for frame in parser.feed(text[i : i + 1])]  # byte by byte
    frames += parser.feed(b"", final=True)
    assert [(f.id, f.data, f.comments) for f in frames] == [("1", '{"a":"é"}', []), (None, None, ["keep-alive"])]


def test_parser_drops_an_unfinished_block_at_the_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: half") == []
    assert parser.feed(b"", final=True) == []


# --- opening a stream ---------------------------------------------------------------------


def test_stream_sends_sse_headers_and_opens_with_retry(
    server: ServerProcess, new_account: Callable[[], Account], streams: list[SSEStream]
) -> None:
    alice = new_account()
    stream = must_open(server.url, "object_created", alice.key)
    streams.append(stream)
    assert stream.headers["content-type"].split(";")[0] == "text/event-stream"
    assert stream.headers["cache-control"] == "no-cache"
    assert stream.headers["x-accel-buffering"] == "no"
    first = stream.next_frame()
    assert first.retry == RETRY_MS
    assert bytes(stream.raw).startswith(f"retry: {RETRY_MS}\n\n".encode())


def test_stream_without_credentials_is_401_json(server: ServerProcess) -> None:
    refused = open_stream(server.url, "object_created", None)
    assert isinstance(refused, Refused)
    assert_refused(refused, 401, "unauthorized")


def test_unknown_event_type_is_404_json(server: ServerProcess, new_account: Callable[[], Account]) -> None:
    refused = open_stream(server.url, "object_exploded", new_account().key)
    assert isinstance(refused, Refused)
    body = assert_refused(refused, 404, "not_found")
    assert "object_created" in body["message"]  # names the valid types


def test_user_id_filter_is_allowed_only_for_yourself(
    server: ServerProcess, new_account: Callable[[], Account], streams: list[SSEStream]
) -> None:
    alice, bob = new_account(), new_account()
    refused = open_stream(server.url, "object_created", alice.key, params={"userId": bob.id})
    assert isinstance(refused, Refused)
    assert_refused(refused, 403, "forbidden")
    own = must_open(server.url, "key_created", alice.key, params={"userId": alice.id})
    streams.append(own)
    key_id = alice.writes.key()
    assert own.next_event().json()["key_id"] == key_id


# --- live delivery -------------------------------------------------------------------------


def test_event_reaches_subscriber_within_one_second(
    server: ServerProcess, new_account: Callable[[], Account], streams: list[SSEStream]
) -> None:
    alice = new_account()
    key_id = alice.writes.key()
    stream = must_open(server.url, "object_created", alice.key)
    streams.append(stream)
    latencies = []
    for _ in range(10):
        started = time.monotonic()
        record = alice.writes.object(key_id)  # on a fresh connection, as another client would
        frame = stream.next_event(timeout=2.0)
        latencies.append(frame.received_at - started)
        assert frame.event == "object_created" and frame.json()["id"] == record["id"]
    print(
        f"SSE delivery latency (write start → frame): median {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
    assert max(latencies) < 1.0, latencies


def test_idle_stream_gets_heartbeats(
    server: ServerProcess, new_account: Callable[[], Account], streams: list[SSEStream]
) -> None:
    stream = must_open(server.url, "object_deleted", new_account().key)
    streams.append(stream)
    stream.next_frame()  # retry:
    beats = [stream.next_frame(timeout=HEARTBEAT * 2) for _ in range(3)]
    assert all(frame.is_heartbeat and frame.comments == ["keep-alive"] for frame in beats), beats
    gaps = [later.received_at - earlier.received_at for earlier, later in itertools.pairwise(beats)]
    assert all(HEARTBEAT * 0.5 < gap < HEARTBEAT * 1.6 for gap in gaps), gaps
    assert bytes(stream.raw) == f"retry: {RETRY_MS}\n\n".encode() + b": keep-alive\n\n" * 3


def test_user_never_sees_another_users_events(
    server: ServerProcess, new_account: Callable[[], Account], streams: list[SSEStream]
) -> None:
    alice, bob = new_account(), new_account()
    bob_key = bob.writes.key()
    bob_object = bob.writes.object(bob_key)
    alice_all = must_open(server.url, "object_updated", alice.key)
    # Even naming Bob's object as a filter shows Alice nothing: the user id is always hers.
    alice_aimed = must_open(server.url, "object_updated", alice.key, params={"objectId": bob_object["id"]})
    bob_all = must_open(server.url, "object_updated", bob.key)
    streams += [alice_all, alice_aimed, bob_all]
    for n in range(3):
        bob.writes.update(bob_object["id"], {"n": n})
    alice_object = alice.writes.object(alice.writes.key())
    alice.writes.update(alice_object["id"], {"mine": True})  # Alice's sentinel
    assert alice_all.next_event().json()["object_id"] == alice_object["id"]
    assert [bob_all.next_event().json()["object_id"] for _ in range(3)] == [bob_object["id"]] * 3
    mark = time.monotonic()
    assert alice_aimed.events_before_heartbeats(mark) == []
    assert alice_all.events_before_heartbeats(mark) == []


# --- filters and payloads for every type (one scenario, many checks) -----------------------


@dataclass
class Scenario:
    """Streams opened before a fixed series of writes, and what each received."""

    ids: dict[str, str]
    frames: dict[str, list[Frame]]
    answers: dict[str, Any]


# name → (type, filters by id name). Values in filters are names looked up in Scenario.ids.
STREAMS: dict[str, tuple[str, dict[str, str]]] = {
    "key_created": ("key_created", {}),
    "key_created?keyId=k1": ("key_created", {"keyId": "k1"}),
    "key_deleted": ("key_deleted", {}),
    "key_deleted?keyId=kA": ("key_deleted", {"keyId": "kA"}),
    "key_deleted?keyId=kB": ("key_deleted", {"keyId": "kB"}),
    "object_created": ("object_created", {}),
    "object_created?relatedId=p1": ("object_created", {"relatedId": "p1"}),
    "object_created?relatedId=p2": ("object_created", {"relatedId": "p2"}),
    "object_created?objectId=o1": ("object_created", {"objectId": "o1"}),
    "object_updated": ("object_updated", {}),
    "object_updated?objectId=o1": ("object_updated", {"objectId": "o1"}),
    "object_updated?objectId=o2": ("object_updated", {"objectId": "o2"}),
    "object_deleted": ("object_deleted", {}),
    "object_deleted?objectId=o1": ("object_deleted", {"objectId": "o1"}),
    "object_deleted?objectId=o2": ("object_deleted", {"objectId": "o2"}),
    "publish": ("publish", {}),
    "publish?type=campaigns": ("publish", {"type": "=campaigns"}),
    "publish?type=contacts": ("publish", {"type": "=contacts"}),
    "publish?relatedId=p1": ("publish", {"relatedId": "p1"}),
    "publish?relatedId=p2": ("publish", {"relatedId": "p2"}),
    "publish?objectId=o1": ("publish", {"objectId": "o1"}),
    "publish?objectId=o2": ("publish", {"objectId": "o2"}),
    "publish?all three match": ("publish", {"type": "=campaigns", "relatedId": "p1", "objectId": "o1"}),
    "publish?one of three differs": ("publish", {"type": "=campaigns", "relatedId": "p1", "objectId": "o2"}),
    "unpublish": ("unpublish", {}),
    "unpublish?type=campaigns": ("unpublish", {"type": "=campaigns"}),
    "unpublish?type=contacts": ("unpublish", {"type": "=contacts"}),
    "unpublish?relatedId=p1": ("unpublish", {"relatedId": "p1"}),
    "unpublish?relatedId=p2": ("unpublish", {"relatedId": "p2"}),
    # Glob characters are literal: none of these may match anything.
    "key_created?keyId=*": ("key_created", {"keyId": "=*"}),
    "object_created?relatedId=*": ("object_created", {"relatedId": "=*"}),
    "object_created?objectId=obj_*": ("object_created", {"objectId": "=obj_*"}),
    "object_updated?objectId=*": ("object_updated", {"objectId": "=*"}),
    "object_updated?objectId=?…": ("object_updated", {"objectId": "=" + "?" * 26}),
    "object_updated?objectId=[a-z]*": ("object_updated", {"objectId": "=obj_[A-Za-z0-9]*"}),
    "object_deleted?objectId=\\": ("object_deleted", {"objectId": "=obj_*\\"}),
    "publish?type=*": ("publish", {"type": "=*", "relatedId": "=*", "objectId": "=*"}),
    "unpublish?relatedId=*": ("unpublish", {"relatedId": "=*"}),
}
# The unfiltered stream of each type is the witness that its events were published.
WITNESSES = ("key_created", "key_deleted", "object_created", "object_updated", "object_deleted", "publish", "unpublish")


@pytest.fixture(scope="module")
def scenario(server: ServerProcess, server_rt: Runtime) -> Iterator[Scenario]:
    """One user: keys and objects, then the streams of STREAMS, then one write of each kind."""
    alice = account(server_rt, server)
    ids = {"k1": alice.writes.key(), "kA": alice.writes.key(), "kB": alice.writes.key()}
    ids["p1"] = alice.writes.object(ids["k1"])["id"]
    ids["p2"] = alice.writes.object(ids["k1"])["id"]
    ids["o1"] = alice.writes.object(ids["k1"], related=ids["p1"])["id"]
    ids["o2"] = alice.writes.object(ids["k1"], related=ids["p2"])["id"]
    opened = {
        name: must_open(server.url, kind, alice.key, params=_params(filters, ids))
        for name, (kind, filters) in STREAMS.items()
    }
    try:
        answers = {"key_created": alice.writes.key(), "object_created": alice.writes.object(ids["k1"], ids["p1"])}
        alice.writes.delete_key(ids["kA"])
        answers["object_updated"] = alice.writes.update(ids["o1"], {"v": 2})
        answers["publish"] = alice.writes.publish("campaigns", ids["p1"], ids["o1"])
        alice.writes.unpublish("campaigns", ids["p1"])
        alice.writes.delete(ids["o1"])
        # Every type's event went out, so whatever else is due arrives before the next heartbeats.
        first = {witness: [opened[witness].next_event()] for witness in WITNESSES}
        mark = time.monotonic()
        frames = {name: first.get(name, []) + stream.events_before_heartbeats(mark) for name, stream in opened.items()}
        yield Scenario(ids, frames, answers)
    finally:
        for stream in opened.values():
            stream.close()


def _params(filters: dict[str, str], ids: dict[str, str]) -> dict[str, str]:
    return {name: value[1:] if value.startswith("=") else ids[value] for name, value in filters.items()}


EXPECTED_COUNTS = dict.fromkeys(STREAMS, 0) | {
    "key_created": 1,
    "key_deleted": 1,
    "key_deleted?keyId=kA": 1,
    "object_created": 1,
    "object_created?relatedId=p1": 1,
    "object_updated": 1,
    "object_updated?objectId=o1": 1,
    "object_deleted": 1,
    "object_deleted?objectId=o1": 1,
    "publish": 1,
    "publish?type=campaigns": 1,
    "publish?relatedId=p1": 1,
    "publish?objectId=o1": 1,
    "publish?all three match": 1,
    "unpublish": 1,
    "unpublish?type=campaigns": 1,
    "unpublish?relatedId=p1": 1,
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_filters_include_and_exclude(scenario: Scenario, name: str) -> None:
    kind = STREAMS[name][0]
    got = scenario.frames[name]
    assert len(got) == EXPECTED_COUNTS[name], [f.data for f in got]
    assert all(frame.event == kind for frame in got)


@pytest.mark.parametrize("kind", WITNESSES)
def test_every_event_type_carries_the_spec_payload(scenario: Scenario, kind: str) -> None:
    (frame,) = scenario.frames[kind]
    payload = frame.json()
    assert set(payload) == PAYLOAD_FIELDS[kind]
    assert payload["user_id"].startswith("usr_") and int(frame.id or "") > 0
    ids, answers = scenario.ids, scenario.answers
    expected = {
        "key_created": {"key_id": answers["key_created"]},
        "key_deleted": {"key_id": ids["kA"]},
        "object_created": {k: answers["object_created"][k] for k in PAYLOAD_FIELDS["object_created"]},
        "object_updated": {
            "object_id": ids["o1"],
            "key_id": ids["k1"],
            "updated_at": answers["object_updated"]["updated_at"],
        },
        "object_deleted": {"object_id": ids["o1"]},
        "publish": {
            "type": "campaigns",
            "related_id": ids["p1"],
            "object_id": ids["o1"],
            "timestamp": answers["publish"]["created_at"],
        },
        "unpublish": {"type": "campaigns", "related_id": ids["p1"]},
    }[kind]
    assert {k: payload[k] for k in expected} == expected


# --- caps ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server allowing 3 streams in all and 2 per user (the fair share off: test_resource_limits.py has it)."""
    settings = {
        **STREAM_SETTINGS,
        "TELENTIR_SSE_MAX_STREAMS": "3",
        "TELENTIR_SSE_MAX_STREAMS_PER_USER": "2",
        "TELENTIR_SSE_FAIR_SHARE_USERS": "1",
    }
    with running_server(tmp_path_factory, "capped", **settings) as srv:
        yield srv


@pytest.fixture(scope="module")
def capped_rt(capped_server: ServerProcess) -> Iterator[Runtime]:
    """A runtime over the capped server's data folder."""
    with closing(runtime_over(capped_server.data_dir)) as rt:
        yield rt


def test_stream_caps_per_user_429_and_per_process_503_and_release(
    capped_server: ServerProcess, capped_rt: Runtime, streams: list[SSEStream]
) -> None:
    alice, bob, carol = (account(capped_rt, capped_server) for _ in range(3))
    streams += [must_open(capped_server.url, "object_created", alice.key) for _ in range(2)]
    refused = open_stream(capped_server.url, "object_created", alice.key)
    assert isinstance(refused, Refused)
    assert_refused(refused, 429, "rate_limited")
    assert int(refused.headers["retry-after"]) > 0
    streams.append(must_open(capped_server.url, "object_created", bob.key))
    refused = open_stream(capped_server.url, "object_created", carol.key)
    assert isinstance(refused, Refused)
    assert_refused(refused, 503, "too_many_streams")
    # A client that hangs up frees its thread, subscription and slot within one heartbeat.
    streams.pop(0).close()
    started = time.monotonic()
    replacement = open_when_free(capped_server.url, "object_created", alice.key, timeout=HEARTBEAT + 0.5)
    streams.append(replacement)
    assert time.monotonic() - started <= HEARTBEAT + 0.5
    key_id = alice.writes.key()
    record = alice.writes.object(key_id)
    assert replacement.next_event().json()["id"] == record["id"]  # and it is a working stream
