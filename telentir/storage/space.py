"""Free space where the server writes: the early refusal of writes, and `/readyz`'s disk check.

Writes that add data are refused (507) once less than the reserve is free: the larger of
TELENTIR_MIN_FREE_BYTES and a built-in reserve of RESERVE_BYTES (an eighth of a disk smaller
than 64 MiB, at least 1 MiB, so a small volume stays usable). The built-in reserve keeps deletes
working on a disk that creates have filled: a delete is a SQLite transaction too, and it
needs room in the write-ahead log, and room in the database file for the checkpoint that
copies the log's pages back (up to SQLite's 1,000-page auto-checkpoint, 4 MiB).

The file systems asked are those of the SQLite database and of the ciphertext folder, when
they are local; with PostgreSQL and S3 nothing is asked (their own disks are theirs to watch,
and their errors are mapped where they are met). `statvfs` is asked at most once a second while
space is plentiful, so the check costs nothing per request; within NEAR_BYTES of the
reserve it is asked every time, so a burst of writes cannot overshoot into the reserve.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ..errors import InsufficientStorage
from .health import DISK, EngineHealth

CACHE_SECONDS = 1.0
RESERVE_BYTES = 8 * 1024 * 1024
MIN_RESERVE_BYTES = 1024 * 1024
NEAR_BYTES = 64 * 1024 * 1024


class FreeSpace:
    """The free bytes of the folders the server writes to, and the refusal below `min_free_bytes`."""

    def __init__(self, folders: list[Path], min_free_bytes: int, health: EngineHealth) -> None:
        self.folders = list(dict.fromkeys(Path(folder) for folder in folders))
        self.min_free_bytes = min_free_bytes
        self.health = health
        self._lock = threading.Lock()
        self._checked_at = -CACHE_SECONDS
        self._free = 0
        self._size = 0  # the smallest of the file systems, in bytes

    @property
    def reserve(self) -> int:
        """Bytes kept free: TELENTIR_MIN_FREE_BYTES, or the built-in reserve if larger."""
        built_in = min(RESERVE_BYTES, max(MIN_RESERVE_BYTES, self._size // 8)) if self._size else RESERVE_BYTES
        return max(self.min_free_bytes, built_in)

    def free_bytes(self) -> int:
        """The fewest bytes free (for an unprivileged writer) among the folders' file systems; cached a second."""
        now = time.monotonic()
        if now - self._checked_at < CACHE_SECONDS and self._free > self.reserve + NEAR_BYTES:
            return self._free
        sizes = [_space(folder) for folder in self.folders]
        free = min((free for free, _ in sizes), default=0)
        with self._lock:
            self._free, self._size, self._checked_at = free, min((size for _, size in sizes), default=0), now
        return free

    def check_writable(self) -> None:
        """507 insufficient_storage if less than the reserve is free (a write that adds data would eat into it)."""
        if not self.folders:
            return
        free = self.free_bytes()
        if free < self.reserve:
            setting = "TELENTIR_MIN_FREE_BYTES" if self.reserve == self.min_free_bytes else "the built-in reserve"
            cause = f"{free:,} bytes free, below the {self.reserve:,} kept free ({setting})"
            self.health.failed(DISK, cause)
            raise InsufficientStorage(f"less than the {self.reserve:,} bytes kept free for deletes", cause)

    def full(self) -> bool:
        """Whether writes are refused for want of space now (for /readyz)."""
        full = bool(self.folders) and self.free_bytes() < self.reserve
        if not full:
            self.health.ok(DISK)
        return full


def _space(folder: Path) -> tuple[int, int]:
    """Free and total bytes of the file system of `folder` (or its nearest existing ancestor: folders appear lazily)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize
