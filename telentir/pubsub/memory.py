"""An in-process broker that behaves like Redis pub/sub as seen through redis-py.

Structure, mirroring a Redis server and its clients:

- :class:`MemoryBroker` is the server. It keeps, per channel and per pattern, an
  *immutable* set of subscriber mailboxes. ``publish`` holds the broker lock only to
  read two references; matching patterns and queueing messages happen outside it, so
  publishers never wait on one another's delivery work.
- ``_Mailbox`` is what the server keeps per client connection: its subscriptions and a
  bounded output buffer. A mailbox that would grow past ``max_queue`` is disconnected
  (its subscriptions dropped, its queue discarded), as Redis does when a subscriber
  exceeds ``client-output-buffer-limit pubsub``.
- :class:`MemoryPubSub` is redis-py's ``PubSub``: the client-side bookkeeping
  (``channels``, ``patterns``, ``subscribed``, ``ignore_subscribe_messages``) is a port
  of redis-py's, so the same tests pass against both.

Ordering: each publish is queued to every receiver before it returns, so messages from
one publisher arrive in the order published. Unlike Redis, two *concurrent* publishers
may be interleaved differently for different subscribers.
"""

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

from telentir.pubsub.base import (
    ChannelT,
    Message,
    SubscriberDisconnected,
    require_bytes_or_str,
)
from telentir.pubsub.glob import compile_glob

Name = str | bytes
# A message as Redis sends it -- (type, pattern, channel, data) -- already converted to
# the broker's output type, so one tuple can be shared by every receiver.
_Raw = tuple[str, Name | None, Name | None, Name | int]
_Output = Callable[[bytes], Name]
_Matcher = tuple[bytes, re.Pattern[str], frozenset["_Mailbox"]]
_OnOverflow = Callable[["_Mailbox", list[bytes], list[bytes]], None]

_PATTERN_KINDS = frozenset({"psubscribe", "punsubscribe", "pmessage"})
_OPEN, _CLOSED, _DISCONNECTED = "open", "closed", "disconnected"
_NOBODY: frozenset["_Mailbox"] = frozenset()


class _Mailbox:
    """What Redis keeps per subscriber connection: its subscriptions and output buffer."""

    def __init__(self, max_queue: int, on_overflow: _OnOverflow) -> None:
        self.max_queue = max_queue
        self._on_overflow = on_overflow
        self._ready = threading.Condition(threading.Lock())
        self._queue: deque[_Raw] = deque()
        # Dicts as ordered sets, so "unsubscribe from all" replies in a stable order.
        self._channels: dict[bytes, None] = {}
        self._patterns: dict[bytes, None] = {}
        self._state = _OPEN
        self._reason = ""
        # Set by MemoryPubSub.__del__, which must not take locks (see there).
        self.abandoned = False

    def subscribe(self, kind: str, names: list[bytes], output: _Output) -> list[bytes]:
        """Add subscriptions and queue their confirmations; return the names that are new."""
        with self._ready:
            self._raise_unless_open()
            table = self._table(kind)
            added = [name for name in dict.fromkeys(names) if name not in table]
            # Replies take queue space but never overflow it: they answer this
            # subscriber's own commands, so they cannot pile up behind its back.
            for name in names:
                table[name] = None
                self._queue.append((kind, None, output(name), self._count()))
            self._ready.notify_all()
            return added

    def unsubscribe(self, kind: str, names: list[bytes], output: _Output) -> list[bytes]:
        """Remove subscriptions (all if ``names`` is empty); return the names removed."""
        with self._ready:
            self._raise_unless_open()
            table = self._table(kind)
            targets = names or list(table)
            removed = [name for name in dict.fromkeys(targets) if name in table]
            for name in targets:
                table.pop(name, None)
                self._queue.append((kind, None, output(name), self._count()))
            if not targets:
                # Redis answers "unsubscribe from all" with a nil name when there was none.
                self._queue.append((kind, None, None, self._count()))
            self._ready.notify_all()
            return removed

    def deliver(self, kind: str, key: bytes, item: _Raw) -> bool:
        """Queue a published message if still subscribed to ``key``; say whether it was."""
        with self._ready:
            # Re-checked here because the publisher's snapshot may predate an unsubscribe.
            if self._state != _OPEN or key not in self._table(kind):
                return False
            if len(self._queue) < self.max_queue and not self.abandoned:
                self._queue.append(item)
                self._ready.notify()
                return True
            reason = f"fell more than {self.max_queue} messages behind"
            lost = self._drop(_DISCONNECTED, reason)
        self._on_overflow(self, *lost)  # outside our lock: the broker lock comes first
        return False

    def take(self, timeout: float | None) -> _Raw | None:
        """Pop the next message, waiting up to ``timeout`` seconds (``None``: forever)."""
        with self._ready:
            self._ready.wait_for(self._has_news, timeout)
            if self._state == _DISCONNECTED:
                raise SubscriberDisconnected(f"pub/sub subscriber dropped: {self._reason}")
            return self._queue.popleft() if self._queue else None

    def drop(self, state: str, reason: str = "") -> tuple[list[bytes], list[bytes]]:
        """End this connection; return the channels and patterns it was subscribed to."""
        with self._ready:
            return self._drop(state, reason)

    def is_subscribed(self) -> bool:
        """Whether any channel or pattern subscription is left."""
        with self._ready:
            return bool(self._channels or self._patterns)

    def _drop(self, state: str, reason: str) -> tuple[list[bytes], list[bytes]]:
        lost = (list(self._channels), list(self._patterns))
        if self._state == _OPEN:
            self._state, self._reason = state, reason
        self._channels.clear()
        self._patterns.clear()
        self._queue.clear()  # Redis discards the output buffer of a client it kills
        self._ready.notify_all()
        return lost

    def _has_news(self) -> bool:
        return bool(self._queue) or self._state != _OPEN

    def _count(self) -> int:
        return len(self._channels) + len(self._patterns)

    def _table(self, kind: str) -> dict[bytes, None]:
        return self._patterns if kind in _PATTERN_KINDS else self._channels

    def _raise_unless_open(self) -> None:
        if self._state != _OPEN:
            raise SubscriberDisconnected(f"pub/sub subscriber dropped: {self._reason or 'closed'}")


