"""Several workers of one box: SQLite, files and the in-process broker, no Redis (and the same on Redis).

Each test knows which worker did what: `/healthz` answers its pid, and a keep-alive connection
stays with the worker that accepted it (`connections_by_worker` opens a burst so both workers
take some). Doorbells cross processes through each worker's datagram socket; the event log in
SQLite is what every stream reads, so every stream sees every worker's events.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from telentir.runtime import Runtime
from telentir.storage.db import SqliteDatabase

from ..events_support import STREAM_SETTINGS, Account, account, stored_ids
from ..private_services import redis_url
from ..scraper_fixture import TestScraper
from ..sse_client import HttpConnection, SSEStream, connections_by_worker, must_open, open_stream, worker_pid
from ..support import Api, ServerProcess, make_user, running_server, runtime_over, wait_until


@pytest.fixture(scope="module", params=["in-process", "redis"])
def box(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Two workers on the embedded default (no TELENTIR_BROKER_URL: the in-process broker), then on Redis."""
    broker = {"TELENTIR_BROKER_URL": redis_url()} if request.param == "redis" else {}
    with running_server(tmp_path_factory, "box", workers=2, **STREAM_SETTINGS, **broker) as server:
        yield server


@pytest.fixture(scope="module")
def box_rt(box: ServerProcess) -> Iterator[Runtime]:
    """A runtime over the box's data folder (users, rows)."""
    with closing(runtime_over(box.data_dir)) as rt:
        yield rt


@pytest.fixture
def per_worker(box: ServerProcess) -> Iterator[Callable[[int], list[list[HttpConnection]]]]:
    """Factory: `each` keep-alive connections on each of the two workers, closed at the end."""
    held: list[HttpConnection] = []

    def grab(each: int) -> list[list[HttpConnection]]:
        grouped = connections_by_worker(box.url, each)
        held.extend(conn for conns in grouped.values() for conn in conns)
        assert len(grouped) == 2
        return list(grouped.values())

    yield grab
    for conn in held:
        conn.close()


def put_object(conn: HttpConnection, who: Account, key_id: str) -> dict[str, Any]:
    """PUT /api/objects on this very connection (so on its worker)."""
    body = json.dumps({"keyId": key_id, "content": "beef", "authTag": "ab" * 16}).encode()
    headers = {"Authorization": f"Bearer {who.key}", "Content-Type": "application/json"}
    status, _, answer = conn.request("PUT", "/api/objects", headers, body)
    assert status == 201, answer
    return dict(json.loads(answer))


def test_the_default_serve_runs_one_worker_per_core(tmp_path_factory: pytest.TempPathFactory) -> None:
    """No --workers, no TELENTIR_WORKERS: as many workers as the cores this process may use."""
    with running_server(tmp_path_factory, "default") as server:
        expected = len(os.sched_getaffinity(0))
        seen = wait_until(lambda: server.worker_pids() if len(server.worker_pids()) == expected else None, timeout=30)
        assert len(seen) == expected


def test_a_write_on_one_worker_reaches_a_stream_on_the_other_at_once(
    box: ServerProcess,
    box_rt: Runtime,
    per_worker: Callable[[int], list[list[HttpConnection]]],
    streams: list[SSEStream],
) -> None:
    alice = account(box_rt, box)
    key_id = alice.writes.key()
    (stream_a, write_a), (stream_b, write_b) = per_worker(2)
    on_a = must_open(box.url, "object_created", alice.key, conn=stream_a)
    on_b = must_open(box.url, "object_created", alice.key, conn=stream_b)
    streams += [on_a, on_b]
    for writer in (write_b, write_a, write_b):  # B, then A, then B again
        started = time.monotonic()
        record = put_object(writer, alice, key_id)
        for stream in (on_a, on_b):
            frame = stream.next_event(timeout=2.0)
            assert frame.json()["id"] == record["id"]
            # A doorbell, not the heartbeat (1 s here, 15 s by default), brought it.
            assert frame.received_at - started < 0.5


