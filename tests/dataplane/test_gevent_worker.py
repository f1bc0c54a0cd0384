"""The selectable gevent worker (`serve --worker-class gevent`): the same server, one event loop per worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from telentir.runtime import Runtime

from ..events_support import HEARTBEAT, STREAM_SETTINGS, account
from ..scraper_fixture import TestScraper
from ..sse_client import HttpConnection, must_open, open_when_free, worker_pid
from ..support import ServerProcess, running_server
from ..ws_client import WsClient, close_ws, receive_json


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper) -> Iterator[ServerProcess]:
    """The module's server on the gevent worker: 1 s heartbeat, one stream per user, the test scraper."""
    settings = {**STREAM_SETTINGS, "TELENTIR_SSE_MAX_STREAMS_PER_USER": "1", "SCRAPER_HOSTNAME": scraper.url}
    with running_server(tmp_path_factory, "gevent", worker_class="gevent", **settings) as srv:
        yield srv


def test_it_is_the_gevent_worker_that_answers(server: ServerProcess) -> None:
    conn = HttpConnection(server.url)
    try:
        pid = worker_pid(conn)
    finally:
        conn.close()
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "gevent" in maps, "the worker has not loaded gevent"


def test_objects_round_trip(server: ServerProcess, server_rt: Runtime) -> None:
    alice = account(server_rt, server)
    key_id = alice.writes.key()
    made = alice.writes.object(key_id, content="c0ffee")
    headers = {"Authorization": f"Bearer {alice.key}"}
    got = requests.get(f"{server.url}/api/objects/{made['id']}", headers=headers, timeout=10).json()
    assert (got["content"], got["keyId"]) == ("c0ffee", key_id)
    assert requests.delete(f"{server.url}/api/objects/{made['id']}", headers=headers, timeout=10).status_code == 204


def test_requests_reuse_database_connections(server: ServerProcess, server_rt: Runtime) -> None:
    """Every client connection is a new greenlet: database connections must be handed on, not left behind."""
    alice = account(server_rt, server)
    headers = {"Authorization": f"Bearer {alice.key}"}
    for _ in range(300):  # a new TCP connection each time, so a new greenlet each time
        assert requests.get(f"{server.url}/api/root", headers=headers, timeout=10).status_code == 200
    conn = HttpConnection(server.url)
    try:
        pid = worker_pid(conn)
    finally:
        conn.close()
    opened = [path for path in _open_files(pid) if ".db" in path]
    assert len(opened) < 40, f"{len(opened)} database descriptors after 300 requests"


def _open_files(pid: int) -> list[str]:
    """What a live process's descriptors point at (one it closes while we look is skipped)."""
    paths = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            paths.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue  # the worker closed it meanwhile (a finished connection, a doorbell)
    return paths


def test_sse_delivers_beats_and_frees_the_slot(server: ServerProcess, server_rt: Runtime) -> None:
    alice = account(server_rt, server)
    stream = must_open(server.url, "key_created", alice.key)
    key = alice.writes.key()
    assert stream.next_event().json()["key_id"] == key
    assert stream.next_frame(timeout=HEARTBEAT * 3).is_heartbeat
    stream.close()
    open_when_free(server.url, "key_created", alice.key, timeout=HEARTBEAT + 1.5).close()  # the cap is 1 per user


def test_websocket_mirror(server: ServerProcess, server_rt: Runtime) -> None:
    alice = account(server_rt, server)
    url = server.url.replace("http://", "ws://") + "/api/ws/events/key_created"
    ws = WsClient.connect(url, headers={"Authorization": f"Bearer {alice.key}"})
    try:
        key = alice.writes.key()
        assert receive_json(ws)["data"]["key_id"] == key
    finally:
        close_ws(ws)


def test_connect_ingests_on_the_job_pool(server: ServerProcess, server_rt: Runtime) -> None:
    alice = account(server_rt, server)
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
