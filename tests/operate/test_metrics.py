"""GET /metrics: hidden unless configured, its own bearer token, and counts summed across workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import simple_websocket
from prometheus_client.parser import text_string_to_metric_families

from telentir import __version__, close_app, create_app
from telentir.services import accounts, credentials, credits

from ..private_services import redis_url
from ..scraper_fixture import TestScraper
from ..sse_client import HttpConnection, must_open, worker_pid
from ..support import FIXED_MASTER_KEY, ServerProcess, assert_error, runtime_over, wait_until

pytestmark = pytest.mark.scale_out

TOKEN = "metrics-token-0123456789"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, parsed by prometheus-client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


# --- in one process ---------------------------------------------------------------------------


@pytest.fixture
def metrics_app(tmp_path: Path) -> Iterator[Any]:
    app = create_app(
        {"data_dir": tmp_path / "data", "master_key": FIXED_MASTER_KEY, "log_level": "WARNING", "metrics_token": TOKEN}
    )
    yield app
    close_app(app)


def test_metrics_is_404_unless_a_token_is_configured(client):
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 404 and resp.get_json()["error"] == "not_found"
    assert resp.headers["X-Request-ID"]


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ", TOKEN]
)
def test_metrics_refuses_anything_but_its_token(metrics_app, header):
    headers = {"Authorization": header} if header is not None else {}
    resp = metrics_app.test_client().get("/metrics", headers=headers)
    assert resp.status_code == 401 and resp.get_json()["error"] == "unauthorized"


def test_an_api_key_or_a_session_cookie_does_not_open_metrics(metrics_app):
    rt = metrics_app.extensions["telentir"]
    user = accounts.create_user(rt, "ada@example.com", "+15555550100", verified=True)
    key = credentials.create_api_key(rt, user["id"], "k")["key"]
    client = metrics_app.test_client()
    assert client.get("/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    client.set_cookie("token", credentials.issue_token(rt, user["id"]))
    assert client.get("/metrics").status_code == 401


def test_metrics_parse_and_count_requests_by_route_template(metrics_app):
    client = metrics_app.test_client()
    for _ in range(3):
        client.get("/api/objects/obj_0000000000000000000000")  # 401: no credential
    client.get("/no/such/route")
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    parsed = samples(resp.get_data(as_text=True))
    requests_total = "telentir_http_requests_total"
    assert value(parsed, requests_total, method="GET", route="/api/objects/<object_id>", status="401") == 3
    assert value(parsed, requests_total, method="GET", route="unmatched", status="404") == 1
    assert value(parsed, "telentir_http_request_duration_seconds_count", method="GET", route="unmatched") == 1
    assert value(parsed, "telentir_build_info", version=__version__) == 1
    assert value(parsed, "telentir_database_bytes") > 0
    assert (("telentir_open_streams", frozenset({("transport", "sse")}))) in parsed


def test_two_apps_in_one_process_count_apart(metrics_app, tmp_path):
    other = create_app({"data_dir": tmp_path / "other", "master_key": FIXED_MASTER_KEY, "metrics_token": TOKEN})
    try:
        other.test_client().get("/healthz")
        resp = metrics_app.test_client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        parsed = samples(resp.get_data(as_text=True))
        assert value(parsed, "telentir_http_requests_total", method="GET", route="/healthz", status="200") == 0
    finally:
        close_app(other)


# --- two gunicorn workers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("metrics") / "data"
    env = {
        "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
        "TELENTIR_METRICS_TOKEN": TOKEN,
        "TELENTIR_BROKER_URL": redis_url(9),
        "SCRAPER_HOSTNAME": scraper.url,
        "TELENTIR_SSE_HEARTBEAT_SECONDS": "1",
    }
    server = ServerProcess(data, env, workers=2).start()
    try:
        wait_until(lambda: len(set(worker_pids(server, 60))) == 2, timeout=30, message="the second worker to boot")
        yield server
    finally:
        server.discard()


def worker_pids(server: ServerProcess, connections: int) -> list[int]:
    """The worker of each of `connections` connections held open together (the kernel picks who accepts)."""
    conns: list[HttpConnection] = []
    pids: list[int] = []
    try:
        while len(conns) < connections and len(set(pids)) < 2:
            conns.append(HttpConnection(server.url))
            pids.append(worker_pid(conns[-1]))
    finally:
        for conn in conns:
            conn.close()
    return pids


def scrape(server: ServerProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    resp = requests.get(server.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert resp.status_code == 200, resp.text[:300]
    return samples(resp.text)


def user_with_credit(server: ServerProcess) -> str:
    rt = runtime_over(server.data_dir)
    try:
        user = accounts.create_user(rt, "lead-buyer@example.com", "+15555550100", verified=True)
        credits.set_plan(rt, user["id"], "starter")
        credits.grant_credits(rt, user["id"], 1000)
        return str(credentials.create_api_key(rt, user["id"], "m")["key"])
    finally:
        rt.close()


def test_counters_move_across_two_workers(two_workers):
    before = scrape(two_workers)
    pids = worker_pids(two_workers, 200)
    assert len(set(pids)) == 2, "one worker answered every request: the test would prove nothing"
    healthz = {"method": "GET", "route": "/healthz", "status": "200"}

    def counted() -> bool:
        after = scrape(two_workers)
        moved = value(after, "telentir_http_requests_total", **healthz) - value(
            before, "telentir_http_requests_total", **healthz
        )
        return moved == len(pids)

    wait_until(counted, message="the /healthz count to move by the requests made")


def test_open_streams_are_counted_by_transport_across_workers(two_workers):
    api_key = _plain_user(two_workers)
    conns: list[HttpConnection] = []
    pids: list[int] = []
    for _ in range(400):  # streams on both workers (the kernel picks who accepts); 3 at most each
        conn = HttpConnection(two_workers.url)
        pid = worker_pid(conn)
        if pids.count(pid) >= 3:
            conn.close()  # one worker may win every accept for a while: keep asking for the other
            continue
        conns.append(conn)
        pids.append(pid)
        if len(set(pids)) == 2:
            break
    holders = set(pids)
    streams = [must_open(two_workers.url, "object_created", api_key, conn=conn) for conn in conns]
    ws = simple_websocket.Client.connect(
        two_workers.url.replace("http://", "ws://") + "/api/ws/events/key_created",
        headers={"Authorization": f"Bearer {api_key}"},
    )
    try:
        parsed = wait_until(lambda: _streams_are(two_workers, sse=len(streams), websocket=1))
        assert len(holders) == 2, "all streams on one worker: the sum across workers is untested"
        assert parsed
    finally:
        for stream in streams:
            stream.close()
        ws.close()
    wait_until(lambda: _streams_are(two_workers, sse=0, websocket=0))


def _plain_user(server: ServerProcess) -> str:
    rt = runtime_over(server.data_dir)
    try:
        user = accounts.create_user(rt, f"streams{id(rt)}@example.com", "+15555550100", verified=True)
        return str(credentials.create_api_key(rt, user["id"], "m")["key"])
    finally:
        rt.close()


def _streams_are(server: ServerProcess, sse: int, websocket: int) -> dict[Any, float] | None:
    parsed = scrape(server)
    found = tuple(value(parsed, "telentir_open_streams", transport=t) for t in ("sse", "websocket"))
    return parsed if found == (sse, websocket) else None


def test_jobs_records_and_money_are_counted(two_workers):
    api_key = user_with_credit(two_workers)
    before = scrape(two_workers)
    body = {"repository": "contacts", "path": "/get-leads", "params": {"credits": 120}}
    resp = requests.post(
        two_workers.url + "/api/connect", json=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=60
    )
    assert resp.status_code == 204, resp.text[:300]
    job = requests.get(
        two_workers.url + f"/api/connect/jobs/{resp.headers['X-Connect-Job']}",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    ).json()
    assert job["status"] == "succeeded" and job["created"] == 120
    after = scrape(two_workers)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("telentir_jobs_finished_total", status="succeeded") == 1
    assert moved("telentir_jobs", status="succeeded") == 1
    assert moved("telentir_records_ingested_total") == 120
    # 100 leads from the starter allowance, 20 bought at $0.25: $5.00 reserved and charged.
    assert moved("telentir_lead_reservations_total", billing="local") == 1
    assert moved("telentir_lead_reserved_cents_total", billing="local") == job["credits"]["reserved"] == 500
    assert moved("telentir_lead_charged_cents_total", billing="local") == job["credits"]["charged"] == 500
    assert moved("telentir_lead_charges_total", billing="local") == 1
    assert moved("telentir_blob_files") == 0  # small records stay in their rows
    assert moved("telentir_http_requests_total", method="POST", route="/api/connect", status="204") == 1


def test_a_request_id_comes_back_on_every_answer(two_workers):
    for path in ("/healthz", "/api/root", "/nowhere", "/metrics"):
        resp = requests.get(two_workers.url + path, timeout=10)
        assert len(resp.headers["X-Request-ID"]) == 24, path
    given = requests.get(two_workers.url + "/healthz", headers={"X-Request-ID": "from-the-client"}, timeout=10)
    assert given.headers["X-Request-ID"] != "from-the-client"  # no trusted proxy: never taken from a client
    assert_error(requests.get(two_workers.url + "/api/root", timeout=10), 401)


def test_broker_publish_failures_are_counted():
    from telentir.metrics import Metrics
    from telentir.pubsub.doorbell import PublishStats

    metrics = Metrics()
    stats = PublishStats(on_count=metrics.broker_publish)
    for ok in (True, True, False):
        stats.count(ok)
    parsed = samples(metrics.exposition(list).decode())
    assert value(parsed, "telentir_broker_publishes_total") == 2
    assert value(parsed, "telentir_broker_publish_failures_total") == 1
    assert (stats.published, stats.failed) == (2, 1)
