"""The ingestion pool: a bounded thread pool and this process's job leases (the per-user limit is in ingest)."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


def new_owner_id() -> str:
    """A name for this process as a job owner: host and pid for people, a nonce so a reused pid differs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class JobRunner:
    """The app's ingestion pool and the jobs whose leases it holds.

    `owner` names this process in a job row's `owner` column; the lease thread heartbeats
    every job in `held()`. A job is held from just before its row is written until its
    open steps are done, so it is never left without a heartbeat while this process lives.
    """

    def __init__(self, workers: int) -> None:
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="telentir-connect") if workers else None
        self.owner = new_owner_id()
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}  # job id -> how many threads of this process work on it
        # Set when the process stops: running jobs end at their next record and settle (refunding
        # what they did not use) before the pool is gone, instead of waiting for another
        # process to notice their lease lapsed.
        self.stopping = threading.Event()

    def hold(self, job_id: str) -> None:
        """Keep heartbeating `job_id` (until a matching `drop`)."""
        with self._lock:
            self._held[job_id] = self._held.get(job_id, 0) + 1

    def drop(self, job_id: str) -> None:
        """Stop heartbeating `job_id` once every `hold` of it is dropped."""
        with self._lock:
            left = self._held.get(job_id, 0) - 1
            if left > 0:
                self._held[job_id] = left
            else:
                self._held.pop(job_id, None)

    def held(self) -> list[str]:
        """The jobs this process works on now."""
        with self._lock:
            return list(self._held)

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        """Run `fn` on the pool (inline when the pool size is 0)."""
        if self.executor is None:
            future: Future[None] = Future()
            fn()
            future.set_result(None)
            return future
        return self.executor.submit(fn)

    def close(self) -> None:
        """Tell running jobs to stop, wait for them to settle, and stop the pool."""
        self.stopping.set()
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
