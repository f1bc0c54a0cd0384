"""Behaviour only the in-memory broker has: bounded queues, threads, URLs, decoding."""

import gc
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from telentir.pubsub import (
    Broker,
    DataError,
    SubscriberDisconnected,
    compile_glob,
    create_broker,
    escape_glob,
    memory,
)
from telentir.pubsub.memory import MemoryBroker, MemoryPubSub
from telentir.pubsub.redis_backend import RedisBroker


@pytest.fixture
def broker() -> Iterator[MemoryBroker]:
    """A memory broker whose subscribers may fall at most three messages behind."""
    instance = MemoryBroker(max_queue=3)
    yield instance
    instance.close()


def subscribed(broker: MemoryBroker, *channels: str) -> MemoryPubSub:
    """A PubSub subscribed to ``channels``, confirmations already read."""
    pubsub = broker.pubsub()
    pubsub.subscribe(*channels)
    for _ in channels:
        assert pubsub.get_message()["type"] == "subscribe"  # type: ignore[index]
    return pubsub


# --- slow consumers ---


def test_a_consumer_may_fall_exactly_max_queue_behind(broker: MemoryBroker) -> None:
    with subscribed(broker, "room") as pubsub:
        assert [broker.publish("room", str(n)) for n in range(3)] == [1, 1, 1]
        assert [pubsub.get_message()["data"] for _ in range(3)] == ["0", "1", "2"]  # type: ignore[index]
        assert broker.publish("room", "3") == 1


def test_slow_consumer_is_disconnected_and_others_are_not(broker: MemoryBroker) -> None:
    slow, fast = subscribed(broker, "room"), subscribed(broker, "room")
    try:
        received = []
        for n in range(6):
            assert broker.publish("room", str(n)) == (2 if n < 3 else 1)
            received.append(fast.get_message()["data"])  # type: ignore[index]
        assert received == ["0", "1", "2", "3", "4", "5"]
        assert broker.subscriber_count() == 1
        with pytest.raises(SubscriberDisconnected, match="fell more than 3 messages behind"):
            slow.get_message()
        # Every later read and command fails too, until the PubSub is reset.
        with pytest.raises(ConnectionError):
            slow.get_message(timeout=None)
        with pytest.raises(SubscriberDisconnected):
            slow.subscribe("other")
        with pytest.raises(SubscriberDisconnected):
            next(slow.listen())
    finally:
        slow.close()
        fast.close()


def test_a_disconnected_pubsub_is_usable_after_reset(broker: MemoryBroker) -> None:
    with subscribed(broker, "room") as pubsub:
        for n in range(4):
            broker.publish("room", str(n))
        pubsub.reset()
        assert pubsub.subscribed is False
        pubsub.subscribe("room")
        assert pubsub.get_message() == {"type": "subscribe", "pattern": None, "channel": "room", "data": 1}
        assert broker.publish("room", "again") == 1
        assert pubsub.get_message()["data"] == "again"  # type: ignore[index]


def test_pattern_subscribers_are_bounded_too(broker: MemoryBroker) -> None:
    pubsub = broker.pubsub()
    pubsub.psubscribe("r*")
    # The unread psubscribe confirmation takes one of the three places.
    assert [broker.publish("room", "x") for _ in range(5)] == [1, 1, 0, 0, 0]
    assert broker.subscriber_count() == 0
    with pytest.raises(SubscriberDisconnected):
        pubsub.get_message()
    pubsub.close()


def test_broker_close_disconnects_a_blocked_reader(broker: MemoryBroker) -> None:
    pubsub = subscribed(broker, "room")
    with ThreadPoolExecutor(max_workers=1) as pool:
        reader = pool.submit(pubsub.get_message, timeout=None)
        time.sleep(0.1)  # time to block inside get_message: a waiting reader is not observable from outside
        broker.close()
        with pytest.raises(SubscriberDisconnected, match="broker closed"):
            reader.result(timeout=2)
    assert broker.subscriber_count() == 0
    assert broker.publish("room", "x") == 0
    pubsub.close()


def test_pubsub_close_wakes_a_blocked_listen(broker: MemoryBroker) -> None:
    pubsub = subscribed(broker, "room")
    with ThreadPoolExecutor(max_workers=1) as pool:
        reader = pool.submit(lambda: list(pubsub.listen()))
        time.sleep(0.1)  # time to block inside listen(): a waiting reader is not observable from outside
        pubsub.close()
        assert reader.result(timeout=2) == []


# --- subscription bookkeeping ---


def test_close_frees_the_subscription(broker: MemoryBroker) -> None:
    pubsub = subscribed(broker, "a", "b")
    pubsub.psubscribe("c*")
    assert broker.subscriber_count() == 1
    assert broker.publish("a", "x") == 1
    assert broker.publish("cat", "x") == 1
    pubsub.close()
    assert broker.subscriber_count() == 0
    assert broker.publish("a", "x") == 0
    assert broker.publish("cat", "x") == 0


