"""Streams end with their credential: a revoked API key, a logout, an expiring token (docs/protocol.md §6).

Against real servers over real sockets: the SSE hub (the default), SSE served by a thread
each (`TELENTIR_SSE_HUB=false`, the path WebSockets take too), the gevent worker,
WebSockets, and two gunicorn workers on Redis with the revocation on one worker and the
stream on the other.

"Nothing written after the revocation was answered" is checked against a writer that keeps
creating keys throughout: a witness stream of another credential of the same user gets the
writes begun after the answer, the stream of the revoked credential gets none of them, and
every id it got is below the id of the revocation's record in the event log.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from telentir.runtime import Runtime
from telentir.services import credentials, events

from ..conftest import make_user
from ..private_services import redis_url
from ..sse_client import (
    HttpConnection,
    KeyWriter,
    SSEStream,
    Writes,
    connections_by_worker,
    must_open,
    open_stream,
    worker_pid,
)
from ..support import FIXED_MASTER_KEY, ServerProcess, assert_error, runtime_over
from ..ws_client import WsClient, WsOnSocket, close_ws, messages_until_closed, receive_json, ws_url

HEARTBEAT = 1.0
# How late past one heartbeat an end may be seen: scheduling on a shared two-core machine.
SLACK = 0.75
PASSWORD = "correct horse battery"


def _start(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    workers: int | None = None,
    worker_class: str | None = None,
    **env: str,
) -> ServerProcess:
    data_dir = tmp_path_factory.mktemp(name) / "data"
    settings = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "TELENTIR_SSE_HEARTBEAT_SECONDS": str(HEARTBEAT), **env}
    return ServerProcess(data_dir, settings, workers=workers, worker_class=worker_class).start()


def _runtime(server: ServerProcess, **overrides: Any) -> Runtime:
    """A runtime over the server's data folder: another process's view, to make users and read rows."""
    return runtime_over(server.data_dir, **overrides)


@pytest.fixture(scope="module", params=["hub", "thread", "gevent"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A one-worker server whose SSE streams are served by the hub, by a thread each, or by greenlets."""
    hub = "true" if request.param == "hub" else "false"
    worker_class = "gevent" if request.param == "gevent" else None
    srv = _start(tmp_path_factory, f"creds-{request.param}", worker_class=worker_class, TELENTIR_SSE_HUB=hub)
    yield srv
    srv.discard()


@pytest.fixture(scope="module")
def rt(server: ServerProcess) -> Iterator[Runtime]:
    """A runtime over the module server's data folder."""
    runtime = _runtime(server)
    yield runtime
    runtime.close()


class Person:
    """A verified user with a password and two API keys: `doomed` (to be revoked) and `witness`."""

    def __init__(self, rt: Runtime, server: ServerProcess) -> None:
        user = make_user(rt, password=PASSWORD)
        self.id, self.email, self.server = user["id"], user["email"], server
        self.witness = user["api_key"]
        record = credentials.create_api_key(rt, self.id, "doomed")
        self.doomed, self.doomed_id = record["key"], record["id"]

    def login(self) -> str:
        """A fresh session token."""
        resp = requests.post(
            self.server.url + "/api/auth/login", json={"email": self.email, "password": PASSWORD}, timeout=30
        )
        assert resp.status_code == 200, resp.text
        return str(resp.json()["token"])


@pytest.fixture
def person(rt: Runtime, server: ServerProcess) -> Person:
    """A fresh user on the module server."""
    return Person(rt, server)


@pytest.fixture
def sockets() -> Iterator[list[WsClient]]:
    """WebSockets a test opens, closed at its end."""
    opened: list[WsClient] = []
    yield opened
    for ws in opened:
        close_ws(ws)


def _ws(base_url: str, credential: str, opened: list[WsClient]) -> WsClient:
    ws = WsClient.connect(ws_url(base_url, "key_created"), headers={"Authorization": f"Bearer {credential}"})
    opened.append(ws)
    return ws


def _key_ids_sse(frames: list[Any]) -> list[str]:
    return [frame.json()["key_id"] for frame in frames if frame.is_event]


