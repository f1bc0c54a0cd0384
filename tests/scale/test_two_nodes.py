"""Two server nodes with separate folders on one PostgreSQL, one S3 bucket and one Redis, behind a round-robin proxy."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
import requests

from telentir.config import load_config
from telentir.runtime import Runtime
from telentir.services import credits
from telentir.wiring import build_runtime

from ..backends import AWS_ENV, MotoServer, throwaway_database
from ..cluster import Cluster
from ..dataplane_support import Vault, decrypt
from ..private_services import redis_url
from ..scraper_fixture import TestScraper
from ..support import FIXED_MASTER_KEY, Api, make_user, wait_until

BUCKET = "telentir-cluster"
LEASE_SECONDS = 3.0
PLANS = '{"starter": {"name": "Starter", "includedLeads": 100, "leadOverageUsdPerLead": 0.25}}'


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, scraper: TestScraper) -> Iterator[Cluster]:
    """Two nodes on a throwaway database, a bucket on a real S3-compatible server, and Redis."""
    root = tmp_path_factory.mktemp("cluster")
    s3 = MotoServer(root).start()
    client = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1", **_keys())
    client.create_bucket(Bucket=BUCKET)
    client.close()
    with _stopping(s3), throwaway_database() as url:
        env = {
            "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
            "TELENTIR_DATABASE_URL": url,
            "TELENTIR_BLOB_URL": f"s3://{BUCKET}/cluster",
            "TELENTIR_S3_ENDPOINT_URL": s3.url,
            "TELENTIR_BROKER_URL": redis_url(),
            "TELENTIR_INLINE_MAX_BYTES": "64",
            "TELENTIR_PLANS": PLANS,
            "SCRAPER_HOSTNAME": scraper.url,
            "TELENTIR_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
            **AWS_ENV,
        }
        nodes = Cluster(root, env)
        try:
            yield nodes.start()
        finally:
            scraper.stopping.set()
            nodes.stop()


@contextmanager
def _stopping(s3: MotoServer) -> Iterator[MotoServer]:
    try:
        yield s3
    finally:
        s3.stop()


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    }


@pytest.fixture(scope="module")
def rt(cluster: Cluster) -> Iterator[Runtime]:
    """A runtime on the cluster's engines, for making users from the test side."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in AWS_ENV.items():
            patch.setenv(key, value)
        config = load_config(
            {
                "data_dir": cluster.nodes["a"].data_dir.parent / "test-side",
                "master_key": FIXED_MASTER_KEY,
                "database_url": cluster.env["TELENTIR_DATABASE_URL"],
                "blob_url": cluster.env["TELENTIR_BLOB_URL"],
                "s3_endpoint_url": cluster.env["TELENTIR_S3_ENDPOINT_URL"],
                "broker_url": redis_url(),
            },
            environ={},
        )
        runtime = build_runtime(config)
        yield runtime
        runtime.close()


def _through_proxy(cluster: Cluster, user: dict[str, Any]) -> Api:
    """A client of the proxy that opens a new connection per request, so requests alternate between nodes."""
    api = Api(cluster.proxy.url, user["api_key"])
    api.session.headers["Connection"] = "close"
    return api


def test_the_nodes_share_one_platform_key(cluster: Cluster, rt: Runtime) -> None:
    user = make_user(rt, password="correct horse battery")
    documents = [Api(node.url, user["api_key"]).get("/server").json() for node in cluster.nodes.values()]
    assert documents[0] == documents[1]
    # A session token signed by one node is accepted by the other.
    login = requests.post(
        cluster.nodes["a"].url + "/api/auth/login",
        json={"email": user["email"], "password": "correct horse battery"},
        timeout=10,
    )
    assert login.status_code == 200, login.text
    on_b = Api(cluster.nodes["b"].url, login.json()["token"])
    assert on_b.get("/root").status_code == 200
    on_b.close()


def test_the_data_plane_works_through_the_round_robin_proxy(cluster: Cluster, rt: Runtime) -> None:
    user = make_user(rt)
    api = _through_proxy(cluster, user)
    vault = Vault(api, user)
    key = vault.new_key()
    parent = vault.put(key, b"parent")
    written = {}
    for size in (5, 40, 400, 40_000):  # inline and bucket-backed ciphertexts
        plaintext = bytes([size % 251]) * size
        written[vault.put(key, plaintext, related=parent["id"])["id"]] = plaintext
    for object_id, plaintext in written.items():
        assert vault.read(key, object_id) == plaintext
    assert sorted(vault.related_ids(parent["id"])) == sorted(written)
    first = next(iter(written))
    assert api.delete(f"/objects/{first}").status_code == 204
    assert api.get(f"/objects/{first}").status_code == 404
    assert api.get(f"/objects/{first}").status_code == 404  # on the other node too
    served = set(cluster.proxy.served)
    assert served == {node.port for node in cluster.nodes.values()}, "both nodes must have served"
    api.close()