def test_a_worker_s_first_stream_hears_the_other_worker_s_very_next_write(
    tmp_path_factory: pytest.TempPathFactory, streams: list[SSEStream]
) -> None:
    """A worker with no stream is not rung; once its first stream is open, the next write rings it.

    Embedded default only: a fresh box each time (a worker's first stream), a 30 s heartbeat so
    that only a doorbell can bring the event in time, and a write just before the stream opens,
    so the writer has just listed its peers while the other worker had nobody subscribed.
    """
    settings = {**STREAM_SETTINGS, "TELENTIR_SSE_HEARTBEAT_SECONDS": "30"}
    with running_server(tmp_path_factory, "first-stream", workers=2, **settings) as server:
        with closing(runtime_over(server.data_dir)) as rt:
            alice = account(rt, server)
            key_id = alice.writes.key()
            grouped = connections_by_worker(server.url, 2)
            try:
                (write_a, _), (stream_b, _) = grouped.values()
                put_object(write_a, alice, key_id)  # rung nowhere: B has nothing subscribed yet
                on_b = must_open(server.url, "object_created", alice.key, conn=stream_b)
                streams.append(on_b)
                started = time.monotonic()
                record = put_object(write_a, alice, key_id)
                frame = on_b.next_event(timeout=5.0)
                assert frame.json()["id"] == record["id"]
                assert frame.received_at - started < 0.5
            finally:
                for conn in (c for conns in grouped.values() for c in conns):
                    conn.close()