class MemoryBroker:
    """Thread-safe in-process pub/sub broker with redis-py's interface."""

    in_process = True  # publishes reach this process only, and never block

    def __init__(self, max_queue: int = 1000, decode_responses: bool = True) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.max_queue = max_queue
        self.decode_responses = decode_responses
        self._lock = threading.Lock()
        # Values are replaced, never mutated, so publish can use them after unlocking.
        self._channels: dict[bytes, frozenset[_Mailbox]] = {}
        self._patterns: dict[bytes, frozenset[_Mailbox]] = {}
        self._matchers: tuple[_Matcher, ...] = ()
        self._active: set[_Mailbox] = set()
        self._on_active: Callable[[bool], None] = lambda anyone: None
        self._announced = False  # what _on_active was last told

    def watch_subscribers(self, on_change: Callable[[bool], None]) -> None:
        """Tell `on_change` whether anyone is subscribed: now, then at each change.

        True comes before the first subscription takes effect (before its confirmation is
        queued), False once none is left; calls are made under the broker's lock, in order.
        """
        with self._lock:
            self._on_active = on_change
            self._announced = bool(self._active)
            on_change(self._announced)

    def publish(self, channel: ChannelT, message: ChannelT) -> int:
        """Send ``message`` to ``channel``; return how many subscriptions received it."""
        name = _encode(channel)
        data = self._output(require_bytes_or_str(message))
        with self._lock:
            direct = self._channels.get(name, _NOBODY)
            matchers = self._matchers
        out_channel = self._output(name)
        item: _Raw = ("message", None, out_channel, data)
        count = sum(box.deliver("message", name, item) for box in direct)
        # Redis matches bytes; latin-1 maps each byte to one character for compile_glob.
        text = name.decode("latin-1")
        for pattern, regex, boxes in matchers:
            if regex.match(text):
                item = ("pmessage", self._output(pattern), out_channel, data)
                count += sum(box.deliver("pmessage", pattern, item) for box in boxes)
        return count

    def pubsub(self, ignore_subscribe_messages: bool = False) -> "MemoryPubSub":
        """Return a new subscriber object, like ``redis.Redis.pubsub()``."""
        return MemoryPubSub(self, ignore_subscribe_messages=ignore_subscribe_messages)

    def ping(self) -> bool:
        """Report the broker as reachable (it always is)."""
        return True

    def subscriber_count(self) -> int:
        """Return the number of live subscribers holding at least one subscription."""
        with self._lock:
            for box in [box for box in self._active if box.abandoned]:
                self._forget(box, *box.drop(_DISCONNECTED, "abandoned"))
            return len(self._active)

    def close(self) -> None:
        """Disconnect every subscriber (their next read raises); the broker stays usable."""
        with self._lock:
            for box in self._active:
                box.drop(_DISCONNECTED, "broker closed")
            self._channels, self._patterns, self._matchers = {}, {}, ()
            self._active = set()
            self._announce(False)

    def _connect(self) -> _Mailbox:
        return _Mailbox(self.max_queue, self._evict)

    def _subscribe(self, box: _Mailbox, kind: str, names: list[bytes]) -> None:
        with self._lock:
            self._announce(True)  # first: whoever publishes after the confirmation must know
            try:
                for name in box.subscribe(kind, names, self._output):
                    self._add(kind, name, box)
                self._active.add(box)
                self._rebuild_matchers(kind)
            finally:
                self._announce(bool(self._active))  # False again if a closed box refused

    def _unsubscribe(self, box: _Mailbox, kind: str, names: list[bytes]) -> None:
        with self._lock:
            for name in box.unsubscribe(kind, names, self._output):
                self._discard(kind, name, box)
            if not box.is_subscribed():
                self._active.discard(box)
            self._rebuild_matchers(kind)
            self._announce(bool(self._active))

    def _release(self, box: _Mailbox) -> None:
        with self._lock:
            self._forget(box, *box.drop(_CLOSED))

    def _evict(self, box: _Mailbox, channels: list[bytes], patterns: list[bytes]) -> None:
        with self._lock:
            self._forget(box, channels, patterns)

    def _forget(self, box: _Mailbox, channels: list[bytes], patterns: list[bytes]) -> None:
        for name in channels:
            self._discard("subscribe", name, box)
        for name in patterns:
            self._discard("psubscribe", name, box)
        self._active.discard(box)
        if patterns:
            self._rebuild_matchers("psubscribe")
        self._announce(bool(self._active))

    def _announce(self, anyone: bool) -> None:
        """Tell the watcher when whether anyone is subscribed changed (under the broker's lock)."""
        if anyone != self._announced:
            self._announced = anyone
            self._on_active(anyone)

    def _add(self, kind: str, name: bytes, box: _Mailbox) -> None:
        table = self._patterns if kind in _PATTERN_KINDS else self._channels
        table[name] = table.get(name, _NOBODY) | {box}

    def _discard(self, kind: str, name: bytes, box: _Mailbox) -> None:
        table = self._patterns if kind in _PATTERN_KINDS else self._channels
        rest = table.get(name, _NOBODY) - {box}
        if rest:
            table[name] = rest
        else:
            table.pop(name, None)

    def _rebuild_matchers(self, kind: str) -> None:
        if kind in _PATTERN_KINDS:
            self._matchers = tuple(
                (pattern, compile_glob(pattern.decode("latin-1")), boxes) for pattern, boxes in self._patterns.items()
            )

    def _output(self, value: str | bytes) -> Name:
        """Convert to what redis-py would return: str if decode_responses, else bytes."""
        if self.decode_responses:
            return value if isinstance(value, str) else value.decode()
        return value.encode() if isinstance(value, str) else value


