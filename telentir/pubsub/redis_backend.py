"""The Redis broker: redis-py itself, plus the few methods the Broker protocol adds.

``pubsub()`` hands out redis-py's own ``PubSub`` objects, so "the interface is
redis-py's" is true by construction; the in-memory broker is the imitation.
"""

import threading
import weakref

import redis
from redis.client import PubSub

from telentir.pubsub import ChannelT, require_bytes_or_str

# Commands (PUBLISH, PING) fail after this long instead of hanging a request thread.
# Pub/sub reads are not affected: get_message(timeout=...) uses its own timeout, and
# redis-py lifts the socket timeout while listen()/get_message(timeout=None) block.
SOCKET_TIMEOUT = 5.0
# A subscriber PINGs before reading once this many seconds have passed, so a dead
# connection surfaces as an error instead of a read that waits for ever.
HEALTH_CHECK_INTERVAL = 15


class RedisBroker:
    """Pub/sub over a Redis server, exposing redis-py's interface."""

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = SOCKET_TIMEOUT,
        health_check_interval: int = HEALTH_CHECK_INTERVAL,
    ) -> None:
        # Options in the URL's query string (e.g. ?socket_timeout=1) take precedence.
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            health_check_interval=health_check_interval,
        )
        # Weak, so a PubSub dropped without close() is not kept alive by the count.
        self._pubsubs: weakref.WeakSet[PubSub] = weakref.WeakSet()
        self._lock = threading.Lock()

    def publish(self, channel: ChannelT, message: ChannelT) -> int:
        """Send ``message`` to ``channel``; return how many subscriptions received it."""
        # Checked here rather than by redis-py, which would also accept int and float:
        # both backends must accept and refuse the same payloads.
        require_bytes_or_str(channel)
        return int(self.client.publish(channel, require_bytes_or_str(message)))

    def pubsub(self, ignore_subscribe_messages: bool = False) -> PubSub:
        """Return a redis-py ``PubSub`` on this broker's connection pool."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=ignore_subscribe_messages)
        with self._lock:
            self._pubsubs.add(pubsub)
        return pubsub

    def ping(self) -> bool:
        """Return whether the Redis server answers."""
        try:
            return bool(self.client.ping())
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False

    def subscriber_count(self) -> int:
        """Return the number of PubSub objects from this broker holding a connection."""
        return sum(1 for pubsub in self._open_pubsubs())

    def close(self) -> None:
        """Close every PubSub from this broker, then the connection pool."""
        # redis-py objects are not thread-safe: a reader blocked in another thread
        # fails with whatever the closed socket raises. Close subscribers first.
        for pubsub in self._open_pubsubs():
            pubsub.close()
        self.client.close()

    def _open_pubsubs(self) -> list[PubSub]:
        with self._lock:  # a WeakSet must not change size while it is iterated
            return [pubsub for pubsub in self._pubsubs if pubsub.connection is not None]