def test_every_stream_sees_every_worker_s_events_in_order_without_gap_or_duplicate(
    box: ServerProcess,
    box_rt: Runtime,
    per_worker: Callable[[int], list[list[HttpConnection]]],
    streams: list[SSEStream],
) -> None:
    alice = account(box_rt, box)
    key_id = alice.writes.key()
    (stream_a, *writers_a), (stream_b, *writers_b) = per_worker(3)
    watchers = [
        must_open(box.url, "object_created", alice.key, conn=stream_a),
        must_open(box.url, "object_created", alice.key, conn=stream_b),
    ]
    streams += watchers
    writers = [*writers_a, *writers_b]
    threads = [threading.Thread(target=lambda c=c: [put_object(c, alice, key_id) for _ in range(20)]) for c in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    stored = stored_ids(box_rt, alice.id, "object_created")[-20 * len(writers) :]
    for watcher in watchers:
        received = [int(watcher.next_event().id or "") for _ in stored]
        assert received == stored  # every id, once, in the table's order


def test_a_stream_resumes_on_the_other_worker_from_its_last_event_id(
    box: ServerProcess, box_rt: Runtime, per_worker: Callable[[int], list[list[HttpConnection]]]
) -> None:
    alice = account(box_rt, box)
    key_id = alice.writes.key()
    (on_a,), (on_b,) = per_worker(1)
    first = must_open(box.url, "object_created", alice.key, conn=on_a)
    alice.writes.object(key_id)
    last_seen = first.next_event().id
    first.close()
    missed = [alice.writes.object(key_id)["id"] for _ in range(3)]
    resumed = must_open(box.url, "object_created", alice.key, conn=on_b, headers={"Last-Event-ID": str(last_seen)})
    try:
        assert [resumed.next_event().json()["id"] for _ in missed] == missed
    finally:
        resumed.close()


def test_a_worker_killed_mid_stream_loses_nothing_its_client_resumes_elsewhere(
    box: ServerProcess, box_rt: Runtime, per_worker: Callable[[int], list[list[HttpConnection]]]
) -> None:
    alice = account(box_rt, box)
    key_id = alice.writes.key()
    (on_a,), _ = per_worker(1)
    doomed_pid = worker_pid(on_a)
    stream = must_open(box.url, "object_created", alice.key, conn=on_a)
    alice.writes.object(key_id)
    last_seen = stream.next_event().id
    os.kill(doomed_pid, signal.SIGKILL)
    # Writes go on while the client is cut off (served by whichever worker is alive).
    written = [alice.writes.object(key_id)["id"] for _ in range(5)]
    stream.close()
    resumed = must_open(box.url, "object_created", alice.key, headers={"Last-Event-ID": str(last_seen)})
    try:
        assert [resumed.next_event().json()["id"] for _ in written] == written
    finally:
        resumed.close()
    wait_until(lambda: len(box.worker_pids()) == 2 and doomed_pid not in box.worker_pids(), timeout=30)


# --- limits for the whole box ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Two workers, at most 3 streams in all and 2 per user; 3 failed logins per window."""
    settings = {
        **STREAM_SETTINGS,
        "TELENTIR_SSE_MAX_STREAMS": "3",
        "TELENTIR_SSE_MAX_STREAMS_PER_USER": "2",
        "TELENTIR_SSE_FAIR_SHARE_USERS": "1",  # 2 of 3 per user: more than a fair share, on purpose
        "TELENTIR_AUTH_MAX_ATTEMPTS": "3",
    }
    with running_server(tmp_path_factory, "capped", workers=2, **settings) as server:
        yield server


def test_stream_caps_hold_across_workers_and_a_killed_worker_s_slots_come_back(capped: ServerProcess) -> None:
    with closing(runtime_over(capped.data_dir)) as rt:
        alice, bob = account(rt, capped), account(rt, capped)
    (pid_a, (a1, a2)), (_, (b1, b2)) = connections_by_worker(capped.url, 2).items()
    opened = [
        must_open(capped.url, "object_created", alice.key, conn=a1),
        must_open(capped.url, "object_created", alice.key, conn=b1),
    ]
    try:
        # Alice has a stream on each worker: her third is refused, on either.
        refused = open_stream(capped.url, "object_created", alice.key, conn=a2)
        assert not isinstance(refused, SSEStream) and refused.status == 429
        opened.append(must_open(capped.url, "object_created", bob.key, conn=b2))
        # Three streams on the box: a fourth, anyone's, anywhere, is a 503.
        full = open_stream(capped.url, "object_created", bob.key)
        assert not isinstance(full, SSEStream) and full.status == 503
        # A worker killed with a stream open: its slot is taken back once the box is full.
        os.kill(pid_a, signal.SIGKILL)
        assert wait_until(lambda: _opens(capped.url, bob.key), timeout=15)
    finally:
        for stream in opened:
            stream.close()


def _opens(base_url: str, key: str) -> bool:
    stream = open_stream(base_url, "object_created", key)
    if isinstance(stream, SSEStream):
        stream.close()
        return True
    assert stream.status in (429, 503), stream.body[:200]
    return False


def test_failed_logins_count_for_the_whole_box(capped: ServerProcess) -> None:
    with closing(runtime_over(capped.data_dir)) as rt:
        user = make_user(rt, password="right password")
    (_, on_a), (_, on_b) = connections_by_worker(capped.url, 3).items()
    body = json.dumps({"email": user["email"], "password": "wrong password"}).encode()
    answers = []
    for conn in (c for pair in zip(on_a, on_b, strict=True) for c in pair):  # A, B, A, B, A, B
        status, _, _ = conn.request("POST", "/api/auth/login", {"Content-Type": "application/json"}, body)
        answers.append(status)
        conn.close()
    # Three attempts per window, however they are spread over the workers.
    assert answers == [401, 401, 401, 429, 429, 429]


def test_a_user_s_job_limit_holds_across_workers(tmp_path_factory: pytest.TempPathFactory) -> None:
    with (
        TestScraper() as scraper,
        running_server(
            tmp_path_factory, "jobs", workers=2, SCRAPER_HOSTNAME=scraper.url, TELENTIR_CONNECT_PER_USER="1"
        ) as server,
    ):
        with closing(runtime_over(server.data_dir)) as rt:
            user = make_user(rt)
        (first_conn,), (second_conn,) = connections_by_worker(server.url, 1).values()
        slow = {"repository": "contacts", "path": "/records", "params": {"mode": "slow", "count": 40, "delay_ms": 50}}
        headers = {"Authorization": f"Bearer {user['api_key']}", "Content-Type": "application/json"}
        body = json.dumps(slow).encode()
        first = threading.Thread(target=first_conn.request, args=("POST", "/api/connect", headers, body))
        first.start()
        wait_until(lambda: scraper.request_count() == 1, timeout=10)
        status, _, answer = second_conn.request("POST", "/api/connect", headers, body)
        assert status == 429, answer
        first.join(timeout=30)
        first_conn.close()
        second_conn.close()
        assert Api(server.url, user["api_key"]).post("/connect", json=slow, timeout=30).status_code == 204


def test_one_process_at_a_time_prunes(tmp_path: Path) -> None:
    """The pruner's claim: the first process keeps it, others are refused until it is gone."""
    first, second = SqliteDatabase(tmp_path / "t.db"), SqliteDatabase(tmp_path / "t.db")
    try:
        assert first.claim_singleton("event-pruner")
        assert first.claim_singleton("event-pruner")  # kept
        assert not second.claim_singleton("event-pruner")
        first.close()
        assert second.claim_singleton("event-pruner")
    finally:
        second.close()
