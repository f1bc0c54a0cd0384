"""Ringing the broker after a commit: the doorbell that tells streams to read the event table.

The event table is the truth; a broker message is only a doorbell, so a broker failure is
logged and counted, never allowed to fail or undo the write that rang it.
"""

import logging
import queue
import threading
from collections.abc import Callable

from telentir.pubsub.base import Broker, BrokerUnavailable
from telentir.pubsub.peers import PeerDoorbells

log = logging.getLogger(__name__)


class PublishStats:
    """Counts of doorbells published and failed (tests read them; `on_count` feeds the metrics)."""

    def __init__(self, on_count: Callable[[bool], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._on_count = on_count
        self.published = 0
        self.failed = 0

    def count(self, ok: bool) -> None:
        """Record one publish attempt."""
        with self._lock:
            if ok:
                self.published += 1
            else:
                self.failed += 1
        if self._on_count is not None:
            self._on_count(ok)


class Doorbell:
    """Rings the broker from one background thread, so a slow or hung broker never delays a write.

    A doorbell that cannot be rung (queue full, broker down) is dropped and counted: streams
    still send the event at their next heartbeat, when they read the table anyway.
    """

    def __init__(
        self, broker: Broker, stats: PublishStats, peers: PeerDoorbells | None = None, max_pending: int = 10_000
    ) -> None:
        self.broker, self.stats, self.peers = broker, stats, peers
        # An in-process broker cannot hang: ringing it inline spares every write a hand-off to
        # the publisher thread (two context switches and a GIL hand-off, measured on create).
        self.inline = broker.in_process
        self._broker_away = False  # publishes fail for want of the broker (logged once per outage)
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="telentir-doorbell", daemon=True)
        if not self.inline:
            self._thread.start()

    def ring(self, channel: str, message: str) -> None:
        """Publish at once (in-process broker) or queue a publish; never blocks, never raises."""
        if self.inline:
            self._publish((channel, message))
            if self.peers is not None:  # the other workers of this box, if any
                for _ in range(self.peers.ring(channel, message)):
                    self.stats.count(False)
            return
        try:
            self._queue.put_nowait((channel, message))
        except queue.Full:
            self.stats.count(False)
            log.warning(
                "doorbell queue full; dropped the doorbell of %s (streams catch up at their heartbeat)", channel
            )

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self._publish(item)

    def _publish(self, item: tuple[str, str]) -> None:
        try:
            self.broker.publish(*item)
            self.stats.count(True)
        except BrokerUnavailable as exc:
            self.stats.count(False)
            # Once per outage, not once per write: every publish fails while the broker is away.
            if not self._broker_away:
                self._broker_away = True
                log.warning(
                    "event broker unavailable (%s); doorbells are dropped and streams catch up from "
                    "the event table at their heartbeat until it is back",
                    exc,
                )
            return
        except Exception:
            self.stats.count(False)
            log.warning(
                "broker publish failed on %s; streams will catch up from the event table", item[0], exc_info=True
            )
            return
        if self._broker_away:
            self._broker_away = False
            log.warning("event broker is back; doorbells ring again")

    def close(self) -> None:
        """Ring what is queued, then stop (waits a few seconds at most)."""
        if self.peers is not None:
            self.peers.close()
        if self.inline:
            return
        try:
            self._queue.put(None, timeout=5)
        except queue.Full:
            return
        self._thread.join(timeout=5)