def _revocation_id(rt: Runtime, user_id: str, credential_id: str) -> int:
    """The event-log id of the record a revocation wrote."""
    return int(
        rt.db.query_value(
            "SELECT id FROM events WHERE type = ? AND channel = ?",
            (events.REVOKED, events.revocation_channel(user_id, credential_id)),
        )
    )


def _wait_flowing(stream: SSEStream, ws: WsClient | None = None, count: int = 3) -> tuple[list[Any], list[Any]]:
    """Events reach the stream (and the WebSocket) before anything is revoked: they are live."""
    frames = [stream.next_event(timeout=5) for _ in range(count)]
    messages = [receive_json(ws) for _ in range(count)] if ws is not None else []
    return frames, messages


# --- revoking an API key ---------------------------------------------------------------------


def test_revoking_a_key_ends_its_streams_at_once_and_nothing_written_after_reaches_them(
    server: ServerProcess, rt: Runtime, person: Person, streams: list[Any], sockets: list[WsClient]
) -> None:
    doomed_sse = must_open(server.url, "key_created", person.doomed)
    witness = must_open(server.url, "key_created", person.witness)
    streams.extend([doomed_sse, witness])
    doomed_ws = _ws(server.url, person.doomed, sockets)
    with KeyWriter(Writes(server.url, person.witness)) as writer:
        before, before_ws = _wait_flowing(doomed_sse, doomed_ws)
        resp = requests.delete(
            f"{server.url}/api/api-keys/{person.doomed_id}",
            headers={"Authorization": f"Bearer {person.witness}"},
            timeout=30,
        )
        answered = time.monotonic()
        assert resp.status_code == 204, resp.text
        frames, sse_ended = doomed_sse.frames_until_end(timeout=HEARTBEAT + 5)
        messages, ws_closed = messages_until_closed(doomed_ws, timeout=HEARTBEAT + 5)
        after = writer.wait_for_writes_after(answered, count=5)
    print(
        f"after revocation: SSE ended in {(sse_ended - answered) * 1000:.0f} ms, WebSocket closed in "
        f"{(ws_closed - answered) * 1000:.0f} ms"
    )
    assert sse_ended - answered < HEARTBEAT + SLACK and ws_closed - answered < HEARTBEAT + SLACK
    assert doomed_sse.ended_cleanly  # the response was finished, not the connection cut
    assert (doomed_ws.close_reason, doomed_ws.close_message) == (1008, "credential_revoked")
    got = set(_key_ids_sse(before + frames)) | {m["data"]["key_id"] for m in before_ws + messages}
    assert got.isdisjoint(after), got & after
    revoked_at = _revocation_id(rt, person.id, person.doomed_id)
    ids = [int(f.id) for f in before + frames if f.is_event] + [m["id"] for m in before_ws + messages]
    assert max(ids) < revoked_at
    # The witness (another key of the same user, same type and cursor) goes on and gets those writes.
    seen: set[str] = set()
    while not after <= seen:
        seen.add(witness.next_event(timeout=5).json()["key_id"])


def test_a_revoked_keys_stream_cannot_reopen(server: ServerProcess, rt: Runtime, person: Person) -> None:
    credentials.revoke_api_key(rt, person.doomed_id)
    refused = open_stream(server.url, "key_created", person.doomed)
    assert not isinstance(refused, SSEStream) and refused.status == 401


def test_a_revocation_by_another_process_ends_streams_within_one_heartbeat(
    server: ServerProcess, rt: Runtime, person: Person, streams: list[Any], sockets: list[WsClient]
) -> None:
    """Revoked outside the server (the CLI, another host): no doorbell reaches it, and still nothing after goes out."""
    doomed_sse = must_open(server.url, "key_created", person.doomed)
    streams.append(doomed_sse)
    doomed_ws = _ws(server.url, person.doomed, sockets)
    writes = Writes(server.url, person.witness)
    writes.key()
    _wait_flowing(doomed_sse, doomed_ws, count=1)
    # Quiet: only the heartbeat's question to the database can end the streams.
    credentials.revoke_api_key(rt, person.doomed_id)
    revoked = time.monotonic()
    frames, sse_ended = doomed_sse.frames_until_end(timeout=HEARTBEAT + 5)
    messages, ws_closed = messages_until_closed(doomed_ws, timeout=HEARTBEAT + 5)
    assert sse_ended - revoked < HEARTBEAT + SLACK and ws_closed - revoked < HEARTBEAT + SLACK
    assert _key_ids_sse(frames) == [] and messages == []
    # Busy: the next write's read meets the revocation's record first and ends the stream before it.
    busy_sse = must_open(server.url, "key_created", person.witness)
    streams.append(busy_sse)
    record = credentials.create_api_key(rt, person.id, "short-lived")
    short = must_open(server.url, "key_created", record["key"])
    streams.append(short)
    writes.key()
    assert short.next_event().is_event and busy_sse.next_event().is_event
    credentials.revoke_api_key(rt, record["id"])
    started = time.monotonic()
    later = writes.key()
    frames, _ = short.frames_until_end(timeout=HEARTBEAT + 5)
    assert later not in _key_ids_sse(frames)
    assert busy_sse.next_event().json()["key_id"] == later
    print(f"a busy stream ended {(time.monotonic() - started) * 1000:.0f} ms after an outside revocation")


# --- logging out --------------------------------------------------------------------------


def test_logout_ends_the_sessions_streams_and_no_other(
    server: ServerProcess, rt: Runtime, person: Person, streams: list[Any], sockets: list[WsClient]
) -> None:
    session, other_session = person.login(), person.login()
    sse = must_open(server.url, "key_created", session)
    kept = must_open(server.url, "key_created", other_session)
    streams.extend([sse, kept])
    ws = _ws(server.url, session, sockets)
    kept_ws = _ws(server.url, other_session, sockets)
    with KeyWriter(Writes(server.url, person.witness)) as writer:
        before, before_ws = _wait_flowing(sse, ws)
        resp = requests.get(server.url + "/api/auth/logout", headers={"Authorization": f"Bearer {session}"}, timeout=30)
        answered = time.monotonic()
        assert resp.json() == {"status": "logout"}
        frames, sse_ended = sse.frames_until_end(timeout=HEARTBEAT + 5)
        messages, ws_closed = messages_until_closed(ws, timeout=HEARTBEAT + 5)
        after = writer.wait_for_writes_after(answered, count=3)
    assert sse_ended - answered < HEARTBEAT + SLACK and ws_closed - answered < HEARTBEAT + SLACK
    assert (ws.close_reason, ws.close_message) == (1008, "credential_revoked")
    got = set(_key_ids_sse(before + frames)) | {m["data"]["key_id"] for m in before_ws + messages}
    assert got.isdisjoint(after)
    # The other session of the same user is untouched.
    seen_sse: set[str] = set()
    while not after <= seen_sse:
        seen_sse.add(kept.next_event(timeout=5).json()["key_id"])
    seen_ws: set[str] = set()
    while not after <= seen_ws:
        seen_ws.add(receive_json(kept_ws)["data"]["key_id"])
    assert_error(requests.get(server.url + "/api/auth", headers={"Authorization": f"Bearer {session}"}), 401)


# --- a token that expires -------------------------------------------------------------------


def test_a_token_stream_ends_within_one_heartbeat_of_its_expiry(
    server: ServerProcess, person: Person, streams: list[Any], sockets: list[WsClient]
) -> None:
    short_lived = _runtime(server, jwt_ttl_seconds=3)
    try:
        token = credentials.issue_token(short_lived, person.id)
    finally:
        short_lived.close()
    expires = _expiry(token)
    sse = must_open(server.url, "key_created", token)
    streams.append(sse)
    ws = _ws(server.url, token, sockets)
    with KeyWriter(Writes(server.url, person.witness)) as writer:
        _wait_flowing(sse, ws, count=1)
        frames, sse_ended = sse.frames_until_end(timeout=expires - time.time() + HEARTBEAT + 5)
        messages, ws_closed = messages_until_closed(ws, timeout=HEARTBEAT + 5)
        late = writer.wait_for_writes_after(_monotonic(expires), count=3)
    ended = {"SSE": _wall(sse_ended) - expires, "WebSocket": _wall(ws_closed) - expires}
    print("ended this long after the expiry:", {name: f"{seconds:.2f} s" for name, seconds in ended.items()})
    assert all(-0.05 <= seconds < HEARTBEAT + SLACK for seconds in ended.values()), ended
    assert (ws.close_reason, ws.close_message) == (1008, "token_expired")
    got = set(_key_ids_sse(frames)) | {m["data"]["key_id"] for m in messages}
    assert got.isdisjoint(late)
    refused = open_stream(server.url, "key_created", token)
    assert not isinstance(refused, SSEStream) and refused.status == 401
    assert refused.json()["error"] == "token_expired"


def _expiry(token: str) -> float:
    """A JWT's `exp` (read without verifying: the test made it)."""
    payload = token.split(".")[1]
    return float(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def _wall(moment: float) -> float:
    """A monotonic moment as Unix time (token expiries are Unix times)."""
    return time.time() - (time.monotonic() - moment)


def _monotonic(wall: float) -> float:
    """A Unix time as a monotonic moment."""
    return time.monotonic() - (time.time() - wall)


# --- two workers on Redis: revoked on one, streaming on the other -----------------------------


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Two gunicorn workers on the suite's Redis."""
    srv = _start(tmp_path_factory, "creds-two-workers", workers=2, TELENTIR_BROKER_URL=redis_url())
    yield srv
    srv.discard()


@pytest.fixture
def held(two_workers: ServerProcess) -> Iterator[Callable[[int], list[list[HttpConnection]]]]:
    """Factory: `each` keep-alive connections on each of the two workers, closed at the end."""
    conns: list[HttpConnection] = []

    def grab(each: int) -> list[list[HttpConnection]]:
        grouped = connections_by_worker(two_workers.url, each)
        conns.extend(conn for group in grouped.values() for conn in group)
        return list(grouped.values())

    yield grab
    for conn in conns:
        conn.close()


def test_revoking_on_one_worker_ends_streams_on_the_other(
    two_workers: ServerProcess,
    held: Callable[[int], list[list[HttpConnection]]],
    streams: list[Any],
    sockets: list[WsClient],
) -> None:
    rt = _runtime(two_workers)
    try:
        person = Person(rt, two_workers)
        streaming, revoking = held(3)
        doomed_sse = must_open(two_workers.url, "key_created", person.doomed, conn=streaming[0])
        witness = must_open(two_workers.url, "key_created", person.witness, conn=streaming[1])
        streams.extend([doomed_sse, witness])
        conn = streaming[2]
        headers = {"Authorization": f"Bearer {person.doomed}"}
        doomed_ws = WsOnSocket(conn.sock, conn.host, conn.port, "/api/ws/events/key_created", headers)
        sockets.append(doomed_ws)
        with KeyWriter(Writes(two_workers.url, person.witness)) as writer:
            before, before_ws = _wait_flowing(doomed_sse, doomed_ws)
            status, _, body = revoking[0].request(
                "DELETE", f"/api/api-keys/{person.doomed_id}", {"Authorization": f"Bearer {person.witness}"}
            )
            answered = time.monotonic()
            assert status == 204, body
            frames, sse_ended = doomed_sse.frames_until_end(timeout=HEARTBEAT + 5)
            messages, ws_closed = messages_until_closed(doomed_ws, timeout=HEARTBEAT + 5)
            after = writer.wait_for_writes_after(answered, count=5)
        print(
            f"across workers: SSE ended in {(sse_ended - answered) * 1000:.0f} ms, WebSocket closed in "
            f"{(ws_closed - answered) * 1000:.0f} ms"
        )
        assert sse_ended - answered < HEARTBEAT + SLACK and ws_closed - answered < HEARTBEAT + SLACK
        assert (doomed_ws.close_reason, doomed_ws.close_message) == (1008, "credential_revoked")
        got = set(_key_ids_sse(before + frames)) | {m["data"]["key_id"] for m in before_ws + messages}
        assert got.isdisjoint(after)
        ids = [int(f.id) for f in before + frames if f.is_event] + [m["id"] for m in before_ws + messages]
        assert max(ids) < _revocation_id(rt, person.id, person.doomed_id)
        seen: set[str] = set()
        while not after <= seen:
            seen.add(witness.next_event(timeout=5).json()["key_id"])
    finally:
        rt.close()


def test_the_stream_and_the_revocation_really_were_on_different_workers(
    held: Callable[[int], list[list[HttpConnection]]],
) -> None:
    """What the test above relies on: connections grouped by worker are held by two different processes."""
    first, second = held(1)
    assert worker_pid(first[0]) != worker_pid(second[0])