class MemoryPubSub:
    """redis-py's ``PubSub``, served by a :class:`MemoryBroker` instead of a socket."""

    PUBLISH_MESSAGE_TYPES = ("message", "pmessage")
    UNSUBSCRIBE_MESSAGE_TYPES = ("unsubscribe", "punsubscribe")

    def __init__(self, broker: MemoryBroker, ignore_subscribe_messages: bool = False) -> None:
        self._broker = broker
        self.ignore_subscribe_messages = ignore_subscribe_messages
        self.subscribed_event = threading.Event()
        self._box: _Mailbox | None = None
        self.reset()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.reset()

    def __del__(self) -> None:
        # redis-py closes the socket of a forgotten PubSub; we flag the mailbox instead.
        # Only a flag: a finalizer may run inside any allocation, even under a lock.
        box = getattr(self, "_box", None)
        if box is not None:
            box.abandoned = True

    def reset(self) -> None:
        """Drop all subscriptions and queued messages; the object stays reusable."""
        # Cleared before waking readers, so a woken listen() sees it and stops.
        self.subscribed_event.clear()
        box, self._box = self._box, None
        self.channels: dict[Name, None] = {}
        self.patterns: dict[Name, None] = {}
        self.pending_unsubscribe_channels: set[Name] = set()
        self.pending_unsubscribe_patterns: set[Name] = set()
        if box is not None:
            self._broker._release(box)

    def close(self) -> None:
        """Same as :meth:`reset`, as in redis-py."""
        self.reset()

    @property
    def subscribed(self) -> bool:
        """Whether there are subscriptions, counting those whose removal is unread."""
        return self.subscribed_event.is_set()

    def subscribe(self, *channels: ChannelT) -> None:
        """Subscribe to channels."""
        self._subscribe("subscribe", channels)

    def psubscribe(self, *patterns: ChannelT) -> None:
        """Subscribe to Redis glob patterns."""
        self._subscribe("psubscribe", patterns)

    def unsubscribe(self, *channels: ChannelT) -> None:
        """Unsubscribe from channels; from all of them when none is given."""
        self._unsubscribe("unsubscribe", channels)

    def punsubscribe(self, *patterns: ChannelT) -> None:
        """Unsubscribe from patterns; from all of them when none is given."""
        self._unsubscribe("punsubscribe", patterns)

    def get_message(self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0) -> Message | None:
        """Return the next message, or None if none arrives within ``timeout`` seconds."""
        if not self.subscribed:
            # As redis-py: wait for another thread to subscribe, then spend what is left.
            start = time.monotonic()
            if not self.subscribed_event.wait(timeout):
                return None
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - start))
        response = self._read(timeout)
        if response is None:
            return None
        return self.handle_message(response, ignore_subscribe_messages)

    def listen(self) -> Iterator[Message]:
        """Yield messages until no subscription is left."""
        while self.subscribed:
            response = self._read(None)
            message = self.handle_message(response) if response is not None else None
            if message is not None:
                yield message

    def handle_message(self, response: _Raw, ignore_subscribe_messages: bool = False) -> Message | None:
        """Turn a raw reply into a message dict, updating local state as redis-py does."""
        kind, pattern, channel, data = response
        if kind in self.UNSUBSCRIBE_MESSAGE_TYPES:
            self._confirm_unsubscribe(kind, channel)
        ignore = ignore_subscribe_messages or self.ignore_subscribe_messages
        if ignore and kind not in self.PUBLISH_MESSAGE_TYPES:
            return None
        return {"type": kind, "pattern": pattern, "channel": channel, "data": data}

    def _subscribe(self, kind: str, names: tuple[ChannelT, ...]) -> None:
        if not names:
            raise TypeError(f"{kind}() needs at least one name")
        keys = [_encode(name) for name in names]
        self._broker._subscribe(self._connection(), kind, keys)
        # As redis-py: local state changes after the command went out, and "subscribed"
        # flips at once, before the confirmation is read.
        new = dict.fromkeys(map(self._broker._output, keys))
        table, pending = self._local_state(kind)
        table.update(new)
        self.subscribed_event.set()
        pending.difference_update(new)

    def _unsubscribe(self, kind: str, names: tuple[ChannelT, ...]) -> None:
        keys = [_encode(name) for name in names]
        table, pending = self._local_state(kind)
        pending.update(map(self._broker._output, keys) if keys else table)
        self._broker._unsubscribe(self._connection(), kind, keys)

    def _confirm_unsubscribe(self, kind: str, name: Name | None) -> None:
        # Local state only forgets a name once the server's confirmation is read, so that
        # "subscribed" stays true while messages may still be in flight.
        table, pending = self._local_state(kind)
        if name in pending:
            pending.discard(name)
            table.pop(name, None)
        if not self.channels and not self.patterns:
            self.subscribed_event.clear()

    def _local_state(self, kind: str) -> tuple[dict[Name, None], set[Name]]:
        if kind in _PATTERN_KINDS:
            return self.patterns, self.pending_unsubscribe_patterns
        return self.channels, self.pending_unsubscribe_channels

    def _connection(self) -> _Mailbox:
        if self._box is None:
            self._box = self._broker._connect()
        return self._box

    def _read(self, timeout: float | None) -> _Raw | None:
        box = self._box
        return None if box is None else box.take(timeout)


def _encode(value: object) -> bytes:
    """Channel and pattern names as Redis stores them: bytes, UTF-8 for str."""
    checked = require_bytes_or_str(value)
    return checked.encode() if isinstance(checked, str) else checked