def test_unsubscribing_everything_frees_the_subscription(broker: MemoryBroker) -> None:
    with subscribed(broker, "a") as pubsub:
        pubsub.unsubscribe()
        assert broker.subscriber_count() == 0
        assert broker.publish("a", "x") == 0


def test_a_forgotten_pubsub_stops_receiving(broker: MemoryBroker) -> None:
    pubsub = subscribed(broker, "room")
    del pubsub
    gc.collect()
    assert broker.publish("room", "x") == 0
    assert broker.subscriber_count() == 0


def test_subscribe_needs_a_name(broker: MemoryBroker) -> None:
    with broker.pubsub() as pubsub, pytest.raises(TypeError):
        pubsub.subscribe()


def test_decode_responses_false_returns_bytes() -> None:
    broker = MemoryBroker(decode_responses=False)
    with broker.pubsub() as pubsub:
        pubsub.subscribe("room")
        pubsub.psubscribe("r*")
        assert pubsub.get_message() == {"type": "subscribe", "pattern": None, "channel": b"room", "data": 1}
        assert pubsub.get_message() == {"type": "psubscribe", "pattern": None, "channel": b"r*", "data": 2}
        assert pubsub.channels == {b"room": None}
        assert broker.publish("room", b"\xff\x00") == 2
        assert pubsub.get_message() == {"type": "message", "pattern": None, "channel": b"room", "data": b"\xff\x00"}
        assert pubsub.get_message() == {"type": "pmessage", "pattern": b"r*", "channel": b"room", "data": b"\xff\x00"}
    broker.close()


def test_max_queue_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        MemoryBroker(max_queue=0)


# --- threads ---


@pytest.mark.timeout(30)
def test_concurrent_publishers_and_subscribers_lose_and_reorder_nothing() -> None:
    broker = MemoryBroker(max_queue=100_000)
    publishers, per_publisher = 4, 300
    # (pubsub, copies of each message it should get)
    stable = [broker.pubsub(ignore_subscribe_messages=True) for _ in range(4)]
    stable[0].subscribe("room")
    stable[1].subscribe("room")
    stable[2].psubscribe("ro*")
    stable[3].subscribe("room")
    stable[3].psubscribe("r[o]om")
    copies = [1, 1, 1, 2]
    stop = threading.Event()
    barrier = threading.Barrier(publishers + 2)

    def publish(worker: int) -> int:
        barrier.wait()
        return sum(broker.publish("room", f"{worker}:{n}") for n in range(per_publisher))

    def churn() -> int:
        # Subscribers coming and going while messages flow must not corrupt anything.
        barrier.wait()
        received = 0
        while not stop.is_set():
            with broker.pubsub() as pubsub:
                pubsub.subscribe("room")
                pubsub.psubscribe("r*")
                pubsub.unsubscribe()
                pubsub.punsubscribe()
                kinds = [message["type"] for message in pubsub.listen()]
                # As in Redis, nothing arrives for a name after its unsubscribe reply.
                assert "message" not in kinds[kinds.index("unsubscribe") :]
                assert kinds[-1] == "punsubscribe"
                pubsub.subscribe("elsewhere")
                assert pubsub.get_message()["channel"] == "elsewhere"  # type: ignore[index]
                received += kinds.count("message") + kinds.count("pmessage")
        return received

    with ThreadPoolExecutor(max_workers=publishers + 2) as pool:
        churners = [pool.submit(churn) for _ in range(2)]
        published = sum(pool.map(publish, range(publishers)))
        stop.set()
        churned = sum(future.result(timeout=10) for future in churners)

    total = publishers * per_publisher
    received = 0
    for pubsub, n_copies in zip(stable, copies, strict=True):
        # Two more reads than messages: the ignored confirmations read as None.
        raw = [pubsub.get_message() for _ in range(total * n_copies + 2)]
        messages = [message for message in raw if message is not None]
        assert len(messages) == total * n_copies
        assert pubsub.get_message() is None
        received += len(messages)
        _assert_in_publisher_order(messages, publishers, per_publisher)
        pubsub.close()
    # Every delivery publish() counted was received by someone, and nothing more.
    assert published == received + churned
    assert broker.subscriber_count() == 0
    broker.close()


