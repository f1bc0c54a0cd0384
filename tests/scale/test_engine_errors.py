"""How the storage layer maps engine failures: 503 EngineUnavailable, retries where safe, one log line an outage."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from telentir.errors import EngineUnavailable
from telentir.storage.health import EngineHealth
from telentir.storage.postgres import OUTAGE_POOL_TIMEOUT_SECONDS, POOL_TIMEOUT_SECONDS, PostgresDatabase
from telentir.storage.s3 import MAX_ATTEMPTS, S3BlobStore, _new_client

from ..backends import throwaway_database
from ..fault_proxy import FaultProxy
from ..private_services import postgres_url
from ..support import wait_until

# --- PostgreSQL: a dead pooled connection -------------------------------------------------------


@pytest.fixture
def pg() -> Iterator[tuple[PostgresDatabase, list[str]]]:
    """A PostgreSQL database (schema applied) and the engines its health record saw fail."""
    with throwaway_database() as url:
        failures: list[str] = []
        database = PostgresDatabase(url, pool_size=4, health=EngineHealth(failures.append))
        database.open_schema()
        yield database, failures
        database.close()


def _kill_connections(db: PostgresDatabase) -> int:
    """Terminate every server process of the database (as a PostgreSQL restart does); returns how many."""
    name = psycopg.conninfo.conninfo_to_dict(db.url)["dbname"]
    with psycopg.connect(postgres_url(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


def test_a_read_on_a_dead_pooled_connection_is_retried_on_a_fresh_one(pg: tuple[PostgresDatabase, list[str]]) -> None:
    db, failures = pg
    assert db.query_value("SELECT 1") == 1
    assert _kill_connections(db) >= 1
    assert db.query_value("SELECT 2") == 2  # the dead connection was found and the read repeated
    assert failures == []


def test_a_write_failing_at_begin_is_retried_and_commits_once(pg: tuple[PostgresDatabase, list[str]]) -> None:
    db, failures = pg
    db.query_value("SELECT 1")
    _kill_connections(db)
    with db.atomic() as tx:
        tx.execute("INSERT INTO limit_events (bucket, at, expires_at) VALUES (?, ?, ?)", ("retried", 1.0, 2.0))
    assert db.query_value("SELECT count(*) FROM limit_events WHERE bucket = 'retried'") == 1
    assert failures == []


def test_a_connection_lost_inside_a_transaction_is_a_503_and_nothing_commits(
    pg: tuple[PostgresDatabase, list[str]],
) -> None:
    db, failures = pg
    rolled_back: list[bool] = []
    with pytest.raises(EngineUnavailable) as info:
        with db.atomic() as tx:
            tx.after_rollback(lambda: rolled_back.append(True))
            tx.execute("INSERT INTO limit_events (bucket, at, expires_at) VALUES (?, ?, ?)", ("lost", 1.0, 2.0))
            _kill_connections(db)
            tx.execute("INSERT INTO limit_events (bucket, at, expires_at) VALUES (?, ?, ?)", ("lost", 2.0, 3.0))
    assert info.value.status == 503 and info.value.retry_after and info.value.engine == "postgresql"
    assert rolled_back == [True]  # the blobs such a transaction wrote are removed
    assert failures == ["postgresql"]
    assert db.query_value("SELECT count(*) FROM limit_events WHERE bucket = 'lost'") == 0  # and it serves again


def test_a_server_away_is_a_503_and_the_database_serves_again_once_it_is_back() -> None:
    with throwaway_database() as url:
        target = psycopg.conninfo.conninfo_to_dict(url)
        proxy = FaultProxy(str(target.get("host", "127.0.0.1")), int(target.get("port", 5432))).start()
        failures: list[str] = []
        db = PostgresDatabase(
            psycopg.conninfo.make_conninfo(url, port=str(proxy.port)), pool_size=2, health=EngineHealth(failures.append)
        )
        try:
            db.open_schema()
            proxy.cut()
            with pytest.raises(EngineUnavailable):
                db.query_value("SELECT 1")
            with pytest.raises(EngineUnavailable):
                with db.atomic() as tx:
                    tx.execute(
                        "INSERT INTO limit_events (bucket, at, expires_at) VALUES (?, ?, ?)", ("never", 1.0, 2.0)
                    )
            assert failures and set(failures) == {"postgresql"} and db.health.is_away("postgresql")
            proxy.restore()
            wait_until(lambda: _answers(db), timeout=30, message="the database to serve again")
            assert db.query_value("SELECT count(*) FROM limit_events WHERE bucket = 'never'") == 0
        finally:
            db.close()
            proxy.stop()


def test_an_outage_is_one_warning_not_one_per_dead_connection_and_reconnection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """psycopg_pool's warnings (each connection discarded, each reconnection tried) stay at DEBUG."""
    caplog.set_level(logging.INFO)
    with throwaway_database() as url:
        target = psycopg.conninfo.conninfo_to_dict(url)
        proxy = FaultProxy(str(target.get("host", "127.0.0.1")), int(target.get("port", 5432))).start()
        db = PostgresDatabase(psycopg.conninfo.make_conninfo(url, port=str(proxy.port)), pool_size=4)
        try:
            db.open_schema()
            with db.atomic() as tx:  # several pooled connections, all killed by the cut
                tx.execute("SELECT 1")
            proxy.cut()
            deadline = time.monotonic() + 3  # the pool tries to reconnect meanwhile
            while time.monotonic() < deadline:
                with pytest.raises(EngineUnavailable):
                    db.query_value("SELECT 1")
                time.sleep(0.1)
            proxy.restore()
            wait_until(lambda: _answers(db), timeout=30, message="the database to serve again")
        finally:
            db.close()
            proxy.stop()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["telentir.storage"], [(r.name, r.getMessage()) for r in warnings]
    assert warnings[0].getMessage().startswith("PostgreSQL is unavailable")


