"""Caps on open event streams: per process and per user."""

from __future__ import annotations

import threading
from collections import Counter

from ..errors import RateLimited, ServiceUnavailable


class StreamSlots:
    """Counts open streams per process and per user, refusing past the caps."""

    def __init__(self, max_total: int, max_per_user: int) -> None:
        self.max_total, self.max_per_user = max_total, max_per_user
        self._lock = threading.Lock()
        self._per_user: Counter[str] = Counter()

    @property
    def open(self) -> int:
        """Streams open now in this process."""
        with self._lock:
            return sum(self._per_user.values())

    def acquire(self, user_id: str) -> None:
        """Take a slot, or raise 503 (process full) / 429 (user's cap)."""
        with self._lock:
            if sum(self._per_user.values()) >= self.max_total:
                raise ServiceUnavailable(
                    "Too many open event streams on this server; retry shortly.", code="too_many_streams"
                )
            if self._per_user[user_id] >= self.max_per_user:
                raise RateLimited(retry_after=5, message="You have too many open event streams; close one first.")
            self._per_user[user_id] += 1

    def release(self, user_id: str) -> None:
        """Give a slot back."""
        with self._lock:
            self._per_user[user_id] -= 1
            if self._per_user[user_id] <= 0:
                del self._per_user[user_id]