def test_a_write_on_node_a_reaches_a_stream_held_by_node_b(cluster: Cluster, rt: Runtime) -> None:
    user = make_user(rt)
    on_a = Vault(Api(cluster.nodes["a"].url, user["api_key"]), user)
    key = on_a.new_key()
    url = cluster.nodes["b"].url + "/api/events/object_created"
    headers = {"Authorization": f"Bearer {user['api_key']}"}
    with requests.get(url, headers=headers, stream=True, timeout=20) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines(decode_unicode=True)
        written = on_a.put(key, b"from node a" * 20)
        for line in lines:
            if line.startswith("data: ") and written["id"] in line:
                break
    ciphertext, tag = bytes.fromhex(written["content"]), bytes.fromhex(written["auth_tag"])
    assert decrypt(key.aes, key.iv, ciphertext, tag) == b"from node a" * 20


def test_a_connect_job_through_the_proxy_is_settled_once(cluster: Cluster, rt: Runtime) -> None:
    user = make_user(rt)
    credits.grant_credits(rt, user["id"], 1000)
    api = _through_proxy(cluster, user)
    resp = api.post("/connect", json={"repository": "contacts", "path": "/get-leads", "params": {"credits": 120}})
    assert resp.status_code == 204, resp.text
    job = rt.db.query_row("SELECT * FROM jobs WHERE user_id = ?", (user["id"],))
    summary = api.get(f"/connect/jobs/{job['id']}").json()
    assert summary["status"] == "succeeded" and summary["created"] == 120
    assert summary["credits"]["charged"] == 20 * 25 and summary["credits"]["settlement"] == "settled"
    ledger = rt.db.query("SELECT kind, COUNT(*) AS n FROM ledger WHERE job_id = ? GROUP BY kind", (job["id"],))
    assert {row["kind"]: row["n"] for row in ledger} == {"allowance": 1, "reserve": 1, "charge": 1}
    assert api.get("/credits").json()["amount"] == 1000 - 20 * 25
    api.close()


def test_a_killed_node_restarts_and_rejoins(cluster: Cluster, rt: Runtime) -> None:
    user = make_user(rt)
    node_a, node_b = cluster.nodes["a"], cluster.nodes["b"]
    node_a.kill()
    on_b = Vault(Api(node_b.url, user["api_key"]), user)
    key = on_b.new_key()
    while_down = on_b.put(key, b"written while a was down" * 10)
    node_a.start()
    on_a = Vault(Api(node_a.url, user["api_key"]), user)
    assert on_a.read(key, while_down["id"]) == b"written while a was down" * 10
    # Node A's streams hear node B's writes again.
    headers = {"Authorization": f"Bearer {user['api_key']}"}
    with requests.get(node_a.url + "/api/events/object_created", headers=headers, stream=True, timeout=20) as stream:
        lines = stream.iter_lines(decode_unicode=True)
        after = on_b.put(key, b"after the restart")
        assert any(line.startswith("data: ") and after["id"] in line for line in lines)


def test_a_job_of_a_killed_node_is_settled_once_by_the_other_within_the_lease(cluster: Cluster, rt: Runtime) -> None:
    user = make_user(rt)
    credits.grant_credits(rt, user["id"], 10_000)
    node_a = cluster.nodes["a"]
    body = {"repository": "contacts", "path": "/get-leads", "params": {"credits": 300, "mode": "slow", "delay_ms": 20}}
    headers = {"Authorization": f"Bearer {user['api_key']}"}
    request = threading.Thread(
        target=lambda: _ignore_errors(lambda: requests.post(node_a.url + "/api/connect", json=body, headers=headers)),
        daemon=True,
    )
    request.start()
    job = wait_until(
        lambda: rt.db.query_one("SELECT * FROM jobs WHERE user_id = ? AND created > 0", (user["id"],)), timeout=30
    )
    node_a.kill()  # mid-job: no settlement, no refund, the lease stops beating
    killed_at = time.monotonic()
    done = wait_until(
        lambda: rt.db.query_one("SELECT * FROM jobs WHERE id = ? AND settlement = 'settled'", (job["id"],)),
        timeout=LEASE_SECONDS * 5,
    )
    assert time.monotonic() - killed_at < LEASE_SECONDS * 3  # the lease, plus a beat of node B's lease thread
    assert done["status"] == "interrupted" and done["owner"] != job["owner"]  # node B claimed it
    used = done["created"]
    charged = max(0, used - done["allowance_part"]) * done["price"]
    assert (done["used"], done["charged"], done["refunded"]) == (used, charged, done["reserved"] - charged)
    kinds = [r["kind"] for r in rt.db.query("SELECT kind FROM ledger WHERE job_id = ? ORDER BY id", (job["id"],))]
    assert kinds.count("charge") == 1 and kinds.count("refund") <= 1  # settled exactly once
    assert credits.local_balance(rt, user["id"]) == 10_000 - charged
    node_a.start()  # node A rejoins for the tests after this one
    request.join(timeout=10)


def _ignore_errors(call: Any) -> None:
    try:
        call()
    except requests.RequestException:
        pass  # node A was killed under the request
