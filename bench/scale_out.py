"""The scale-out scenario: one node against two, each with two workers, on PostgreSQL + S3 + Redis.

Every node is a separate `telentir serve` with its own data folder; they share one
PostgreSQL database, one bucket on a local S3-compatible server (moto's standalone server,
from the dev requirements) and the Redis of `--redis-url`. "Two nodes" drives both at once, half the
connections each, as an L4 balancer spreading connections would; the figure is their sum.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from . import load
from .seed import make_user, open_runtime, seed_objects
from .server import Server, free_port

DATABASE = "telentir_bench_scale"
PG_URL = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
BUCKET = "telentir-bench"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", sql], check=True, capture_output=True)


def _start_s3(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(workdir / "moto.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **AWS_ENV},
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            requests.put(f"{url}/{BUCKET}", timeout=1).raise_for_status()  # CreateBucket
            return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError("the S3 server did not start")


def _engines(s3_url: str, redis_url: str) -> dict[str, str]:
    return {
        "TELENTIR_DATABASE_URL": PG_URL,
        "TELENTIR_BLOB_URL": f"s3://{BUCKET}/bench",
        "TELENTIR_S3_ENDPOINT_URL": s3_url,
        "TELENTIR_BROKER_URL": redis_url,
        **AWS_ENV,
    }


def _run_split(servers: list[Server], spec: load.Load, connections: int, seconds: float) -> dict[str, Any]:
    """Drive every server at once with its share of the connections; the summed throughput, worst p99."""
    results: list[load.LoadResult] = []
    share = max(1, connections // len(servers))
    threads = [
        threading.Thread(target=lambda s=server: results.append(load.run(s.url, spec, share, seconds)))
        for server in servers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "rps": round(sum(r.rps for r in results), 1),
        "p50_ms": max(r.p50_ms for r in results),
        "p99_ms": max(r.p99_ms for r in results),
        "errors": sum(r.errors for r in results),
        "nodes": len(servers),
        "connections": share * len(servers),
    }


def run(bench: Any, create_load: Any, auth: Any, object_bytes: int) -> None:
    """One node, then two, each with two workers: create and read on the shared engines."""
    _psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    _psql(f"CREATE DATABASE {DATABASE}")
    s3, s3_url = _start_s3(bench.workdir)
    engines = _engines(s3_url, bench.redis_url)
    os.environ.update(AWS_ENV)  # for the seeding runtime's S3 client
    servers: list[Server] = []
    try:
        rt = open_runtime(
            bench.data_dir("scale-seed"),
            database_url=PG_URL,
            blob_url=engines["TELENTIR_BLOB_URL"],
            s3_endpoint_url=s3_url,
            broker_url=bench.redis_url,
        )
        user = make_user(rt, "scale")
        ids = seed_objects(rt, user, min(bench.sizes.read_objects, 20_000), object_bytes)
        rt.close()
        for nodes in (1, 2):
            while len(servers) < nodes:
                servers.append(bench.server(bench.data_dir(f"scale-node{len(servers)}"), engines, workers=2))
            sizes = bench.sizes
            reading = load.Load("GET", [f"/api/objects/{i}" for i in ids], auth(user))
            for name, spec in (("create", create_load(user)), ("read", reading)):
                load.warm_up(servers[0].url, spec, sizes.connections, sizes.warmup_seconds)
                bench.results[f"8_scale_{name}_{nodes}node"] = _run_split(
                    servers, spec, sizes.connections, sizes.seconds
                )
    finally:
        for server in servers:
            server.stop()
        s3.terminate()
        s3.wait(20)
