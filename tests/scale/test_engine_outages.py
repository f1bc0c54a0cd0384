"""Engine outages on PostgreSQL + S3 + Redis: each engine cut for a few seconds under writes and a stream.

Runs in the suite's second pass (`--backend postgres-s3-redis`). One node reaches each engine
through a FaultProxy the test cuts (every connection reset, new ones refused) and restores,
in turn, on the same server: no answer is a 500, a 503 carries Retry-After, `/readyz` names
the engine while it is away, every acknowledged create is in the event log and readable
afterwards, a stream resumed from Last-Event-ID misses nothing, and the node serves again
without a restart.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from telentir.runtime import Runtime

from .. import backends
from ..connect_support import PRICE
from ..fault_proxy import FaultProxy
from ..money_support import (
    billing_env,
    billing_runtime,
    funded_user,
    job_row,
    ledger_counts,
    post_leads,
    stored_records,
)
from ..scraper_fixture import TestScraper
from ..sse_client import Refused, StreamEnded, open_stream
from ..support import Api, ServerProcess, assert_error, make_user, wait_until

CUT_SECONDS = 5.0
LEASE = 3.0
METRICS_TOKEN = "outage-metrics-token-123"
ENGINE_URLS = {"postgresql": "TELENTIR_DATABASE_URL", "redis": "TELENTIR_BROKER_URL", "s3": "TELENTIR_S3_ENDPOINT_URL"}
TITLES = {
    "postgresql": "PostgreSQL is unavailable",
    "redis": "Redis is unavailable",
    "s3": "The S3 store is unavailable",
}

# Real servers, a filling disk or outages of several seconds, on a loaded box: generous time.
pytestmark = [pytest.mark.timeout(600), pytest.mark.scale_out]


def _via(url: str, port: int) -> str:
    """`url` with its host and port replaced by the proxy's (user and path kept)."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=(f"{user}@" if user else "") + f"127.0.0.1:{port}"))


@dataclass
class Node:
    """The server behind the proxies, a runtime reaching the engines directly, and the proxies."""

    server: ServerProcess
    rt: Runtime
    proxies: dict[str, FaultProxy]


@pytest.fixture(scope="module")
def node(storage_backend: str, tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper) -> Iterator[Node]:
    """One node (two workers, a short job lease, the test scraper) whose three engines each sit behind a FaultProxy."""
    if backends.active() is None:
        pytest.skip("engine outages are tested on --backend postgres-s3-redis")
    data_dir = tmp_path_factory.mktemp("outages") / "data"
    direct = backends.env_for(data_dir)
    proxies: dict[str, FaultProxy] = {}
    env = {
        **billing_env(scraper.url, TELENTIR_JOB_LEASE_SECONDS=str(LEASE)),
        "TELENTIR_METRICS_TOKEN": METRICS_TOKEN,
        "TELENTIR_SSE_HEARTBEAT_SECONDS": "1",
        "TELENTIR_LOG_LEVEL": "INFO",
        **direct,
    }
    for engine, variable in ENGINE_URLS.items():
        target = urlsplit(direct[variable])
        proxies[engine] = FaultProxy(target.hostname or "127.0.0.1", target.port or 0).start()
        env[variable] = _via(direct[variable], proxies[engine].port)
    server = ServerProcess(data_dir, env, workers=2, threads=8)
    try:
        server.start(timeout=60)
        with closing(billing_runtime(data_dir)) as rt:  # the engines themselves, never cut
            yield Node(server, rt, proxies)
    finally:
        server.discard()
        for proxy in proxies.values():
            proxy.stop()


