"""The Redis broker: redis-py itself, plus the few methods the Broker protocol adds.

``pubsub()`` hands out redis-py's own ``PubSub`` objects behind a thin wrapper that only
translates redis-py's exceptions into this package's (``BrokerUnavailable``,
``BrokerError``), so that no code above ``telentir.pubsub`` needs to know redis-py's
exception tree. Every other call and attribute is redis-py's, unchanged.
"""

import functools
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

import redis
from redis.client import PubSub

from telentir.pubsub.base import BrokerError, BrokerUnavailable, ChannelT, Message, require_bytes_or_str

# Commands (PUBLISH, PING) fail after this long instead of hanging a request thread.
# Pub/sub reads are not affected: get_message(timeout=...) uses its own timeout, and
# redis-py lifts the socket timeout while listen()/get_message(timeout=None) block.
SOCKET_TIMEOUT = 5.0
# A subscriber PINGs before reading once this many seconds have passed, so a dead
# connection surfaces as an error instead of a read that waits for ever.
HEALTH_CHECK_INTERVAL = 15

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def _redis_errors() -> Iterator[None]:
    """Raise redis-py's connection failures as BrokerUnavailable, its other errors as BrokerError."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise BrokerUnavailable(f"Redis is unavailable: {exc}") from exc
    except redis.exceptions.RedisError as exc:
        raise BrokerError(f"Redis failed: {exc}") from exc


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """`method` with its errors translated by `_redis_errors`."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with _redis_errors():
            return method(*args, **kwargs)

    return call


class RedisPubSub:
    """redis-py's ``PubSub``, with its errors translated (see the module docstring)."""

    def __init__(self, inner: PubSub) -> None:
        self.inner = inner

    @property
    def channels(self) -> dict[Any, Any]:
        """Channel subscriptions, as redis-py keeps them."""
        return self.inner.channels

    @property
    def patterns(self) -> dict[Any, Any]:
        """Pattern subscriptions, as redis-py keeps them."""
        return self.inner.patterns

    @property
    def subscribed(self) -> bool:
        """Whether any subscription is held."""
        return bool(self.inner.subscribed)

    @_translated
    def subscribe(self, *channels: ChannelT) -> None:
        """SUBSCRIBE."""
        self.inner.subscribe(*channels)

    @_translated
    def psubscribe(self, *patterns: ChannelT) -> None:
        """PSUBSCRIBE."""
        self.inner.psubscribe(*patterns)

    @_translated
    def unsubscribe(self, *channels: ChannelT) -> None:
        """UNSUBSCRIBE (all when none given)."""
        self.inner.unsubscribe(*channels)

    @_translated
    def punsubscribe(self, *patterns: ChannelT) -> None:
        """PUNSUBSCRIBE (all when none given)."""
        self.inner.punsubscribe(*patterns)

    @_translated
    def get_message(self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0) -> Message | None:
        """The next message, or None when none arrives within `timeout` seconds."""
        # redis-py blocks on timeout=None, as its docs say, though its hint reads `float`.
        return self.inner.get_message(  # type: ignore[no-any-return]
            ignore_subscribe_messages=ignore_subscribe_messages,
            timeout=timeout,  # type: ignore[arg-type]
        )

    def listen(self) -> Iterator[Message]:
        """Messages as they arrive, for as long as a subscription is held."""
        messages = self.inner.listen()
        while True:
            with _redis_errors():
                message = next(messages, None)
            if message is None:
                return
            yield message

    def close(self) -> None:
        """Release the connection."""
        self.inner.close()

    def reset(self) -> None:
        """Drop every subscription and the connection."""
        self.inner.reset()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.reset()


class RedisBroker:
    """Pub/sub over a Redis server, exposing redis-py's interface."""

    in_process = False  # publishes cross processes and may wait on the network

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

    @_translated
    def publish(self, channel: ChannelT, message: ChannelT) -> int:
        """Send ``message`` to ``channel``; return how many subscriptions received it."""
        # Checked here rather than by redis-py, which would also accept int and float:
        # both backends must accept and refuse the same payloads.
        require_bytes_or_str(channel)
        return int(self.client.publish(channel, require_bytes_or_str(message)))

    def pubsub(self, ignore_subscribe_messages: bool = False) -> RedisPubSub:
        """Return a redis-py ``PubSub`` on this broker's connection pool."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=ignore_subscribe_messages)
        with self._lock:
            self._pubsubs.add(pubsub)
        return RedisPubSub(pubsub)

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
