"""`telentir copy-data`: a folder made by the default server moves to PostgreSQL + S3 and reads back byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from telentir.runtime import Runtime

from ..backends import AWS_ENV, MotoServer, throwaway_database
from ..dataplane_support import Vault
from ..private_services import redis_url
from ..support import FIXED_MASTER_KEY, ROOT, Api, ServerProcess, make_user, runtime_over, server_env

BUCKET = "telentir-copy"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """An S3-compatible server with the target bucket."""
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    client = _client(server)
    client.create_bucket(Bucket=BUCKET)
    client.close()
    yield server
    server.stop()


def _client(server: MotoServer) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.url,
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
    )


def _copy_data(data_dir: Path, s3: MotoServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = server_env(data_dir, {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "TELENTIR_S3_ENDPOINT_URL": s3.url, **AWS_ENV})
    return subprocess.run(
        [sys.executable, "-m", "telentir", "copy-data", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _fill(data_dir: Path) -> dict[str, Any]:
    """Serve the folder with the default server, write through the API (inline and file ciphertexts), stop."""
    server = ServerProcess(data_dir, {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "TELENTIR_INLINE_MAX_BYTES": "64"})
    server.start()
    rt: Runtime = runtime_over(data_dir)
    try:
        user = make_user(rt)
        api = Api(server.url, user["api_key"])
        vault = Vault(api, user)
        key = vault.new_key()
        parent = vault.put(key, b"parent " * 40)
        written = {parent["id"]: parent["content"]}
        for n, size in enumerate((10, 30, 500, 5000, 70_000)):
            record = vault.put(key, os.urandom(size), related=parent["id"], metadata={"n": n})
            written[record["id"]] = record["content"]
        doomed = vault.put(key, b"deleted soon" * 20, related=parent["id"])
        assert api.delete(f"/objects/{doomed['id']}").status_code == 204
        assert api.put(f"/objects/publish/card/{parent['id']}", json={"objectId": parent["id"]}).status_code < 300
        events = [int(row["id"]) for row in rt.db.query("SELECT id FROM events ORDER BY id")]
        files = int(rt.db.query_value("SELECT COUNT(*) FROM objects WHERE blob IS NOT NULL"))
        api.close()
        return {"user": user, "key": key, "written": written, "events": events, "files": files}
    finally:
        rt.close()
        server.stop()


def test_copy_data_moves_a_default_folder_and_every_object_reads_back(tmp_path: Path, s3: MotoServer) -> None:
    source = tmp_path / "old"
    made = _fill(source)
    assert made["files"] >= 4  # the larger ciphertexts and the stores' are files, not inline
    with throwaway_database() as url:
        done = _copy_data(source, s3, "--to-database", url, "--to-blobs", f"s3://{BUCKET}/prod")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Verified" in done.stdout and f"{made['files']} blob(s)" in done.stdout, done.stdout
        listed = _client(s3).list_objects_v2(Bucket=BUCKET, Prefix="prod/")
        assert listed["KeyCount"] == made["files"]

        again = _copy_data(source, s3, "--to-database", url, "--to-blobs", f"s3://{BUCKET}/again")
        assert again.returncode == 1 and "not empty" in again.stderr

        node = ServerProcess(
            tmp_path / "new",
            {
                "TELENTIR_MASTER_KEY": FIXED_MASTER_KEY,
                "TELENTIR_DATABASE_URL": url,
                "TELENTIR_BLOB_URL": f"s3://{BUCKET}/prod",
                "TELENTIR_S3_ENDPOINT_URL": s3.url,
                "TELENTIR_BROKER_URL": redis_url(),
                "TELENTIR_EVENT_RETENTION_SECONDS": str(10**9),
                **AWS_ENV,
            },
        ).start()
        try:
            _check_served(node, made)
        finally:
            node.stop()


def _check_served(node: ServerProcess, made: dict[str, Any]) -> None:
    api = Api(node.url, made["user"]["api_key"])  # the old API key still authenticates
    try:
        for object_id, content in made["written"].items():
            resp = api.get(f"/objects/{object_id}")
            assert resp.status_code == 200, resp.text
            assert resp.json()["content"] == content, object_id
        created = _event_ids(api, since=0, count=len(made["written"]) + 8)  # the stores' objects too
        assert created == sorted(created) and set(created) <= set(made["events"])
        vault = Vault(api, made["user"])
        fresh = vault.put(made["key"], b"written after the move" * 100)
        assert vault.read(made["key"], fresh["id"]) == b"written after the move" * 100
        # Ids continue after the highest one ever handed out: old cursors keep their meaning.
        assert _event_ids(api, since=max(made["events"]), count=1)[0] > max(made["events"])
    finally:
        api.close()


def _event_ids(api: Api, since: int, count: int) -> list[int]:
    ids: list[int] = []
    with api.get("/events/object_created", params={"since": str(since)}, stream=True, timeout=20) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines(decode_unicode=True):
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            if len(ids) == count:
                return ids
    raise AssertionError(f"the stream ended after {ids}")
