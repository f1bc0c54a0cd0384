"""One pub/sub suite, run against the in-memory broker and a real Redis.

Ported from redis-py's ``tests/test_pubsub.py`` (subscribe/unsubscribe bookkeeping,
``subscribed``, ``ignore_subscribe_messages``, timeouts, ``listen()``) and extended with
Redis glob semantics, so the memory broker is held to what Redis and redis-py really
do. Channel names carry a per-test uuid prefix. The Redis run uses a redis-server of the
module's own (the `own_redis` fixture), since other tests' servers subscribe to `*`.
"""

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from telentir.pubsub import Broker, DataError, Message, PubSub, escape_glob
from telentir.pubsub.memory import MemoryBroker
from telentir.pubsub.redis_backend import RedisBroker

from ..support import wait_until

pytestmark = pytest.mark.embedded_only("the brokers in process, against a redis-server of its own")

UNICODE = "uni" + chr(4456) + "code"

MakePubSub = Callable[..., PubSub]


@pytest.fixture(params=["memory", "redis"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The broker under test: in-memory, then a real Redis."""
    if request.param == "memory":
        instance: Broker = MemoryBroker()
    else:
        # A Redis of this module's own: servers of other tests (their hubs subscribe to `*`)
        # would otherwise receive the publishes these tests count.
        instance = RedisBroker(request.getfixturevalue("own_redis").url)
    yield instance
    instance.close()


@pytest.fixture
def prefix() -> str:
    """A channel prefix no other test (or test run) uses."""
    return f"telentir-test:{uuid.uuid4().hex}:"


@pytest.fixture
def make_pubsub(broker: Broker) -> Iterator[MakePubSub]:
    """Factory for PubSub objects that are all closed after the test."""
    made: list[PubSub] = []

    def make(ignore_subscribe_messages: bool = False) -> PubSub:
        pubsub = broker.pubsub(ignore_subscribe_messages=ignore_subscribe_messages)
        made.append(pubsub)
        return pubsub

    yield make
    for pubsub in made:
        pubsub.close()


def wait_for_message(pubsub: PubSub, timeout: float = 0.5, ignore_subscribe_messages: bool = False) -> Message | None:
    """redis-py's helper: poll get_message until something arrives or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        message = pubsub.get_message(ignore_subscribe_messages=ignore_subscribe_messages, timeout=0.01)
        if message is not None or time.monotonic() >= deadline:
            return message


def make_message(kind: str, channel: str | None, data: Any, pattern: str | None = None) -> Message:
    """The exact dict redis-py returns with decode_responses=True."""
    return {"type": kind, "pattern": pattern, "channel": channel, "data": data}


def subscribe_fns(pubsub: PubSub, kind: str) -> tuple[str, str, Callable[..., None], Callable[..., None]]:
    """(sub type, unsub type, sub function, unsub function) for channels or patterns."""
    if kind == "channel":
        return "subscribe", "unsubscribe", pubsub.subscribe, pubsub.unsubscribe
    return "psubscribe", "punsubscribe", pubsub.psubscribe, pubsub.punsubscribe


def keys_for(prefix: str, kind: str) -> list[str]:
    """Three channel names or patterns, one of them non-ASCII (as redis-py's tests use)."""
    if kind == "channel":
        return [prefix + "foo", prefix + "bar", prefix + UNICODE]
    return [prefix + "f*", prefix + "b*", prefix + "uni" + chr(4456) + "*"]


# --- subscribe / unsubscribe bookkeeping (redis-py TestPubSubSubscribeUnsubscribe) ---


@pytest.mark.parametrize("kind", ["channel", "pattern"])
def test_subscribe_unsubscribe_confirmations_count_up_and_down(make_pubsub: MakePubSub, prefix: str, kind: str) -> None:
    pubsub = make_pubsub()
    sub_type, unsub_type, sub, unsub = subscribe_fns(pubsub, kind)
    keys = keys_for(prefix, kind)
    for key in keys:
        assert sub(key) is None
    for i, key in enumerate(keys):
        assert wait_for_message(pubsub) == make_message(sub_type, key, i + 1)
    for key in keys:
        assert unsub(key) is None
    for i, key in enumerate(keys):
        assert wait_for_message(pubsub) == make_message(unsub_type, key, len(keys) - 1 - i)


@pytest.mark.parametrize("kind", ["channel", "pattern"])
def test_subscribed_property_follows_confirmations(make_pubsub: MakePubSub, prefix: str, kind: str) -> None:
    pubsub = make_pubsub()
    sub_type, unsub_type, sub, unsub = subscribe_fns(pubsub, kind)
    keys = keys_for(prefix, kind)
    assert pubsub.subscribed is False
    sub(keys[0])
    # Subscribed at once, before the confirmation is read.
    assert pubsub.subscribed is True
    assert wait_for_message(pubsub) == make_message(sub_type, keys[0], 1)
    unsub()
    # Still subscribed until the unsubscribe confirmation is read.
    assert pubsub.subscribed is True
    assert wait_for_message(pubsub) == make_message(unsub_type, keys[0], 0)
    assert pubsub.subscribed is False

    sub(keys[0])
    assert wait_for_message(pubsub) == make_message(sub_type, keys[0], 1)
    unsub()
    sub(keys[1])  # before reading the unsubscribe confirmation
    assert wait_for_message(pubsub) == make_message(unsub_type, keys[0], 0)
    assert pubsub.subscribed is True  # keys[1] is still subscribed
    assert wait_for_message(pubsub) == make_message(sub_type, keys[1], 1)
    unsub()
    assert pubsub.subscribed is True
    assert wait_for_message(pubsub) == make_message(unsub_type, keys[1], 0)
    assert pubsub.subscribed is False


def test_ignore_all_subscribe_messages_on_constructor(make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub(ignore_subscribe_messages=True)
    checks = [
        (pubsub.subscribe, prefix + "foo"),
        (pubsub.unsubscribe, prefix + "foo"),
        (pubsub.psubscribe, prefix + "f*"),
        (pubsub.punsubscribe, prefix + "f*"),
    ]
    assert pubsub.subscribed is False
    for func, name in checks:
        assert func(name) is None
        assert pubsub.subscribed is True
        assert wait_for_message(pubsub, timeout=0.1) is None
    assert pubsub.subscribed is False


def test_ignore_individual_subscribe_messages_on_get_message(make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub()
    checks = [
        (pubsub.subscribe, prefix + "foo"),
        (pubsub.unsubscribe, prefix + "foo"),
        (pubsub.psubscribe, prefix + "f*"),
        (pubsub.punsubscribe, prefix + "f*"),
    ]
    for func, name in checks:
        assert func(name) is None
        assert pubsub.subscribed is True
        assert wait_for_message(pubsub, timeout=0.1, ignore_subscribe_messages=True) is None
    assert pubsub.subscribed is False


def test_ignored_confirmations_do_not_hide_published_messages(
    broker: Broker, make_pubsub: MakePubSub, prefix: str
) -> None:
    pubsub = make_pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(prefix + "foo")
    # Reading (and dropping) the confirmation proves the server processed SUBSCRIBE.
    assert pubsub.get_message(timeout=1.0) is None
    assert broker.publish(prefix + "foo", "hello") == 1
    assert wait_for_message(pubsub) == make_message("message", prefix + "foo", "hello")


@pytest.mark.parametrize("unsubscribe_all", [False, True])
@pytest.mark.parametrize("kind", ["channel", "pattern"])
def test_sub_unsub_resub(make_pubsub: MakePubSub, prefix: str, kind: str, unsubscribe_all: bool) -> None:
    # redis-py issue #764: re-subscribing before reading the unsubscribe must stick.
    pubsub = make_pubsub()
    sub_type, unsub_type, sub, unsub = subscribe_fns(pubsub, kind)
    key = keys_for(prefix, kind)[0]
    sub(key)
    unsub() if unsubscribe_all else unsub(key)
    sub(key)
    assert pubsub.subscribed is True
    assert wait_for_message(pubsub) == make_message(sub_type, key, 1)
    assert wait_for_message(pubsub) == make_message(unsub_type, key, 0)
    assert wait_for_message(pubsub) == make_message(sub_type, key, 1)
    assert pubsub.subscribed is True
    assert list(pubsub.channels if kind == "channel" else pubsub.patterns) == [key]


def test_unsubscribe_without_arguments_drops_every_channel(make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub()
    pubsub.subscribe(prefix + "a", prefix + "b")
    pubsub.psubscribe(prefix + "p*")
    for expected in (1, 2, 3):
        assert wait_for_message(pubsub)["data"] == expected  # type: ignore[index]
    pubsub.unsubscribe()
    replies = [wait_for_message(pubsub), wait_for_message(pubsub)]
    # Redis walks a hash table, so the order of the two replies is unspecified.
    assert sorted(replies, key=lambda m: -m["data"]) in (  # type: ignore[index]
        [make_message("unsubscribe", prefix + "a", 2), make_message("unsubscribe", prefix + "b", 1)],
        [make_message("unsubscribe", prefix + "b", 2), make_message("unsubscribe", prefix + "a", 1)],
    )
    assert pubsub.channels == {}
    assert pubsub.subscribed is True  # the pattern is left
    pubsub.punsubscribe()
    assert wait_for_message(pubsub) == make_message("punsubscribe", prefix + "p*", 0)
    assert pubsub.patterns == {}
    assert pubsub.subscribed is False


def test_unsubscribe_all_with_nothing_subscribed_replies_with_nil_name(make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub()
    pubsub.unsubscribe()
    pubsub.punsubscribe()
    # Not subscribed, so get_message does not read the replies (redis-py behaviour)...
    assert pubsub.get_message(timeout=0.05) is None
    pubsub.subscribe(prefix + "a")
    # ...they come out, in order, once there is a subscription.
    assert wait_for_message(pubsub) == make_message("unsubscribe", None, 0)
    assert wait_for_message(pubsub) == make_message("punsubscribe", None, 0)
    assert wait_for_message(pubsub) == make_message("subscribe", prefix + "a", 1)


def test_repeated_and_unknown_names_keep_the_count(make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub()
    pubsub.subscribe(prefix + "a")
    pubsub.subscribe(prefix + "a")
    pubsub.unsubscribe(prefix + "never")
    pubsub.punsubscribe(prefix + "never*")
    assert wait_for_message(pubsub) == make_message("subscribe", prefix + "a", 1)
    assert wait_for_message(pubsub) == make_message("subscribe", prefix + "a", 1)
    assert wait_for_message(pubsub) == make_message("unsubscribe", prefix + "never", 1)
    assert wait_for_message(pubsub) == make_message("punsubscribe", prefix + "never*", 1)
    assert pubsub.channels == {prefix + "a": None}


# --- publishing (redis-py TestPubSubMessages, TestPubSubAutoDecoding) ---


def test_publish_without_subscribers_returns_zero(broker: Broker, prefix: str) -> None:
    assert broker.publish(prefix + "nobody", "hello") == 0


def test_published_message_to_channel(broker: Broker, make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub()
    pubsub.subscribe(prefix + "foo")
    assert wait_for_message(pubsub) == make_message("subscribe", prefix + "foo", 1)
    assert broker.publish(prefix + "foo", "test message") == 1
    assert wait_for_message(pubsub) == make_message("message", prefix + "foo", "test message")


def test_channel_and_pattern_subscriber_receives_twice(broker: Broker, make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub()
    pubsub.subscribe(prefix + "foo")
    pubsub.psubscribe(prefix + "f*")
    assert wait_for_message(pubsub) == make_message("subscribe", prefix + "foo", 1)
    assert wait_for_message(pubsub) == make_message("psubscribe", prefix + "f*", 2)
    assert broker.publish(prefix + "foo", "test message") == 2
    # Redis serves channel subscribers before pattern subscribers.
    assert wait_for_message(pubsub) == make_message("message", prefix + "foo", "test message")
    assert wait_for_message(pubsub) == make_message("pmessage", prefix + "foo", "test message", pattern=prefix + "f*")
    assert wait_for_message(pubsub, timeout=0.1) is None


def test_two_matching_patterns_deliver_two_pmessages(broker: Broker, make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(prefix + "f*", prefix + "fo?")
    assert wait_for_message(pubsub, timeout=0.1) is None  # drain both confirmations
    assert broker.publish(prefix + "foo", "x") == 2
    patterns = {wait_for_message(pubsub)["pattern"], wait_for_message(pubsub)["pattern"]}  # type: ignore[index]
    assert patterns == {prefix + "f*", prefix + "fo?"}


def test_two_subscribers_each_receive(broker: Broker, make_pubsub: MakePubSub, prefix: str) -> None:
    first, second = make_pubsub(), make_pubsub()
    for pubsub in (first, second):
        pubsub.subscribe(prefix + "foo")
        assert wait_for_message(pubsub) == make_message("subscribe", prefix + "foo", 1)
    assert broker.publish(prefix + "foo", "x") == 2
    for pubsub in (first, second):
        assert wait_for_message(pubsub) == make_message("message", prefix + "foo", "x")


def test_unicode_channel_pattern_and_data(broker: Broker, make_pubsub: MakePubSub, prefix: str) -> None:
    channel, pattern, data = prefix + UNICODE, prefix + "uni" + chr(4456) + "*", "abc" + chr(4458) + "123"
    pubsub = make_pubsub()
    pubsub.subscribe(channel)
    pubsub.psubscribe(pattern)
    assert wait_for_message(pubsub) == make_message("subscribe", channel, 1)
    assert wait_for_message(pubsub) == make_message("psubscribe", pattern, 2)
    assert broker.publish(channel, data) == 2
    assert wait_for_message(pubsub) == make_message("message", channel, data)
    assert wait_for_message(pubsub) == make_message("pmessage", channel, data, pattern=pattern)


def test_bytes_channel_and_payload_come_back_decoded(broker: Broker, make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub()
    pubsub.subscribe((prefix + "foo").encode())
    assert wait_for_message(pubsub) == make_message("subscribe", prefix + "foo", 1)
    assert pubsub.channels == {prefix + "foo": None}
    assert broker.publish((prefix + "foo").encode(), "é".encode()) == 1
    assert wait_for_message(pubsub) == make_message("message", prefix + "foo", "é")


@pytest.mark.parametrize("payload", [{"a": 1}, None, 42, 1.5, ["x"], True])
def test_non_string_payload_is_an_error(broker: Broker, prefix: str, payload: object) -> None:
    with pytest.raises(DataError):
        broker.publish(prefix + "foo", payload)  # type: ignore[arg-type]


def test_dict_payload_is_an_error_in_redis_py_too(broker: Broker, prefix: str) -> None:
    with pytest.raises(DataError, match="Invalid input of type: 'dict'"):
        broker.publish(prefix + "foo", {"a": 1})  # type: ignore[arg-type]
    if isinstance(broker, RedisBroker):
        # What our DataError stands in for: redis-py's own client refuses it too.
        with pytest.raises(redis.exceptions.DataError, match="Invalid input of type: 'dict'"):
            broker.client.publish(prefix + "foo", {"a": 1})  # type: ignore[arg-type]


def test_non_string_channel_is_an_error(broker: Broker) -> None:
    with pytest.raises(DataError):
        broker.publish({"a": 1}, "x")  # type: ignore[arg-type]


# --- get_message timeouts and blocking (redis-py TestPubSubTimeouts) ---


def test_get_message_when_never_subscribed_returns_none_after_timeout(make_pubsub: MakePubSub) -> None:
    pubsub = make_pubsub()
    assert pubsub.get_message() is None
    start = time.monotonic()
    assert pubsub.get_message(timeout=0.2) is None
    assert 0.15 <= time.monotonic() - start < 1.0


def test_get_message_with_timeout_returns_none_after_roughly_timeout(make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub()
    pubsub.subscribe(prefix + "foo")
    assert wait_for_message(pubsub) == make_message("subscribe", prefix + "foo", 1)
    start = time.monotonic()
    assert pubsub.get_message(timeout=0.25) is None
    assert 0.2 <= time.monotonic() - start < 1.0
    start = time.monotonic()
    assert pubsub.get_message(timeout=0.0) is None
    assert time.monotonic() - start < 0.1


def test_get_message_returns_as_soon_as_a_message_arrives(broker: Broker, make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub()
    pubsub.subscribe(prefix + "foo")
    assert wait_for_message(pubsub) == make_message("subscribe", prefix + "foo", 1)
    with ThreadPoolExecutor(max_workers=1) as pool:
        later = pool.submit(_publish_later, broker, prefix + "foo", "late", 0.2)
        start = time.monotonic()
        message = pubsub.get_message(timeout=5.0)
        elapsed = time.monotonic() - start
        assert later.result() == 1
    assert message == make_message("message", prefix + "foo", "late")
    assert 0.15 <= elapsed < 2.0


@pytest.mark.timeout(10)
def test_get_message_timeout_none_blocks_until_a_message_arrives(
    broker: Broker, make_pubsub: MakePubSub, prefix: str
) -> None:
    pubsub = make_pubsub()
    pubsub.subscribe(prefix + "foo")
    assert wait_for_message(pubsub) == make_message("subscribe", prefix + "foo", 1)
    with ThreadPoolExecutor(max_workers=1) as pool:
        later = pool.submit(_publish_later, broker, prefix + "foo", "woke", 0.3)
        start = time.monotonic()
        message = pubsub.get_message(timeout=None)
        elapsed = time.monotonic() - start
        assert later.result() == 1
    assert message == make_message("message", prefix + "foo", "woke")
    assert elapsed >= 0.25


@pytest.mark.timeout(10)
def test_get_message_waits_for_a_subscription_from_another_thread(make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub()

    def subscribe_later() -> None:
        time.sleep(0.2)  # the point: the reader is already waiting, with no subscription yet, when it comes
        pubsub.subscribe(prefix + "foo")

    with ThreadPoolExecutor(max_workers=1) as pool:
        done = pool.submit(subscribe_later)
        message = pubsub.get_message(timeout=3.0)
        done.result()
    assert message == make_message("subscribe", prefix + "foo", 1)


def _publish_later(broker: Broker, channel: str, data: str, delay: float) -> int:
    time.sleep(delay)  # the point: the reader has been blocked for `delay` seconds when the message comes
    return broker.publish(channel, data)


# --- listen() ---


@pytest.mark.timeout(10)
def test_listen_yields_until_nothing_is_subscribed(broker: Broker, make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub()
    pubsub.subscribe(prefix + "foo")
    stream = pubsub.listen()
    try:
        assert next(stream) == make_message("subscribe", prefix + "foo", 1)
        assert broker.publish(prefix + "foo", "one") == 1
        assert broker.publish(prefix + "foo", "two") == 1
        assert next(stream) == make_message("message", prefix + "foo", "one")
        assert next(stream) == make_message("message", prefix + "foo", "two")
        pubsub.unsubscribe(prefix + "foo")
        assert next(stream) == make_message("unsubscribe", prefix + "foo", 0)
        with pytest.raises(StopIteration):
            next(stream)
    finally:
        stream.close()


@pytest.mark.timeout(10)
def test_listen_honours_constructor_ignore_subscribe_messages(
    broker: Broker, make_pubsub: MakePubSub, prefix: str
) -> None:
    pubsub = make_pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(prefix + "foo")
    assert pubsub.get_message(timeout=1.0) is None  # the confirmation, dropped
    assert broker.publish(prefix + "foo", "one") == 1
    stream = pubsub.listen()
    try:
        assert next(stream) == make_message("message", prefix + "foo", "one")
    finally:
        stream.close()


# --- Redis glob semantics ---

# (pattern, channel, matches) -- both get the test prefix. Quirks were checked against
# a real Redis 7 server; see telentir/pubsub/glob.py.
GLOB_CASES = [
    ("h?llo", "hello", True),
    ("h?llo", "hllo", False),
    ("h?llo", "heello", False),
    ("h*llo", "hllo", True),
    ("h*llo", "heeeello", True),
    ("h*llo", "hello!", False),  # anchored at the end
    ("ello", "hello", False),  # anchored at the start
    ("Hello", "hello", False),  # case-sensitive
    ("*", "", True),  # the star matches the empty rest of "prefix"
    ("h[ae]llo", "hello", True),
    ("h[ae]llo", "hallo", True),
    ("h[ae]llo", "hillo", False),
    ("h[^e]llo", "hallo", True),
    ("h[^e]llo", "hello", False),
    ("h[a-c]llo", "hbllo", True),
    ("h[a-c]llo", "hdllo", False),
    ("h[c-a]llo", "hbllo", True),  # reversed range
    ("h!llo", "h!llo", True),  # "!" is not fnmatch's negation: literal
    ("h[!e]llo", "hallo", False),
    ("\\*", "*", True),
    ("\\*", "x", False),
    ("h\\?llo", "h?llo", True),
    ("h\\?llo", "hello", False),
    ("\\[x]", "[x]", True),
    ("[\\]]", "]", True),  # escaped "]" inside a class
    ("[\\^]", "^", True),
    ("\\h", "h", True),  # escaping a plain character
    ("a\\", "a\\", True),  # a trailing backslash is literal
    ("a[bc", "ab", True),  # unterminated class runs to the end
    ("a[bc", "a[bc", False),
    ("a[", "a[", False),  # a lone trailing "[" matches nothing
    ("a[^", "ax", True),
    ("[]a]", "a", False),  # empty class, then literal "a]"
    ("[a-]b", "]", True),  # "a-]" is a range ending at "]"
    ("[a-]b", "b", True),
    ("[a-]b", "-", False),
    ("caf?", "café", False),  # "?" is one byte; é is two in UTF-8
    ("caf??", "café", True),
    ("a:*", "a:b:c", True),  # ":" is not special
]


@pytest.mark.parametrize(("pattern", "channel", "matches"), GLOB_CASES)
def test_pattern_semantics_are_redis_globs(
    broker: Broker, make_pubsub: MakePubSub, prefix: str, pattern: str, channel: str, matches: bool
) -> None:
    pubsub = make_pubsub()
    pubsub.psubscribe(prefix + pattern)
    assert wait_for_message(pubsub) == make_message("psubscribe", prefix + pattern, 1)
    assert broker.publish(prefix + channel, "x") == int(matches)
    expected = make_message("pmessage", prefix + channel, "x", pattern=prefix + pattern)
    if matches:
        assert wait_for_message(pubsub) == expected


HOSTILE_VALUES = [
    ("*", "anything"),
    ("a?b", "axb"),
    ("[x]", "x"),
    ("\\", "\\\\"),
    (":", "::"),
    ("[^a]*?\\", "b"),
    ("[a-z]", "m"),
    ("é*", "éé"),
]


@pytest.mark.parametrize(("value", "near_miss"), HOSTILE_VALUES)
def test_escape_glob_matches_only_the_value_itself(
    broker: Broker, make_pubsub: MakePubSub, prefix: str, value: str, near_miss: str
) -> None:
    pattern = prefix + escape_glob(value)
    pubsub = make_pubsub()
    pubsub.psubscribe(pattern)
    assert wait_for_message(pubsub) == make_message("psubscribe", pattern, 1)
    assert broker.publish(prefix + near_miss, "miss") == 0
    assert broker.publish(prefix + value + "x", "miss") == 0
    assert broker.publish(prefix + value, "hit") == 1
    assert wait_for_message(pubsub) == make_message("pmessage", prefix + value, "hit", pattern=pattern)


# --- lifecycle ---


def test_context_manager_closes(broker: Broker, prefix: str) -> None:
    with broker.pubsub() as pubsub:
        pubsub.subscribe(prefix + "foo")
        pubsub.psubscribe(prefix + "f*")
        assert wait_for_message(pubsub) == make_message("subscribe", prefix + "foo", 1)
        assert broker.subscriber_count() == 1
    assert pubsub.channels == {}
    assert pubsub.patterns == {}
    assert pubsub.subscribed is False
    assert broker.subscriber_count() == 0
    # Redis notices the closed socket asynchronously.
    wait_until(lambda: broker.publish(prefix + "foo", "x") == 0, timeout=2.0, interval=0.01)


def test_subscriber_count_counts_subscribed_pubsubs(broker: Broker, make_pubsub: MakePubSub, prefix: str) -> None:
    first, second = make_pubsub(), make_pubsub()
    assert broker.subscriber_count() == 0
    first.subscribe(prefix + "a")
    second.psubscribe(prefix + "*")
    assert broker.subscriber_count() == 2
    first.close()
    assert broker.subscriber_count() == 1
    second.close()
    assert broker.subscriber_count() == 0


def test_closed_pubsub_can_subscribe_again(broker: Broker, make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub()
    pubsub.subscribe(prefix + "a")
    pubsub.close()
    pubsub.subscribe(prefix + "b")
    assert wait_for_message(pubsub) == make_message("subscribe", prefix + "b", 1)
    assert broker.publish(prefix + "b", "x") == 1
    assert wait_for_message(pubsub) == make_message("message", prefix + "b", "x")


def test_broker_meets_the_protocol_and_answers_ping(broker: Broker) -> None:
    assert isinstance(broker, Broker)
    assert broker.ping() is True


def test_subscribe_from_one_thread_publish_from_many(broker: Broker, make_pubsub: MakePubSub, prefix: str) -> None:
    pubsub = make_pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(prefix + "*")
    assert pubsub.get_message(timeout=1.0) is None
    barrier = threading.Barrier(4)

    def publish_some(worker: int) -> int:
        barrier.wait()
        return sum(broker.publish(f"{prefix}{worker}", str(n)) for n in range(25))

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert sum(pool.map(publish_some, range(4))) == 100
    received: dict[str, list[str]] = {}
    for _ in range(100):
        message = wait_for_message(pubsub)
        assert message is not None
        received.setdefault(message["channel"], []).append(message["data"])
    assert received == {f"{prefix}{w}": [str(n) for n in range(25)] for w in range(4)}
