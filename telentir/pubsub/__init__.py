"""Publish/subscribe brokers with redis-py's interface.

The event table in the database is the truth; the broker is only the doorbell. A stream
learns from the broker *that* something happened and reads *what* happened from the
table, so a lost or dropped notification costs a re-read, never data.

Both backends speak redis-py's ``PubSub`` dialect -- ``publish``/``pubsub()``,
``subscribe``/``psubscribe``, ``get_message(timeout=...)``, ``listen()``, message dicts
with ``type``/``pattern``/``channel``/``data`` -- so the code above is backend-agnostic
and the in-memory broker can be held to redis-py's own tests
(``tests/events/test_pubsub_conformance.py`` runs the same suite against both):

- ``memory://[?max_queue=N]``: :class:`~telentir.pubsub.memory.MemoryBroker`, for a
  single process (tests, development, one gunicorn worker).
- ``redis://``, ``rediss://``, ``unix://``: :class:`~telentir.pubsub.redis_backend.RedisBroker`,
  whose subscriptions are redis-py's own ``PubSub`` behind a thin error-translating wrapper.

Nothing outside this package imports ``redis`` or names a backend class: callers catch
:class:`BrokerError` and ask a broker what it can do through its capability flag
(``in_process``). A memory-only deployment never imports ``redis`` at all.

Errors::

    BrokerError
     ├── BrokerUnavailable (also a ConnectionError)  the broker cannot be reached, or the
     │    │                                          connection was lost mid-subscription
     │    └── SubscriberDisconnected                 a memory subscriber fell max_queue
     │                                               messages behind
     └── DataError (also a ValueError)               payload or channel is not str/bytes
"""

from urllib.parse import parse_qs, urlsplit

from telentir.pubsub.base import (
    Broker,
    BrokerError,
    BrokerUnavailable,
    ChannelT,
    DataError,
    Message,
    PubSub,
    SubscriberDisconnected,
    require_bytes_or_str,
)
from telentir.pubsub.glob import compile_glob, escape_glob

__all__ = [
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "ChannelT",
    "DataError",
    "Message",
    "PubSub",
    "SubscriberDisconnected",
    "compile_glob",
    "create_broker",
    "escape_glob",
    "require_bytes_or_str",
]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def create_broker(url: str) -> Broker:
    """Build the broker for ``url``: ``memory://``, ``redis://``, ``rediss://`` or ``unix://``."""
    scheme = urlsplit(url).scheme
    # Imported here so that a memory-only deployment never imports redis.
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
