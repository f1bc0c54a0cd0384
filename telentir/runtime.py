"""The objects a running server shares: settings, storage, keys, broker, streams, jobs.

`Runtime` is a plain record of typed components, built once per app by
`telentir.wiring.build_runtime` and kept on `app.extensions["telentir"]`. Services take it
as their first argument, so they run the same from a route, a job, the CLI or a test. This
module wires nothing and starts nothing: it sits below every service, and holds components
that do too (`telentir.components`, storage, pubsub, the stream slots and shared reads;
`tests/unit/test_layers.py` keeps it so).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import rsa

from . import crypto
from .components.job_runner import JobRunner
from .components.stripe_gateway import StripeGateway
from .config import Config
from .metrics import Metrics
from .pubsub import Broker
from .pubsub.doorbell import Doorbell, PublishStats
from .sms import SmsSender
from .storage.blobs import BlobStore
from .storage.db import Database
from .storage.health import EngineHealth
from .storage.space import FreeSpace
from .streaming.reads import RecentReads
from .streaming.slots import StreamSlots

if TYPE_CHECKING:  # the hub reads streams through services, which take a Runtime
    from .streaming.hub import SSEHub


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
    broker: Broker
    publish_stats: PublishStats
    doorbell: Doorbell
    stream_slots: StreamSlots
    recent_reads: RecentReads
    job_runner: JobRunner
    metrics: Metrics
    stripe: StripeGateway | None = None
    # Engines away and a full disk, as the storage layer reports them; the free-space check.
    health: EngineHealth = field(default_factory=EngineHealth)
    space: FreeSpace = field(default_factory=lambda: FreeSpace([], 0, EngineHealth()))
    # Started on the first live SSE stream (`streaming.hub.hub_for`), under `hub_lock`.
    sse_hub: SSEHub | None = None
    hub_lock: threading.Lock = field(default_factory=threading.Lock)
    # Per-process caches: users whose root exists, and the `GET /api/server` document.
    roots_ready: set[str] = field(default_factory=set)
    server_document: dict[str, Any] | None = None
    # Called in reverse order by close(): last started, first stopped (jobs before the doorbell).
    closers: list[Callable[[], None]] = field(default_factory=list)

    def seal(self, secret: bytes, context: str) -> bytes:
        """Encrypt a secret at rest under the master key, bound to `context`."""
        return crypto.seal(self.master_key, secret, context.encode())

    def unseal(self, sealed: bytes, context: str) -> bytes:
        """Open a secret sealed with `seal`."""
        return crypto.unseal(self.master_key, sealed, context.encode())

    def close(self) -> None:
        """Release what this runtime owns: background threads, broker, connections."""
        for closer in reversed(self.closers):
            closer()
        self.broker.close()
        self.db.close()