def test_a_request_waiting_for_a_pooled_connection_stops_soon_after_the_outage_is_seen() -> None:
    """A request queued on the pool before the process saw the outage fails within a slice, not POOL_TIMEOUT."""
    with throwaway_database() as url:
        target = psycopg.conninfo.conninfo_to_dict(url)
        proxy = FaultProxy(str(target.get("host", "127.0.0.1")), int(target.get("port", 5432))).start()
        db = PostgresDatabase(psycopg.conninfo.make_conninfo(url, port=str(proxy.port)), pool_size=2)
        held = [db._pool.getconn(), db._pool.getconn()]  # the pool has nothing to give: a request must wait
        answer: dict[str, Any] = {}

        def read() -> None:
            started = time.monotonic()
            try:
                db.query_value("SELECT 1")
            except EngineUnavailable as exc:
                answer["error"] = exc
            answer["seconds"] = time.monotonic() - started

        try:
            proxy.cut()
            waiting = threading.Thread(target=read)
            waiting.start()
            time.sleep(0.3)  # queued on the pool now; then another request of the process meets the outage
            db.health.failed("postgresql", "connection refused")
            waiting.join(timeout=POOL_TIMEOUT_SECONDS + 10)
            assert isinstance(answer.get("error"), EngineUnavailable), answer
            assert answer["seconds"] < 0.3 + OUTAGE_POOL_TIMEOUT_SECONDS + 1.5 < POOL_TIMEOUT_SECONDS, answer
        finally:
            for conn in held:
                db._pool.putconn(conn)
            proxy.restore()
            db.close()
            proxy.stop()


def _answers(db: PostgresDatabase) -> bool:
    try:
        return bool(db.query_value("SELECT 1") == 1)
    except EngineUnavailable:
        return False


# --- S3: throttling, an unreachable endpoint, the retry budget ------------------------------------


class _FailingClient:
    """A stand-in for the boto3 client whose calls raise `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def put_object(self, **kwargs: Any) -> None:
        raise self.error

    def get_object(self, **kwargs: Any) -> None:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject"),
        ClientError({"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "PutObject"),
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
    ],
    ids=["slow-down", "5xx", "unreachable"],
)
def test_s3_failures_after_retries_are_503(error: Exception) -> None:
    failures: list[str] = []
    store = S3BlobStore(lambda: _FailingClient(error), "bucket", "p", EngineHealth(failures.append))
    with pytest.raises(EngineUnavailable) as info:
        store.write(b"x" * 100)
    assert info.value.engine == "s3" and info.value.code == "service_unavailable" and info.value.retry_after
    with pytest.raises(EngineUnavailable):
        store.read("a" * 24)
    assert failures == ["s3", "s3"]


def test_a_missing_object_is_still_not_found() -> None:
    missing = ClientError({"Error": {"Code": "NoSuchKey"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject")
    store = S3BlobStore(lambda: _FailingClient(missing), "bucket")
    with pytest.raises(FileNotFoundError):
        store.read("a" * 24)


def test_the_s3_client_retries_in_standard_mode_within_a_budget_and_times_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    config = _new_client("http://127.0.0.1:1").meta.config
    # botocore's max_attempts counts the retries after the first attempt.
    assert config.retries == {"mode": "standard", "total_max_attempts": MAX_ATTEMPTS + 1}
    assert config.connect_timeout <= 5 and config.read_timeout <= 30


# --- one log line per outage -----------------------------------------------------------------------


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    counted: list[str] = []
    health = EngineHealth(counted.append)
    with caplog.at_level(logging.WARNING, logger="telentir.storage"):
        for _ in range(5):
            health.failed("postgresql", "connection refused")
        health.ok("postgresql")  # within the quiet period: still the same outage
        health.failed("postgresql", "connection refused")
        health.away()["postgresql"].last_failure -= 60  # as if the last failure were a minute ago
        health.ok("postgresql")
        health.ok("postgresql")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("PostgreSQL is unavailable: connection refused")
    assert messages[1].startswith("PostgreSQL is back") and "6 of them" in messages[1]
    assert counted == ["postgresql"] * 6 and not health.is_away("postgresql")


# --- the one error handler: before-request hooks and a stray full disk ----------------------------


def test_an_engine_away_in_the_authentication_hook_is_a_503_with_retry_after(
    client: Any, rt: Any, user: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def away(*args: Any, **kwargs: Any) -> Any:
        raise EngineUnavailable("postgresql", "AdminShutdown: terminating connection due to administrator command")

    monkeypatch.setattr(rt.db, "query_one", away)
    monkeypatch.setattr(rt.db, "query", away)
    resp = client.get("/api/root", headers={"Authorization": f"Bearer {user['api_key']}"})
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "2"
    body = resp.get_json()
    assert body["error"] == "service_unavailable" and "PostgreSQL" in body["message"]
    assert "AdminShutdown" not in body["message"]  # the driver's words stay in the log


def test_a_full_disk_met_outside_the_storage_layer_is_a_507(
    client: Any, user: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from telentir.services import objects

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(objects, "create_object", full)
    resp = client.put(
        "/api/objects",
        json={"keyId": "key_3x9TQm2ZkW8pLr4VbN7cYd", "content": "00ff", "authTag": "ab" * 16},
        headers={"Authorization": f"Bearer {user['api_key']}"},
    )
    assert resp.status_code == 507, resp.get_data(as_text=True)
    assert resp.get_json()["error"] == "insufficient_storage"
