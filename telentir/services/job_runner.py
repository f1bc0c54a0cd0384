"""The ingestion pool: a bounded thread pool with a per-user limit on running jobs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import RateLimited


class JobRunner:
    """The app's ingestion pool, per-user concurrency counts and cancel flags."""

    def __init__(self, workers: int, per_user: int) -> None:
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="telentir-connect") if workers else None
        self.per_user = per_user
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    def claim(self, user_id: str) -> None:
        """Count a job against the user's limit, or raise 429."""
        with self._lock:
            if self._running.get(user_id, 0) >= self.per_user:
                raise RateLimited(
                    retry_after=5,
                    message="You already have the maximum number of ingestion jobs running; wait for one to finish.",
                )
            self._running[user_id] = self._running.get(user_id, 0) + 1

    def release(self, user_id: str) -> None:
        """Give the user's slot back."""
        with self._lock:
            self._running[user_id] -= 1
            if not self._running[user_id]:
                del self._running[user_id]

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        """Run `fn` on the pool (inline when the pool size is 0)."""
        if self.executor is None:
            future: Future[None] = Future()
            fn()
            future.set_result(None)
            return future
        return self.executor.submit(fn)

    def close(self) -> None:
        """Wait for running jobs and stop the pool."""
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
