"""The broker interface and its errors, shared by both backends (see the package docstring)."""

from collections.abc import Iterator
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

Message = dict[str, Any]
ChannelT = str | bytes


class BrokerError(Exception):
    """Any failure of a broker, whichever backend raised it."""


class BrokerUnavailable(BrokerError, ConnectionError):
    """The broker cannot be reached, or a subscription's connection was lost."""


class SubscriberDisconnected(BrokerUnavailable):
    """The broker dropped this subscriber, as Redis does past its output-buffer limit."""


class DataError(BrokerError, ValueError):
    """A channel or payload that is neither ``str`` nor ``bytes``."""


class PubSub(Protocol):
    """The part of redis-py's ``PubSub`` that both backends provide."""

    @property
    def channels(self) -> dict[Any, Any]: ...
    @property
    def patterns(self) -> dict[Any, Any]: ...
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
    """What the application needs from a broker, whichever backend is behind it.

    ``in_process``: publishes reach only subscribers of this process and never block, so
    they may be made inline on a request thread; a networked broker's may hang and cross
    processes.
    """

    in_process: bool

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