def test_a_publish_racing_an_unsubscribe_delivers_nothing_after_the_reply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Freeze a publish between its snapshot of the subscribers and its delivery (inside
    # pattern matching), unsubscribe meanwhile, then let the publish finish.
    matching, release = threading.Event(), threading.Event()

    class GatedMatcher:
        def match(self, text: str) -> bool:
            matching.set()
            return release.wait(5)

    monkeypatch.setattr(memory, "compile_glob", lambda pattern: GatedMatcher())
    broker = MemoryBroker()
    with broker.pubsub() as pubsub, ThreadPoolExecutor(max_workers=1) as pool:
        pubsub.psubscribe("r*")
        assert pubsub.get_message()["type"] == "psubscribe"  # type: ignore[index]
        count = pool.submit(broker.publish, "room", "late")
        assert matching.wait(5)
        pubsub.punsubscribe("r*")
        assert pubsub.get_message() == {"type": "punsubscribe", "pattern": None, "channel": "r*", "data": 0}
        release.set()
        assert count.result(timeout=5) == 0
        pubsub.subscribe("elsewhere")
        assert pubsub.get_message()["channel"] == "elsewhere"  # type: ignore[index]
    broker.close()


def _assert_in_publisher_order(messages: list[dict], publishers: int, per_publisher: int) -> None:
    sequences: dict[tuple[str, str], list[int]] = defaultdict(list)
    for message in messages:
        worker, n = message["data"].split(":")
        sequences[message["type"], worker].append(int(n))
    for sequence in sequences.values():
        assert sequence == list(range(per_publisher))
    assert len(sequences) * per_publisher == len(messages)


@pytest.mark.timeout(30)
def test_threads_each_with_their_own_channel_get_exact_counts() -> None:
    broker = MemoryBroker()
    barrier = threading.Barrier(8)

    def subscribe_publish_read(worker: int) -> list[str]:
        barrier.wait()
        with broker.pubsub(ignore_subscribe_messages=True) as pubsub:
            pubsub.subscribe(f"own:{worker}")
            assert pubsub.get_message() is None  # the confirmation, dropped
            assert [broker.publish(f"own:{worker}", str(n)) for n in range(200)] == [1] * 200
            return [pubsub.get_message()["data"] for _ in range(200)]  # type: ignore[index]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(subscribe_publish_read, range(8)))
    assert results == [[str(n) for n in range(200)]] * 8
    assert broker.subscriber_count() == 0
    broker.close()


# --- globs ---


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("*", "", False),  # Redis never matches a non-empty pattern against ""
        ("", "", True),
        ("", "a", False),
        ("*", "a\nb", True),  # channel names may hold newlines
        ("a?c", "a\nc", True),
        ("a**b", "ab", True),
        ("[[]", "[", True),
        ("[a&&b]", "&", True),  # Python set-operation syntax stays literal
        ("[a~~b]", "~", True),
        ("[--0]", "/", True),  # a range from "-" to "0"
        ("[\\", "\\", True),  # unterminated class holding a literal backslash
    ],
)
def test_compile_glob_edge_cases(pattern: str, text: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).match(text)) is matches


def test_compile_glob_is_cached_and_anchored() -> None:
    assert compile_glob("a*") is compile_glob("a*")
    assert compile_glob("b").search("abc") is None


def test_escape_glob_escapes_exactly_the_metacharacters() -> None:
    assert escape_glob("a*b?c[d]e\\f:g^h-i") == "a\\*b\\?c\\[d\\]e\\\\f:g^h-i"
    for value in ["*", "a?b", "[x]", "\\", ":", "[^a-z]*"]:
        assert compile_glob(escape_glob(value)).match(value)
        assert not compile_glob(escape_glob(value)).match(value + "x")


# --- create_broker ---


def test_create_broker_memory() -> None:
    broker = create_broker("memory://")
    assert isinstance(broker, MemoryBroker)
    assert isinstance(broker, Broker)
    assert broker.max_queue == 1000
    broker.close()


def test_create_broker_memory_with_max_queue() -> None:
    broker = create_broker("memory://?max_queue=5")
    assert isinstance(broker, MemoryBroker)
    assert broker.max_queue == 5
    broker.close()


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://user:pw@example.invalid:6380/1", "unix:///tmp/redis.sock?db=2"]
)
def test_create_broker_redis_urls(url: str) -> None:
    broker = create_broker(url)  # redis-py connects lazily: nothing is dialled here
    assert isinstance(broker, RedisBroker)
    assert isinstance(broker, Broker)
    broker.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "unsupported broker URL scheme ''"),
        ("http://localhost", "unsupported broker URL scheme 'http'"),
        ("memory", "unsupported broker URL scheme ''"),
        ("memory://host", "no host or path"),
        ("memory:///path", "no host or path"),
        ("memory://?max_queue=0", "positive integer"),
        ("memory://?max_queue=-1", "positive integer"),
        ("memory://?max_queue=abc", "positive integer"),
        ("memory://?max_queue=1&max_queue=2", "positive integer"),
        ("memory://?max_queue=", "positive integer"),
        ("memory://?size=5", "unknown memory broker option"),
    ],
)
def test_create_broker_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        create_broker(url)


def test_create_broker_error_does_not_echo_credentials() -> None:
    with pytest.raises(ValueError) as info:
        create_broker("amqp://user:s3cret@host/")
    assert "s3cret" not in str(info.value)


def test_errors_are_the_documented_kinds() -> None:
    assert issubclass(DataError, ValueError)
    assert issubclass(SubscriberDisconnected, ConnectionError)
