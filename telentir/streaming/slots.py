"""Caps on open event streams, across every worker process of the box: in total and per user.

Past its fair share of the box (`Config.stream_fair_share`), a user opens another stream only
while half the box's cap is free: that half is kept for users below their
share, so a few users holding their whole per-user cap never deny streams to everyone.

Each open stream is a row of `stream_slots` naming the host and process serving it, taken
and counted in one write transaction, so two workers can never both take the last slot. The
caps protect the box's threads and memory, so they count the streams of this host only (on a
shared PostgreSQL, each node keeps its own). A process killed with its streams open leaves
rows behind: they are dropped when a cap is reached (if their process is gone) and, for the
whole host, when the server starts. A slot that cannot be given back because the database is
away (a stream ended by the outage) is kept in memory and given back by the next
transaction here that succeeds, so an outage leaks no slots.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

from ..errors import EngineUnavailable, RateLimited, ServiceUnavailable
from ..ids import now_iso
from ..storage.db import Database, Transaction

log = logging.getLogger(__name__)


class StreamSlots:
    """Takes and gives back stream slots, refusing past the caps (503 in total, 429 per user)."""

    def __init__(
        self,
        db: Database,
        max_total: int,
        max_per_user: int,
        fair_share: int | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.db, self.max_total, self.max_per_user = db, max_total, max_per_user
        self.fair_share = fair_share or max_total  # None: no share (one user may fill the box)
        self.reserved = max_total // 2  # the last half: only for users below their fair share
        self.on_refused = on_refused or (lambda limit: None)  # told the limit's name at each refusal (a metric)
        self.host = socket.gethostname()
        self._unreleased: set[int] = set()  # slots whose release failed (the database was away)
        self._lock = threading.Lock()

    @property
    def open(self) -> int:
        """Streams open now on this host, in every worker."""
        return int(self.db.query_value("SELECT COUNT(*) FROM stream_slots WHERE host = ?", (self.host,)))

    def acquire(self, user_id: str) -> int:
        """Take a slot for one of `user_id`'s streams and return its id, or raise 503 (box full) / 429 (user's cap)."""
        with self.db.atomic() as tx:
            self._give_back(tx)
            if self._full(tx, user_id):
                self._refuse(tx, user_id)
            return tx.insert(
                "INSERT INTO stream_slots (host, pid, user_id, opened_at) VALUES (?, ?, ?, ?)",
                (self.host, os.getpid(), user_id, now_iso()),
            )

    def release(self, slot_id: int) -> None:
        """Give a slot back (later, if the database is away now)."""
        with self._lock:
            self._unreleased.add(slot_id)
        try:
            with self.db.atomic() as tx:
                self._give_back(tx)
        except EngineUnavailable:
            log.info("stream slot %d is given back once the database is back", slot_id)

    def _give_back(self, tx: Transaction) -> None:
        """Delete the slots waiting to be given back, inside `tx` (they wait again if it rolls back)."""
        with self._lock:
            pending, self._unreleased = self._unreleased, set()
        if not pending:
            return
        tx.after_rollback(lambda: self._wait_again(pending))
        for slot_id in sorted(pending):
            tx.execute("DELETE FROM stream_slots WHERE id = ?", (slot_id,))

    def _wait_again(self, slots: set[int]) -> None:
        with self._lock:
            self._unreleased |= slots

    def forget_host(self) -> int:
        """Drop every slot of this host (at start-up, before any worker serves); returns how many."""
        with self.db.atomic() as tx:
            return int(tx.execute("DELETE FROM stream_slots WHERE host = ?", (self.host,)).rowcount)

    def _full(self, tx: Transaction, user_id: str) -> bool:
        """Over a cap, even once the rows of killed processes (which may be what fills it) are dropped."""
        return self._over_caps(tx, user_id) and (not self._drop_dead(tx) or self._over_caps(tx, user_id))

    def _over_caps(self, tx: Transaction, user_id: str) -> bool:
        total, mine = self._counts(tx, user_id)
        return total >= self.max_total or mine >= self.max_per_user or self._past_share(total, mine)

    def _past_share(self, total: int, mine: int) -> bool:
        """Whether a user already at its fair share would eat into the half kept for others."""
        return mine >= self.fair_share and total >= self.max_total - self.reserved

    def _counts(self, tx: Transaction, user_id: str) -> tuple[int, int]:
        row = tx.execute(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN user_id = ? THEN 1 ELSE 0 END), 0) FROM stream_slots "
            "WHERE host = ?",
            (user_id, self.host),
        ).fetchone()
        return int(row[0]), int(row[1])

    def _drop_dead(self, tx: Transaction) -> bool:
        """Drop the slots of processes of this host that are gone; whether any went."""
        rows = tx.execute("SELECT DISTINCT pid FROM stream_slots WHERE host = ?", (self.host,)).fetchall()
        pids = [int(r[0]) for r in rows]
        dead = [pid for pid in pids if not _alive(pid)]
        for pid in dead:
            tx.execute("DELETE FROM stream_slots WHERE host = ? AND pid = ?", (self.host, pid))
        return bool(dead)

    def _refuse(self, tx: Transaction, user_id: str) -> None:
        total, _ = self._counts(tx, user_id)
        if total >= self.max_total:
            self.on_refused("sse_max_streams")
            raise ServiceUnavailable(
                "Too many open event streams on this server; retry shortly.", code="too_many_streams"
            )
        self.on_refused("sse_max_streams_per_user")
        raise RateLimited(
            retry_after=5,
            message="You hold your share of this server's open event streams; close one first.",
        )


def _alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists (a reused pid reads as alive: rows stay until start-up)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True
