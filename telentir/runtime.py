"""The objects a running server shares: settings, storage, keys, broker, senders.

Built once per app by `create_app` and kept on `app.extensions["telentir"]`; services
take it as their first argument so they can run from a route, a job, the CLI or a test.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from . import crypto
from .config import Config
from .pubsub import create_broker
from .sms import SmsSender, make_sender
from .storage.blobs import BlobStore
from .storage.db import Database

log = logging.getLogger(__name__)


@dataclass
class PlatformKey:
    """The platform server's keypair: signs session JWTs, reads published objects."""

    name: str
    private_key: rsa.RSAPrivateKey
    public_b64: str

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The public half."""
        return self.private_key.public_key()


@dataclass
class Runtime:
    """Everything a service function needs, owned by one app."""

    config: Config
    db: Database
    blobs: BlobStore
    master_key: bytes
    platform: PlatformKey
    sms: SmsSender
    broker: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    closers: list[Any] = field(default_factory=list)

    def seal(self, secret: bytes, context: str) -> bytes:
        """Encrypt a secret at rest under the master key, bound to `context`."""
        return crypto.seal(self.master_key, secret, context.encode())

    def unseal(self, sealed: bytes, context: str) -> bytes:
        """Open a secret sealed with `seal`."""
        return crypto.unseal(self.master_key, sealed, context.encode())

    def close(self) -> None:
        """Release what this runtime owns: background threads, broker, connections."""
        for closer in reversed(self.closers):  # last started, first stopped (jobs before the doorbell)
            closer()
        if self.broker is not None:
            self.broker.close()
        self.db.close()


def master_key_for(config: Config) -> bytes:
    """The master key from TELENTIR_MASTER_KEY, else from (or into) the key file."""
    if config.master_key:
        return crypto.parse_master_key(config.master_key)
    return crypto.load_or_create_master_key(config.master_key_path)


def open_storage(config: Config) -> tuple[Database, BlobStore]:
    """Open the database (schema applied) and the blob store."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(config.database_path, synchronous=config.synchronous, cache_mib=config.sqlite_cache_mib)
    db.apply_schema()
    return db, BlobStore(config.blob_path)


def build_runtime(config: Config) -> Runtime:
    """Open storage, load the master key and the platform keypair (creating them once)."""
    from .services.events import Doorbell, PublishStats
    from .services.ingest import JobRunner
    from .services.platform import ensure_platform_key  # services import runtime's types
    from .services.streams import RecentReads, StreamSlots
    from .services.stripe_gateway import make_gateway

    db, blobs = open_storage(config)
    try:
        master_key = master_key_for(config)
        platform = ensure_platform_key(db, master_key, config.server_name)
    except BaseException:
        db.close()
        raise
    rt = Runtime(
        config=config,
        db=db,
        blobs=blobs,
        master_key=master_key,
        platform=platform,
        sms=make_sender(config),
        broker=create_broker(config.broker_url),
    )
    rt.extras["publish_stats"] = PublishStats()
    doorbell = rt.extras["doorbell"] = Doorbell(rt.broker, rt.extras["publish_stats"])
    rt.closers.append(doorbell.close)
    rt.extras["stream_slots"] = StreamSlots(config.sse_max_streams, config.sse_max_streams_per_user)
    rt.extras["recent_reads"] = RecentReads()
    gateway = rt.extras["stripe"] = make_gateway(config)
    if gateway is not None:
        rt.closers.append(gateway.close)
    rt.extras["stripe_locks"], rt.extras["stripe_locks_guard"] = {}, threading.Lock()
    runner = rt.extras["job_runner"] = JobRunner(config.connect_workers, config.connect_per_user)
    rt.closers.append(runner.close)
    return rt


def start_background(rt: Runtime) -> None:
    """Start the serving process's background work; each is stopped by close()."""
    from .services import ingest, streams

    workers = [
        Periodic("telentir-event-pruner", rt.config.event_prune_interval_seconds, lambda: streams.prune_events(rt))
    ]
    if rt.extras["stripe"] is not None:
        workers.append(
            Periodic("telentir-refund-retry", rt.config.refund_retry_seconds, lambda: ingest.retry_pending(rt))
        )
    for worker in workers:
        worker.start()
        rt.closers.append(worker.stop)


class Periodic:
    """A daemon thread running `task` every `interval` seconds until stopped; failures are logged."""

    def __init__(self, name: str, interval: float, task: Any) -> None:
        self.interval, self.task = interval, task
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.task()
            except Exception:
                log.exception("%s failed; will retry", self._thread.name)

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=5)