@dataclass
class Traffic:
    """Concurrent creates (inline and file-backed), each answer recorded."""

    url: str
    api_key: str
    key_id: str
    acknowledged: dict[str, bytes] = field(default_factory=dict)
    answers: list[tuple[float, int, dict[str, Any], str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def run(self, n: int) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            while not self.stop.is_set():
                content = secrets.token_bytes(20_000 if n % 2 else 300)  # a file, or inline in the row
                body = {"keyId": self.key_id, "content": content.hex(), "authTag": "ab" * 16}
                try:
                    resp = session.put(self.url + "/api/objects", json=body, timeout=60)
                except requests.RequestException as exc:
                    self.errors.append(exc)
                    return
                with self.lock:
                    parsed = resp.json() if resp.headers.get("Content-Type", "").startswith("application/json") else {}
                    self.answers.append((time.monotonic(), resp.status_code, parsed, resp.headers.get("Retry-After")))
                    if resp.status_code == 201:
                        self.acknowledged[parsed["id"]] = content
                time.sleep(0.05)
        finally:
            session.close()

    def successes_since(self, moment: float) -> int:
        with self.lock:
            return sum(1 for at, status, _, _ in self.answers if at > moment and status == 201)


class Follower:
    """An event stream of object_created that resumes from Last-Event-ID whenever it ends; every event id kept.

    It starts from a cursor (`since`, the user's newest event id before the writes), never as
    a fresh stream: a fresh stream starts at the newest event, so a follower whose first stream
    ended before carrying any event (an S3 cut while it reads a file-backed event's content)
    and came back fresh would rightly skip everything committed in between.
    """

    def __init__(self, url: str, api_key: str, since: int) -> None:
        self.url, self.api_key, self.since = url, api_key, since
        self.events: list[tuple[int, str]] = []  # (event id, object id)
        self.ended = 0
        self.opened = threading.Event()  # set once a stream has been opened (answered 200)
        self.refusals: list[Refused] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="follower", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            cursor = self.events[-1][0] if self.events else self.since
            try:
                stream = open_stream(
                    self.url, "object_created", self.api_key, headers={"Last-Event-ID": str(cursor)}, timeout=30
                )
            except OSError:
                time.sleep(0.5)
                continue
            if isinstance(stream, Refused):
                self.refusals.append(stream)
                time.sleep(float(stream.headers.get("retry-after", "1")))
                continue
            self.opened.set()
            with stream:
                try:
                    while not self.stop.is_set():
                        frame = stream.next_frame(timeout=10)
                        if frame.is_event:
                            self.events.append((int(frame.id or "0"), frame.json()["id"]))
                except (StreamEnded, AssertionError):
                    self.ended += 1

    def object_ids(self) -> set[str]:
        return {object_id for _, object_id in self.events}

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def _readyz(url: str) -> requests.Response:
    return requests.get(url + "/readyz", timeout=30)


def _metric(url: str, sample: str) -> float:
    text = requests.get(url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(sample + " "))


@pytest.mark.parametrize("engine", ["postgresql", "redis", "s3"])
def test_an_engine_cut_for_seconds_costs_no_500_and_loses_nothing(node: Node, engine: str) -> None:
    server, rt = node.server, node.rt
    user = make_user(rt)
    writes = requests.Session()
    writes.headers["Authorization"] = f"Bearer {user['api_key']}"
    key_id = writes.put(server.url + "/api/keys", json={"server": "default"}, timeout=30).json()
    traffic = Traffic(server.url, user["api_key"], key_id)
    # The user's newest event id: nothing of theirs is being written, so every later event has a larger one.
    since = rt.db.query_value("SELECT COALESCE(MAX(id), 0) FROM events WHERE user_id = ?", (user["id"],))
    follower = Follower(server.url, user["api_key"], since)
    # A live stream open before the writes start, for the outage to cut.
    wait_until(lambda: follower.opened.is_set() and _readyz(server.url).status_code == 200, timeout=30)
    writers = [threading.Thread(target=traffic.run, args=(n,), daemon=True) for n in range(3)]
    log_before = len(server.log())
    for writer in writers:
        writer.start()
    try:
        wait_until(lambda: len(traffic.acknowledged) >= 5, timeout=30)
        node.proxies[engine].cut()
        cut_at = time.monotonic()
        readiness: list[dict[str, Any]] = []
        while time.monotonic() - cut_at < CUT_SECONDS:
            resp = _readyz(server.url)
            readiness.append({**resp.json(), "http": resp.status_code})
            time.sleep(0.3)
        assert requests.get(server.url + "/healthz", timeout=30).status_code == 200  # liveness, whatever is away
        node.proxies[engine].restore()
        restored_at = time.monotonic()
        # The node recovers by itself: ready again, and creates succeed.
        wait_until(lambda: _readyz(server.url).status_code == 200, timeout=60, message="/readyz to answer 200 again")
        wait_until(lambda: traffic.successes_since(restored_at) >= 6, timeout=60, message="creates to succeed again")
    finally:
        node.proxies[engine].restore()
        traffic.stop.set()
        for writer in writers:
            writer.join(timeout=90)
    assert not traffic.errors, traffic.errors[:3]

    # /readyz named the engine while it was away.
    away = [r for r in readiness if r["http"] == 503]
    assert away, readiness
    assert any(engine in r.get("unavailable", []) for r in away), away

    # No 500: a create either succeeded or was refused with 503 service_unavailable and Retry-After.
    statuses = {status for _, status, _, _ in traffic.answers}
    assert statuses <= {201, 503}, [a for a in traffic.answers if a[1] not in (201, 503)][:3]
    for _, status, body, retry_after in traffic.answers:
        if status == 503:
            assert body["error"] == "service_unavailable" and body["message"], body
            assert retry_after is not None and int(retry_after) >= 1
    if engine != "redis":  # writes need PostgreSQL and S3; Redis only rings doorbells
        assert 503 in statuses
        assert _metric(server.url, f'telentir_engine_unavailable_total{{engine="{engine}"}}') > 0
    else:
        assert statuses == {201}, "writes must not need the broker"

    # Every acknowledged create is in the event log and readable, with its bytes.
    rows = rt.db.query("SELECT payload FROM events WHERE type = 'object_created' AND user_id = ?", (user["id"],))
    logged = {json.loads(row["payload"])["id"] for row in rows}
    assert set(traffic.acknowledged) <= logged
    for object_id, content in traffic.acknowledged.items():
        resp = writes.get(server.url + f"/api/objects/{object_id}", timeout=30)
        assert resp.status_code == 200, resp.text[:200]
        assert bytes.fromhex(resp.json()["content"]) == content

    # The stream (resumed from Last-Event-ID as often as it ended) carries every create once, in order.
    wait_until(lambda: set(traffic.acknowledged) <= follower.object_ids(), timeout=30, message="the stream to catch up")
    follower.close()
    ids = [event_id for event_id, _ in follower.events]
    assert ids == sorted(set(ids)), "an event arrived twice or out of order"
    for refusal in follower.refusals:
        assert refusal.status == 503 and refusal.headers.get("retry-after"), refusal
        assert_error_body(refusal.json())

    # Logged once per outage and worker, naming the engine.
    lines = [
        line
        for line in server.log()[log_before:].splitlines()
        if TITLES[engine] in line and "telentir.storage" in line and "WARNING" in line
    ]
    assert 1 <= len(lines) <= 2, "\n".join(lines)
    # And no traceback: an outage is no bug of ours.
    unexpected = [line for line in server.log()[log_before:].splitlines() if "Traceback" in line]
    assert not unexpected, "\n".join(unexpected)[:6000]
    writes.close()


def assert_error_body(body: dict[str, Any]) -> None:
    assert body["error"] in ("service_unavailable", "broker_unavailable") and body["message"], body


def test_a_503_answer_has_the_error_shape(node: Node) -> None:
    """With PostgreSQL away, a request's authentication (a before-request hook) is a 503 too, never a 500."""
    user = make_user(node.rt)
    node.proxies["postgresql"].cut()
    try:
        resp = requests.get(
            node.server.url + "/api/root", headers={"Authorization": f"Bearer {user['api_key']}"}, timeout=60
        )
        body = assert_error(resp, 503, "service_unavailable")
        assert "PostgreSQL" in body["message"] and int(resp.headers["Retry-After"]) >= 1
    finally:
        node.proxies["postgresql"].restore()
    wait_until(lambda: _readyz(node.server.url).status_code == 200, timeout=60)


def test_a_lead_job_cut_off_from_postgresql_settles_exactly_once(node: Node) -> None:
    """PostgreSQL cut while a job writes leads: the job is settled once afterwards, and charges what it stored."""
    rt, server = node.rt, node.server
    asked = 60
    user = funded_user(rt, "payg", asked * PRICE)
    api = Api(server.url, user["api_key"])
    answer: dict[str, Any] = {}

    def run() -> None:
        answer["resp"] = post_leads(api, {"credits": asked, "mode": "slow", "delay_ms": 150}, timeout=180)

    job_thread = threading.Thread(target=run, daemon=True)
    job_thread.start()
    job = wait_until(
        lambda: rt.db.query_one("SELECT * FROM jobs WHERE user_id = ? AND created >= 3", (user["id"],)), timeout=30
    )
    node.proxies["postgresql"].cut()
    time.sleep(CUT_SECONDS)
    node.proxies["postgresql"].restore()
    job_thread.join(timeout=180)
    assert not job_thread.is_alive()
    resp = answer["resp"]
    assert resp.status_code in (204, 503), resp.text  # never a 500
    if resp.status_code == 503:
        assert resp.headers["Retry-After"]

    row = wait_until(
        lambda: (r := job_row(rt, job["id"]))["settlement"] == "settled" and r["status"] != "running" and r,
        timeout=4 * LEASE + 30,
        message="the job to settle",
    )
    # Exactly once: one reservation, at most one charge and one refund, and the money adds up.
    time.sleep(2 * LEASE)  # a second settlement (a sweep, the job's own thread) would land by now
    row = job_row(rt, job["id"])
    counts = ledger_counts(rt, job["id"])
    assert counts["reserve"] == 1 and counts.get("charge", 0) <= 1 and counts.get("refund", 0) <= 1, counts
    stored = stored_records(rt, user["id"])
    assert row["created"] == stored and row["charged"] == stored * PRICE, (row, stored)
    assert row["charged"] + row["refunded"] == asked * PRICE, row
    assert api.get("/credits").json()["amount"] == asked * PRICE - row["charged"]
    api.close()
