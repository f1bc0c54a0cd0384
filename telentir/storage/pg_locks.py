"""PostgreSQL's write locks: one user's writes one at a time, cluster-wide writes alone.

Write transactions take advisory locks right after BEGIN and hold them until COMMIT, at two
levels. A transaction that writes one user's data (`atomic(user_id=…)`: objects, keys,
publications, that user's events) takes the global lock SHARED and that user's lock
exclusively: writes of one user run one at a time, writes of different users side by side.
Every other transaction (the default: sign-ups per address, SMS per phone, rate limits,
webhooks, maintenance, anything unmarked) takes the global lock EXCLUSIVELY and so runs
alone in the cluster, as SQLite's `BEGIN IMMEDIATE` does. Check-then-insert and
balance-then-reserve stay exact: whatever a transaction checks is written only by
transactions that exclude it.

Event ids: a sequence hands them out at INSERT, not at COMMIT. Within one user they are
still committed in id order (that user's writes run one at a time, cluster-wide ones alone),
and streams read one user's events (`WHERE user_id = ? AND id > cursor`), so a stream that
has read id N never later finds a smaller id of its user appear. Across users they are not
(user A's 10 may commit after user B's 11), so a new stream must not start from the newest
id read at any moment: `settled(user_id)` reads under the global lock and the user's lock,
both shared, at a moment when nothing of that user is in flight; every event of the user
committed later has a larger id than anything read then.

Deadlock-free: a user's writer and a settled read take the global lock before the user's,
and a cluster-wide writer takes no other advisory lock (nor can it wait for a row lock of a
user's writer, which it excludes).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# The global lock (any 64-bit number nobody else uses: "telentir" in ASCII).
WRITE_LOCK = 0x74656C656E746972
# Users' locks are two-int advisory keys (a space apart from WRITE_LOCK's): this class, and 31
# bits of a hash of the user id. Two users sharing a hash only wait for each other.
USER_LOCK_CLASS = 0x74656C65

# BEGIN and the locks, in one round trip each.
BEGIN_GLOBAL = b"BEGIN; SELECT pg_advisory_xact_lock(%d)" % WRITE_LOCK
_BEGIN_USER = b"BEGIN; SELECT pg_advisory_xact_lock_shared(%d); SELECT pg_advisory_xact_lock(%d, %%d)" % (
    WRITE_LOCK,
    USER_LOCK_CLASS,
)
_BEGIN_SETTLED = b"BEGIN; SELECT pg_advisory_xact_lock_shared(%d); SELECT pg_advisory_xact_lock_shared(%d, %%d)" % (
    WRITE_LOCK,
    USER_LOCK_CLASS,
)


def user_key(user_id: str) -> int:
    """The user's lock key: 31 bits of a hash of the id."""
    return int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:4], "big") & 0x7FFFFFFF


def begin_user(key: int) -> bytes:
    """BEGIN a write of one user's data (the global lock shared, the user's exclusively)."""
    return _BEGIN_USER % key


def begin_settled(key: int) -> bytes:
    """BEGIN a read at a moment when no write of the user is in flight (both locks shared)."""
    return _BEGIN_SETTLED % key


class UserQueues:
    """This process's queues for user-scoped writers: one per user key, and a cap on how many run.

    Writers wait here, not each on a pooled connection blocked in PostgreSQL: a user's second
    write waits for its first in the process, and at most `running` user-scoped transactions
    hold pooled connections at once (the rest of the pool stays for reads).
    """

    def __init__(self, running: int) -> None:
        self._guard = threading.Lock()
        self._queues: dict[int, tuple[threading.Lock, list[int]]] = {}  # key -> (lock, [holders and waiters])
        self._running = threading.BoundedSemaphore(max(1, running))

    @contextmanager
    def turn(self, key: int) -> Iterator[None]:
        """Hold this process's turn for the user `key` (the queue entry exists while anyone uses it)."""
        with self._guard:
            lock, users = self._queues.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            # The user's queue first: a waiting second write of one user takes no running slot.
            with lock, self._running:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if not users[0]:
                    del self._queues[key]
