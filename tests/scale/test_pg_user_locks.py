"""PostgreSQL's two-level write locks: users write side by side, one user in order, cluster-wide writes alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from telentir.services import events
from telentir.storage.db import Transaction
from telentir.storage.postgres import PostgresDatabase

WAIT = 10.0  # seconds: what "does not block" may take at most on a loaded box
BLOCKED = 0.5  # seconds a blocked write is watched still waiting


@pytest.fixture
def other_node(pg: PostgresDatabase) -> Iterator[PostgresDatabase]:
    """A second node on the same database (its own pool and in-process queues)."""
    node = PostgresDatabase(pg.url, pool_size=4)
    yield node
    node.close()


def add_event(tx: Transaction, user_id: str) -> int:
    return tx.insert(
        "INSERT INTO events (user_id, type, channel, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        (user_id, "t", "c", "{}", "now"),
    )


class OpenWrite:
    """A write transaction held open in a thread of its own (one event inserted) until `finish()`."""

    def __init__(self, db: PostgresDatabase, user_id: str | None) -> None:
        self.inserted = threading.Event()
        self._release = threading.Event()
        self.ids: list[int] = []
        self._thread = threading.Thread(target=self._run, args=(db, user_id))
        self._thread.start()
        assert self.inserted.wait(WAIT), "the open write never started"

    def _run(self, db: PostgresDatabase, user_id: str | None) -> None:
        with db.atomic(user_id=user_id) as tx:
            self.ids.append(add_event(tx, user_id or "usr_all"))
            self.inserted.set()
            self._release.wait(WAIT)

    def finish(self) -> None:
        self._release.set()
        self._thread.join(WAIT)
        assert not self._thread.is_alive()


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start `work` in a thread; the list receives its result."""
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(work()))
    thread.start()
    return thread, results


def write_for(db: PostgresDatabase, user_id: str | None) -> Callable[[], int]:
    def write() -> int:
        with db.atomic(user_id=user_id) as tx:
            return add_event(tx, user_id or "usr_all")

    return write


def visible_users(db: PostgresDatabase) -> list[str]:
    return [row[0] for row in db.query("SELECT user_id FROM events ORDER BY id")]


def test_a_users_open_write_does_not_block_another_users_write(
    pg: PostgresDatabase, other_node: PostgresDatabase
) -> None:
    open_write = OpenWrite(pg, "usr_a")
    try:
        for node in (pg, other_node):  # in the same process, and from another node
            thread, results = in_thread(write_for(node, "usr_b"))
            thread.join(WAIT)
            assert not thread.is_alive() and len(results) == 1, "B waited for A's open transaction"
        assert visible_users(pg) == ["usr_b", "usr_b"]  # committed while A's is still open
    finally:
        open_write.finish()
    assert sorted(visible_users(pg)) == ["usr_a", "usr_b", "usr_b"]


@pytest.mark.parametrize("same_node", [True, False], ids=["same-node", "other-node"])
def test_a_users_second_write_waits_for_the_first(
    pg: PostgresDatabase, other_node: PostgresDatabase, same_node: bool
) -> None:
    open_write = OpenWrite(pg, "usr_a")
    thread, results = in_thread(write_for(pg if same_node else other_node, "usr_a"))
    thread.join(BLOCKED)
    assert thread.is_alive(), "A's second write ran beside its first"
    open_write.finish()
    thread.join(WAIT)
    assert results and results[0] > open_write.ids[0]  # and it committed after, with the larger id


def test_a_cluster_wide_write_waits_for_open_user_writes(pg: PostgresDatabase, other_node: PostgresDatabase) -> None:
    open_write = OpenWrite(pg, "usr_a")
    thread, results = in_thread(write_for(other_node, None))
    thread.join(BLOCKED)
    assert thread.is_alive(), "a cluster-wide write ran beside a user's open write"
    open_write.finish()
    thread.join(WAIT)
    assert results and results[0] > open_write.ids[0]


def test_user_writes_wait_for_an_open_cluster_wide_write(pg: PostgresDatabase, other_node: PostgresDatabase) -> None:
    open_write = OpenWrite(pg, None)
    thread, results = in_thread(write_for(other_node, "usr_b"))
    thread.join(BLOCKED)
    assert thread.is_alive(), "a user's write ran beside a cluster-wide one"
    open_write.finish()
    thread.join(WAIT)
    assert results and results[0] > open_write.ids[0]


def test_a_settled_read_waits_for_the_users_write_in_flight_only(
    pg: PostgresDatabase, other_node: PostgresDatabase
) -> None:
    """The newest id read settled for A lies below every A event committed later (here: the one in flight)."""
    with pg.atomic(user_id="usr_b") as tx:
        add_event(tx, "usr_b")
    open_write = OpenWrite(pg, "usr_a")
    with other_node.atomic(user_id="usr_b") as tx:
        add_event(tx, "usr_b")  # a larger id than A's, visible first

    def newest_settled(user_id: str) -> int:
        with other_node.settled(user_id):
            return events.newest_id(cast(Any, SimpleNamespace(db=other_node)))

    thread, results = in_thread(lambda: newest_settled("usr_b"))
    thread.join(WAIT)
    assert not thread.is_alive(), "a settled read for B waited for A's write"
    thread, results = in_thread(lambda: newest_settled("usr_a"))
    thread.join(BLOCKED)
    assert thread.is_alive(), "a settled read for A ran while A's write was in flight"
    open_write.finish()
    thread.join(WAIT)
    assert results == [max(row[0] for row in pg.query("SELECT id FROM events"))]


def test_each_users_event_ids_become_visible_in_commit_order(pg: PostgresDatabase) -> None:
    """Nodes write for two users at once, holding transactions open; a reader per user never sees a later id first."""
    users = ["usr_0", "usr_1"]
    nodes = [PostgresDatabase(pg.url, pool_size=4) for _ in range(4)]
    stop = threading.Event()
    seen: dict[str, list[int]] = {user: [] for user in users}
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(16):
                user = users[(n + i) % 2]
                with nodes[n].atomic(user_id=user) as tx:
                    add_event(tx, user)
                    time.sleep(0.002 * ((n + i) % 3))  # commits would overtake one another without the lock
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader(user: str) -> None:
        last = 0
        while True:
            finished = stop.is_set()  # read before the query: the last pass starts after every commit
            for row in pg.query("SELECT id FROM events WHERE user_id = ? AND id > ? ORDER BY id", (user, last)):
                seen[user].append(row[0])
                last = row[0]
            if finished:
                return

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(len(nodes))]
    readers = [threading.Thread(target=reader, args=(user,)) for user in users]
    for thread in readers + threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    for node in nodes:
        node.close()
    assert errors == []
    for user in users:
        final = [row[0] for row in pg.query("SELECT id FROM events WHERE user_id = ? ORDER BY id", (user,))]
        assert seen[user] == final and len(final) == 32, user


def test_a_user_scoped_transaction_refuses_another_users_event(pg: PostgresDatabase) -> None:
    rt = cast(Any, SimpleNamespace(db=pg))
    with pytest.raises(RuntimeError, match="scoped to user usr_a"), pg.atomic(user_id="usr_a") as tx:
        events.append(rt, tx, "key_deleted", "usr_b", {"key_id": "key_x"}, "now")
    assert visible_users(pg) == []
