"""Publish/subscribe brokers with redis-py's interface.

The event table in the database is the truth; the broker is only the doorbell. A stream
learns from the broker *that* something happened and reads *what* happened from the
table, so a lost or dropped notification costs a re-read, never data.

Both backends speak redis-py's ``PubSub`` dialect -- ``publish``/``pubsub()``,
``subscribe``/``psubscribe``, ``get_message(timeout=...)``, ``listen()``, message dicts
with ``type``/``pattern``/``channel``/``data`` -- so the code above is backend-agnostic
and the in-memory broker can be held to redis-py's own tests
(``tests/test_pubsub_conformance.py`` runs the same suite against both):

- ``memory://[?max_queue=N]``: :class:`~telentir.pubsub.memory.MemoryBroker`, for a
  single process (tests, development, one gunicorn worker).
- ``redis://``, ``rediss://``, ``unix://``: :class:`~telentir.pubsub.redis_backend.RedisBroker`,
  a thin wrapper whose ``pubsub()`` returns redis-py's own ``PubSub``.

Errors::

    ValueError
     └── DataError               payload or channel is not str/bytes
    ConnectionError
     └── SubscriberDisconnected  a memory subscriber fell max_queue messages behind
"""

from collections.abc import Iterator
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable
from urllib.parse import parse_qs, urlsplit

from telentir.pubsub.glob import compile_glob, escape_glob

__all__ = [
    "Broker",
    "ChannelT",
    "DataError",
    "Message",
    "PubSub",
    "SubscriberDisconnected",
    "compile_glob",
    "create_broker",
    "escape_glob",
]

Message = dict[str, Any]
ChannelT = str | bytes

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


class DataError(ValueError):
    """A channel or payload that is neither ``str`` nor ``bytes``."""


class SubscriberDisconnected(ConnectionError):
    """The broker dropped this subscriber, as Redis does past its output-buffer limit."""


class PubSub(Protocol):
    """The part of redis-py's ``PubSub`` that both backends provide."""

    channels: dict[Any, Any]
    patterns: dict[Any, Any]

    @property
    def subscribed(self) -> bool: ...
    def subscribe(self, *channels: ChannelT) -> None: ...
    def psubscribe(self, *patterns: ChannelT) -> None: ...
    def unsubscribe(self, *channels: ChannelT) -> None: ...
    def punsubscribe(self, *patterns: ChannelT) -> None: ...
    def get_message(self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0) -> Message | None: ...
    def listen(self) -> Iterator[Message]: ...
    def close(self) -> None: ...
    def reset(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class Broker(Protocol):
    """What the application needs from a broker, whichever backend is behind it."""

    def publish(self, channel: ChannelT, message: ChannelT) -> int: ...
    def pubsub(self, ignore_subscribe_messages: bool = False) -> PubSub: ...
    def ping(self) -> bool: ...
    def subscriber_count(self) -> int: ...
    def close(self) -> None: ...


def require_bytes_or_str(value: object) -> str | bytes:
    """Return ``value`` if it is ``str`` or ``bytes``, else raise :class:`DataError`."""
    if isinstance(value, (str, bytes)):
        return value
    # Same wording as redis-py's Encoder, so the two backends fail alike.
    raise DataError(f"Invalid input of type: '{type(value).__name__}'. Convert to a bytes or string first.")


def create_broker(url: str) -> Broker:
    """Build the broker for ``url``: ``memory://``, ``redis://``, ``rediss://`` or ``unix://``."""
    scheme = urlsplit(url).scheme
    # Imported here so that a memory-only deployment never imports redis, and so that
    # the backends can import the errors above without a circular import.
    if scheme == "memory":
        from telentir.pubsub.memory import MemoryBroker

        return MemoryBroker(max_queue=_parse_memory_url(url))
    if scheme in _REDIS_SCHEMES:
        from telentir.pubsub.redis_backend import RedisBroker

        return RedisBroker(url)
    # Only the scheme is echoed: the URL may carry a password.
    raise ValueError(f"unsupported broker URL scheme {scheme!r}: expected memory://, redis://, rediss:// or unix://")


def _parse_memory_url(url: str) -> int:
    """Return ``max_queue`` from ``memory://[?max_queue=N]``; reject anything else."""
    parts = urlsplit(url)
    if parts.netloc or parts.path or parts.fragment:
        raise ValueError("a memory broker URL takes no host or path: memory://[?max_queue=N]")
    query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    unknown = set(query) - {"max_queue"}
    if unknown:
        raise ValueError(f"unknown memory broker option(s): {', '.join(sorted(unknown))}")
    values = query.get("max_queue", ["1000"])
    value = values[0] if len(values) == 1 else ""
    if not (value.isascii() and value.isdigit() and int(value) >= 1):
        raise ValueError("max_queue must be a single positive integer")
    return int(value)
