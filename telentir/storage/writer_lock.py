"""One SQLite writer at a time, across the threads of a process and the processes of a box.

SQLite lets one transaction write at a time; the others wait in its busy handler, which
sleeps and retries on a growing schedule. With 32 writers in one process that polling
pushed create's p99 past a second, so a process's writers queue on a lock instead. With
several worker processes on one data folder the same polling came back between processes,
so the lock also takes an exclusive `flock` on a file next to the database: the kernel
hands it from one waiting process to the next as soon as it is released. Writers that do
not use this lock (another program opening the file) still meet at `BEGIN IMMEDIATE`.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType


class WriterLock:
    """A context manager held around every write transaction of one `Database`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._threads = threading.Lock()
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (the process's, then the box's); any thread of the process may release it."""
        self._threads.acquire()
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def release(self) -> None:
        """Give the lock back to the next writer of the box."""
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def _file(self) -> int:
        if self._fd is None:
            # O_CLOEXEC: a program this process starts must not inherit (and so share) the lock.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def close(self) -> None:
        """Close the lock file (a process forked later must open its own)."""
        with self._threads:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


class SingletonClaim:
    """A task only one process of the box may run at a time (the event pruner): an exclusive `flock`.

    The first process to claim it keeps it for its whole life; the others' claims fail at
    once. When the holder exits, or is killed, the kernel releases the lock and the next
    claim (at another process's next tick) succeeds.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def claim(self) -> bool:
        """Whether this process holds the task now (taking it if it is free)."""
        with self._lock:
            if self._fd is not None:
                return True
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._fd = fd
            return True

    def close(self) -> None:
        """Give the task up (at shutdown)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
