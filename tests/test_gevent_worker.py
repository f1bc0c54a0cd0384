"""The selectable gevent worker (`serve --worker-class gevent`): the same server, one event loop per worker."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from telentir.runtime import Runtime

from .scraper_fixture import TestScraper
from .sse_client import HttpConnection, must_open, open_stream, worker_pid
from .support import FIXED_MASTER_KEY, ServerProcess
from .test_events_sse import HEARTBEAT, RETRY_MS, account, runtime_for
from .ws_client import WsClient, close_ws, receive_json


@pytest.fixture(scope="module")
def scraper_url() -> Iterator[str]:
    with TestScraper() as service:
        yield service.url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, scraper_url: str) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("gevent") / "data"
    env = {
        "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
        "TELENTIR_SSE_HEARTBEAT_SECONDS": str(HEARTBEAT),
        "TELENTIR_SSE_RETRY_MS": str(RETRY_MS),
        "TELENTIR_SSE_MAX_STREAMS_PER_USER": "1",
        "SCRAPER_HOSTNAME": scraper_url,
    }
    srv = ServerProcess(data_dir, env, worker_class="gevent").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def rt(server: ServerProcess) -> Iterator[Runtime]:
    runtime = runtime_for(server.data_dir)
    yield runtime
    runtime.close()


def test_it_is_the_gevent_worker_that_answers(server: ServerProcess) -> None:
    conn = HttpConnection(server.url)
    try:
        pid = worker_pid(conn)
    finally:
        conn.close()
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "gevent" in maps, "the worker has not loaded gevent"


def test_objects_round_trip(server: ServerProcess, rt: Runtime) -> None:
    alice = account(rt, server)
    key_id = alice.writes.key()
    made = alice.writes.object(key_id, content="c0ffee")
    headers = {"Authorization": f"Bearer {alice.key}"}
    got = requests.get(f"{server.url}/api/objects/{made['id']}", headers=headers, timeout=10).json()
    assert (got["content"], got["keyId"]) == ("c0ffee", key_id)
    assert requests.delete(f"{server.url}/api/objects/{made['id']}", headers=headers, timeout=10).status_code == 204


def test_requests_reuse_database_connections(server: ServerProcess, rt: Runtime) -> None:
    """Every client connection is a new greenlet: database connections must be handed on, not left behind."""
    alice = account(rt, server)
    headers = {"Authorization": f"Bearer {alice.key}"}
    for _ in range(300):  # a new TCP connection each time, so a new greenlet each time
        assert requests.get(f"{server.url}/api/root", headers=headers, timeout=10).status_code == 200
    conn = HttpConnection(server.url)
    try:
        pid = worker_pid(conn)
    finally:
        conn.close()
    database_files = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    opened = [path for path in database_files if ".db" in path]
    assert len(opened) < 40, f"{len(opened)} database descriptors after 300 requests"


def test_sse_delivers_beats_and_frees_the_slot(server: ServerProcess, rt: Runtime) -> None:
    alice = account(rt, server)
    stream = must_open(server.url, "key_created", alice.key)
    key = alice.writes.key()
    assert stream.next_event().json()["key_id"] == key
    assert stream.next_frame(timeout=HEARTBEAT * 3).is_heartbeat
    stream.close()
    deadline = time.monotonic() + HEARTBEAT + 1.5
    while not hasattr(again := open_stream(server.url, "key_created", alice.key), "next_event"):
        assert time.monotonic() < deadline, "the slot outlived its client (cap is 1 per user)"
        time.sleep(0.05)
    again.close()


def test_websocket_mirror(server: ServerProcess, rt: Runtime) -> None:
    alice = account(rt, server)
    url = server.url.replace("http://", "ws://") + "/api/ws/events/key_created"
    ws = WsClient.connect(url, headers={"Authorization": f"Bearer {alice.key}"})
    try:
        key = alice.writes.key()
        assert receive_json(ws)["data"]["key_id"] == key
    finally:
        close_ws(ws)


def test_connect_ingests_on_the_job_pool(server: ServerProcess, rt: Runtime) -> None:
    alice = account(rt, server)
    resp = requests.post(
        f"{server.url}/api/connect",
        headers={"Authorization": f"Bearer {alice.key}"},
        json={"repository": "contacts", "path": "/records", "params": {"count": 40}},
        timeout=60,
    )
    assert resp.status_code == 204, resp.text
    job = requests.get(
        f"{server.url}/api/connect/jobs/{resp.headers['X-Connect-Job']}",
        headers={"Authorization": f"Bearer {alice.key}"},
        timeout=10,
    ).json()
    assert job["created"] == 40, job
