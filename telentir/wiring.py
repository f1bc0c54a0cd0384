"""Wiring: build a Runtime from settings, and start the serving process's background work.

The top of the dependency graph: this module imports services and components and puts
them together; nothing below it imports it (`telentir.runtime` holds only the types).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from . import crypto
from .components.job_runner import JobRunner
from .components.stripe_gateway import make_gateway
from .config import Config, ConfigError
from .errors import EngineUnavailable, InsufficientStorage
from .metrics import Metrics
from .pubsub import create_broker
from .pubsub.doorbell import Doorbell, PublishStats
from .pubsub.peers import PeerDoorbells, socket_folder
from .runtime import Runtime
from .services import events, leases, maintenance, settlement
from .services.platform import ensure_platform_key, holds_sealed_secrets
from .sms import make_sender
from .storage.blobs import BlobStore, FileBlobStore
from .storage.db import Database, SqliteDatabase
from .storage.health import DISK, EngineHealth
from .storage.schema import Migration
from .storage.space import FreeSpace
from .streaming.reads import RecentReads
from .streaming.slots import StreamSlots

log = logging.getLogger(__name__)


def master_key_for(config: Config) -> bytes:
    """The master key from TELENTIR_MASTER_KEY, else from the key file, created only for a data folder without secrets.

    A missing key file next to a database that holds sealed secrets is an error, and nothing
    is created: a fresh key would open none of them, and would then sit in the data folder
    looking like the right one.
    """
    if config.master_key:
        return crypto.parse_master_key(config.master_key)
    path = config.master_key_path
    if config.uses_postgres and not path.exists():
        # A shared database is shared by nodes that must all hold the same key: there the key
        # file is only read (mounted on each node), never created by one node on its own.
        raise ConfigError(
            f"no master key: with TELENTIR_DATABASE_URL=postgresql://… every node needs the same one, from "
            f"TELENTIR_MASTER_KEY or a mounted TELENTIR_MASTER_KEY_FILE ({path} does not exist)"
        )
    if not path.exists() and _holds_sealed_secrets(config.database_path):
        raise ConfigError(
            f"the master key file {path} is missing, but the database {config.database_path} holds secrets "
            "sealed with a master key: restore that file, point TELENTIR_MASTER_KEY_FILE at it, or set "
            "TELENTIR_MASTER_KEY to the key (nothing was created)"
        )
    return crypto.load_or_create_master_key(path)


def _holds_sealed_secrets(database_path: Path) -> bool:
    if not database_path.exists():
        return False
    db = SqliteDatabase(database_path)
    try:
        return holds_sealed_secrets(db)
    finally:
        db.close()


def open_database(config: Config, health: EngineHealth | None = None) -> Database:
    """The configured database, not yet opened for use (PostgreSQL's driver is imported only if configured)."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if config.uses_postgres:
        from .storage.postgres import PostgresDatabase

        assert config.database_url is not None
        return PostgresDatabase(config.database_url, pool_size=config.database_pool_size, health=health)
    return SqliteDatabase(
        config.database_path, synchronous=config.synchronous, cache_mib=config.sqlite_cache_mib, health=health
    )


def open_blobs(config: Config, health: EngineHealth | None = None) -> BlobStore:
    """The configured ciphertext store (boto3 is imported only for an S3 bucket)."""
    if config.uses_s3:
        from .storage.s3 import S3BlobStore

        assert config.blob_url is not None
        return S3BlobStore.from_url(config.blob_url, endpoint_url=config.s3_endpoint_url, health=health)
    return FileBlobStore(config.blob_path, health=health)


def free_space_of(config: Config, health: EngineHealth) -> FreeSpace:
    """The free-space check of the local folders data is written to (none on PostgreSQL + S3)."""
    folders = [] if config.uses_postgres else [config.database_path.parent]
    if not config.uses_s3:
        folders.append(config.blob_path)
    return FreeSpace(folders, config.min_free_bytes, health)


def migrate(config: Config) -> list[Migration]:
    """Create the database, or bring an older one to the newest schema; returns the migrations applied."""
    db = open_database(config)
    try:
        return db.open_schema(migrate=True)
    finally:
        db.close()


def open_storage(config: Config, health: EngineHealth | None = None) -> tuple[Database, BlobStore]:
    """Open the database (created if new; an older one is refused until migrated) and the blob store."""
    db = open_database(config, health)
    try:
        db.open_schema()
    except BaseException:
        db.close()
        raise
    try:
        return db, open_blobs(config, health)
    except BaseException:
        db.close()
        raise


def build_runtime(config: Config) -> Runtime:
    """Load the master key, open storage and the platform keypair (creating them once), build the components."""
    master_key = master_key_for(config)
    metrics = Metrics.from_environment()
    health = EngineHealth(lambda where: metrics.disk_full() if where == DISK else metrics.engine_unavailable(where))
    db, blobs = open_storage(config, health)
    try:
        platform = ensure_platform_key(db, master_key, config.server_name)
    except BaseException:
        db.close()
        raise
    broker = create_broker(config.broker_url)
    stats = PublishStats(on_count=metrics.broker_publish)
    # The in-process broker reaches this process only: the box's other workers hear through their sockets.
    peers = PeerDoorbells(socket_folder(config.data_dir)) if broker.in_process else None
    rt = Runtime(
        config=config,
        db=db,
        blobs=blobs,
        master_key=master_key,
        platform=platform,
        sms=make_sender(config),
        broker=broker,
        publish_stats=stats,
        doorbell=Doorbell(broker, stats, peers),
        stream_slots=StreamSlots(
            db, config.sse_max_streams, config.sse_max_streams_per_user, config.stream_fair_share, metrics.limit_refused
        ),
        recent_reads=RecentReads(),
        job_runner=JobRunner(config.connect_workers),
        metrics=metrics,
        stripe=make_gateway(config),
        health=health,
        space=free_space_of(config, health),
    )
    rt.closers.append(rt.doorbell.close)
    if rt.stripe is not None:
        rt.closers.append(rt.stripe.close)
    rt.closers.append(rt.job_runner.close)
    return rt


def start_background(rt: Runtime) -> None:
    """Start the serving process's background work; each is stopped by `rt.close()`.

    Threads: `telentir-peer-doorbells` (the box's other workers' doorbells, in-process broker
    only), `telentir-event-pruner` (event retention, one process at a time), `telentir-job-leases` (heartbeats the
    jobs this process holds, settles jobs whose owner's lease expired), with Stripe
    `telentir-refund-retry` (pending Stripe steps; woken at once when a sweep settled a job), and
    on shared storage `telentir-blob-sweeper` (old unreferenced blobs, one process at a time).
    """
    if rt.doorbell.peers is not None:
        rt.doorbell.peers.listen(rt.broker)  # stopped by the doorbell's close
    refunds = None
    if rt.stripe is not None:
        refunds = Periodic(
            "telentir-refund-retry", rt.config.refund_retry_seconds, lambda: settlement.retry_pending(rt)
        )
    workers = [Periodic("telentir-event-pruner", rt.config.event_prune_interval_seconds, lambda: prune_if_ours(rt))]
    if refunds is not None:
        workers.append(refunds)
    if rt.config.uses_postgres or rt.config.uses_s3:
        # Shared storage is swept while serving (past a grace period), not only at start-up.
        workers.append(
            Periodic(
                "telentir-blob-sweeper", rt.config.blob_sweep_interval_seconds, lambda: maintenance.sweep_blobs(rt)
            )
        )
    for worker in workers:
        worker.start()
        rt.closers.append(worker.stop)
    lease_keeper = Periodic("telentir-job-leases", rt.config.job_lease_seconds / 3, lambda: tend_leases(rt, refunds))
    lease_keeper.start()
    # Closers run last first: this one stops after the job pool has drained, so jobs that
    # finish during shutdown keep their heartbeat to the end.
    rt.closers.insert(0, lease_keeper.stop)


def tend_leases(rt: Runtime, refunds: Periodic | None) -> None:
    """Renew this process's leases first (a slow sweep must not let them lapse), then settle expired jobs."""
    leases.heartbeat(rt)
    if settlement.sweep_expired(rt) and refunds is not None:
        refunds.wake()  # a job settled by the sweep may owe a Stripe refund: send it now, not in a minute


def prune_if_ours(rt: Runtime) -> int:
    """Prune the event and audit logs if this process is the pruner (one of the deployment); returns events removed.

    The pruner also finishes account deletions a crash cut short (`maintenance.account_upkeep`).
    """
    if not rt.db.claim_singleton("event-pruner"):
        return 0
    maintenance.account_upkeep(rt)
    return events.prune(rt)


class Periodic:
    """A daemon thread running `task` every `interval` seconds (or at once when woken) until stopped."""

    def __init__(self, name: str, interval: float, task: Callable[[], object]) -> None:
        self.interval, self.task = interval, task
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def wake(self) -> None:
        """Run the task now instead of at the end of the current interval."""
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.task()
            except (EngineUnavailable, InsufficientStorage) as exc:
                # An engine away or a full disk: the storage layer logged it once; no traceback per round.
                log.info("%s: %s; will retry", self._thread.name, exc.message)
            except Exception:
                log.exception("%s failed; will retry", self._thread.name)

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
