"""The storage backends the integration suite runs on: `embedded` and `postgres-s3-redis`.

`pytest` runs on the embedded default (SQLite, files, in-process broker); `pytest
--backend postgres-s3-redis` runs the storage-bound integration modules (SCALE_OUT_MODULES)
again, unchanged, with every server and runtime they build pointed at PostgreSQL, an S3
server and Redis. The backend reaches `support.server_env` and `support.test_config`
through one environment variable (set for the session by conftest), so test modules need
not know which backend they run on. PostgreSQL and Redis are the run's private servers
(tests/private_services.py), or those TELENTIR_TEST_POSTGRES_URL / TELENTIR_TEST_REDIS_URL name.

Each data folder gets a throwaway database of its own, named from the folder's path
(`telentir_test_<run>_<hash>`), and a prefix of the run's bucket: a test that starts from
an empty folder starts from an empty database too. Every database of the run is dropped at
its end.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import requests

from .private_services import postgres_url, redis_url
from .support import free_port

EMBEDDED = "embedded"
SCALE_OUT = "postgres-s3-redis"
BACKENDS = (EMBEDDED, SCALE_OUT)
ENV_VAR = "TELENTIR_TEST_BACKEND"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

# The integration modules whose servers read and write storage: they run on both backends.
# Left out on purpose: the modules that test the embedded engines themselves (SQLite files and
# locks, the ciphertext files' order under kill -9, backup/restore, the in-process broker and
# peer doorbells, migrations of a SQLite file) and those that start no server (unit, docs).
SCALE_OUT_MODULES = (
    "test_smoke",
    "test_auth_flow",
    "test_two_factor",
    "test_account_life",
    "test_audit",
    "test_account_export",
    "test_dataplane_flows",
    "test_dataplane_behaviour",
    "test_dataplane_bad_input",
    "test_dataplane_isolation",
    "test_events_sse",
    "test_events_replay",
    "test_events_ws",
    "test_connect",
    "test_cli_credits",
    "test_error_shape",
    "test_connect_stripe",
    "test_billing_checkout",
    "test_billing_webhooks",
    "test_billing_cli",
    "test_console_server",
    "test_job_leases",
    "test_money_concurrency",
    "test_signup_policy",
    "test_stream_credentials",
    "test_amount_bounds",
    "test_stripe_failures",
    "test_metrics",
    "test_fuzz",
    "test_input_encoding",
    "test_stream_cursors",
    "test_token_cookie",
    "test_client_gone",
    "test_stream_reads",
    "test_request_logs",
    "test_malformed_http",
    "test_sse_hub",
    "test_resource_limits",
    "test_gevent_worker",
    "test_engine_outages",
    "test_account_limits",
    "test_ratelimit",
    "test_short_bodies",
    "test_ws_limits",
    "test_slow_clients",
)


def active() -> dict[str, Any] | None:
    """The scale-out session's settings (None on the embedded backend)."""
    raw = os.environ.get(ENV_VAR)
    return json.loads(raw) if raw else None


def _name_for(session: dict[str, Any], data_dir: Path) -> str:
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]
    return f"telentir_test_{session['run']}_{digest}"


def create_database(session: dict[str, Any], name: str) -> str:
    """Create database `name` unless it exists; returns its postgresql:// URL."""
    with psycopg.connect(session["admin_url"], autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists is None:
            admin.execute(f'CREATE DATABASE "{name}"'.encode())  # a name we made: letters, digits, _
    info = psycopg.conninfo.conninfo_to_dict(session["admin_url"])
    user = info.get("user", "postgres")
    return f"postgresql://{user}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"


def overrides_for(data_dir: Path) -> dict[str, Any]:
    """Config overrides (attribute names) that point a runtime over `data_dir` at the session's backend."""
    session = active()
    if session is None:
        return {}
    name = _name_for(session, data_dir)
    return {
        "database_url": create_database(session, name),
        "blob_url": f"s3://{session['bucket']}/{name}",
        "s3_endpoint_url": session["s3_url"],
        "broker_url": session["redis_url"],
    }


def env_for(data_dir: Path) -> dict[str, str]:
    """The TELENTIR_* variables (and AWS credentials) of a server process over `data_dir`."""
    overrides = overrides_for(data_dir)
    if not overrides:
        return {}
    return {
        "TELENTIR_DATABASE_URL": overrides["database_url"],
        "TELENTIR_BLOB_URL": overrides["blob_url"],
        "TELENTIR_S3_ENDPOINT_URL": overrides["s3_endpoint_url"],
        "TELENTIR_BROKER_URL": overrides["broker_url"],
        **AWS_ENV,
    }


class MotoServer:
    """moto's standalone S3-compatible server on a free port (a real HTTP server, not a mock)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        """Start it and wait until it answers."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **AWS_ENV},
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url, timeout=1)
                return self
            except requests.RequestException:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start:\n{self.log_path.read_text()}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


class ScaleOutSession:
    """What the scale-out backend needs for one test run: the S3 server, a bucket, the run's databases."""

    def __init__(self, workdir: Path) -> None:
        self.run = secrets.token_hex(4)
        self.s3 = MotoServer(workdir)

    def start(self) -> dict[str, Any]:
        """Start the S3 server, make the bucket, start (or reach) PostgreSQL and Redis; returns the session settings."""
        import boto3

        self.s3.start()
        bucket = f"telentir-test-{self.run}"
        client = boto3.client("s3", endpoint_url=self.s3.url, **_boto_credentials())
        client.create_bucket(Bucket=bucket)
        client.close()
        with psycopg.connect(postgres_url(), autocommit=True) as admin:
            admin.execute("SELECT 1")
        return {
            "run": self.run,
            "admin_url": postgres_url(),
            "bucket": bucket,
            "s3_url": self.s3.url,
            "redis_url": redis_url(),
        }

    def stop(self) -> None:
        """Drop every database of the run and stop the S3 server."""
        with psycopg.connect(postgres_url(), autocommit=True) as admin:
            names = [
                row[0]
                for row in admin.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"telentir_test_{self.run}_%",)
                )
            ]
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        self.s3.stop()


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_ENV["AWS_DEFAULT_REGION"],
    }


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped after); yields its URL."""
    name = f"telentir_test_{secrets.token_hex(6)}"
    url = create_database({"admin_url": postgres_url()}, name)
    try:
        yield url
    finally:
        with psycopg.connect(postgres_url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
