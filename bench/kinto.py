"""The peer: Kinto on the local PostgreSQL, under the same gunicorn model and load tool.

Kinto is installed into its own virtualenv (`bench/.kinto-venv`, made on first use from
PyPI) so it never touches the server's pinned requirements.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from . import load
from .server import free_port

VENV = Path(__file__).with_name(".kinto-venv")
KINTO_VERSION = "26.5.0"
PG_URL = "postgresql://postgres@127.0.0.1:5432/kinto_bench"
INI = """[app:main]
use = egg:kinto
kinto.storage_backend = kinto.core.storage.postgresql
kinto.storage_url = {pg}
kinto.cache_backend = kinto.core.cache.memory
kinto.permission_backend = kinto.core.permission.postgresql
kinto.permission_url = {pg}
kinto.userid_hmac_secret = bench-secret
multiauth.policies = basicauth
kinto.bucket_create_principals = system.Authenticated
[server:main]
use = egg:waitress#main
"""


def _python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"kinto[postgresql]=={KINTO_VERSION}", "gunicorn==27.0.1"],
            check=True,
        )
    return python


def _database() -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", "DROP DATABASE IF EXISTS kinto_bench WITH (FORCE)"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", "CREATE DATABASE kinto_bench"],
        check=True,
        capture_output=True,
    )


def _start(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    _python()  # makes the venv on first use
    _database()
    ini = workdir / "kinto.ini"
    ini.write_text(INI.format(pg=PG_URL))
    subprocess.run([str(VENV / "bin" / "kinto"), "migrate", "--ini", str(ini)], check=True, capture_output=True)
    port = free_port()
    with open(workdir / "kinto.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [
                str(VENV / "bin" / "gunicorn"),
                "--paste",
                str(ini),
                "-b",
                f"127.0.0.1:{port}",
                "-k",
                "gthread",
                "--threads",
                "256",
                "-w",
                "1",
                "--no-control-socket",
            ],
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(url + "/v1/", timeout=1).ok:
                return proc, url
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError("kinto did not start")


def run(workdir: Path, sizes: Any, object_bytes: int, ours: dict[str, Any]) -> dict[str, Any]:
    """Create and read records of the same size on Kinto; ratios of ours to it."""
    proc, url = _start(workdir)
    auth = {"Authorization": "Basic " + base64.b64encode(b"bench:secret").decode()}
    try:
        collection = "/v1/buckets/bench/collections/objects/records"
        requests.put(url + "/v1/buckets/bench", headers=auth, timeout=30).raise_for_status()
        requests.put(url + "/v1/buckets/bench/collections/objects", headers=auth, timeout=30).raise_for_status()
        body = json.dumps({"data": {"content": os.urandom(object_bytes).hex(), "authTag": "ab" * 16}})
        headers = {**auth, "Content-Type": "application/json"}
        ids = [
            requests.post(url + collection, data=body, headers=headers, timeout=30).json()["data"]["id"]
            for _ in range(min(sizes.read_objects, 2000))
        ]
        creating = load.Load("POST", [collection], headers, body)
        reading = load.Load("GET", [f"{collection}/{i}" for i in ids], auth)
        load.warm_up(url, creating, sizes.connections, sizes.warmup_seconds)
        create = load.run(url, creating, sizes.connections, sizes.seconds)
        load.warm_up(url, reading, sizes.connections, sizes.warmup_seconds)
        read = load.run(url, reading, sizes.connections, sizes.seconds)
    finally:
        proc.terminate()
        proc.wait(20)
    result = {"create": create.as_dict(), "read": read.as_dict(), "kinto_version": KINTO_VERSION}
    if "2_create" in ours:
        result["our_create_ratio"] = round(ours["2_create"]["rps"] / create.rps, 2)
    if "3_read" in ours:
        result["our_read_ratio"] = round(ours["3_read"]["rps"] / read.rps, 2)
    return result
