"""SQLite's WAL checkpoints off the request path: a thread of the process moves committed pages.

SQLite's automatic checkpoint runs inside the COMMIT of whichever write takes the WAL past
its threshold (1,000 pages by default): that one request writes some 4 MB into the database
file and waits for two fsyncs, every hundred-odd creates. Here a background thread runs a
PASSIVE checkpoint every CHECKPOINT_EVERY commits (a few times per 1,000 pages): it neither
waits for nor blocks readers and writers, and the commit that wakes it returns at once. The
automatic one stays as it was: while writes keep coming a passive checkpoint never reaches
the moving end of the WAL, which restarts only when SQLite's own checkpoint, in a commit
(other writers queue on the writer lock meanwhile), copies the last frames. That commit now
copies the frames since the thread's last pass instead of a thousand. The WAL overshoots the
mark further than before, since a commit's checkpoint yields while the thread's runs: by what
is written during one of the thread's checkpoints (up to 28 MB seen in a tight loop of 4 KiB
rows on the loaded 2-core box; the file is reused from its start once it restarts).

Durability is unchanged: a commit is durable once in the WAL (fsynced there with
`synchronous = FULL`, as before); a checkpoint only copies pages already committed, and
SQLite replays the WAL after a crash whether or not one ran.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

CHECKPOINT_EVERY = 50  # commits (a create writes a handful of WAL pages: about every 250 pages)

log = logging.getLogger(__name__)


class Checkpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on a connection of its own, woken every CHECKPOINT_EVERY commits."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], every: int = CHECKPOINT_EVERY) -> None:
        self._connect, self._every = connect, every
        self._commits = 0  # a hint: a lost increment between threads only shifts the next wake-up
        self._wake = threading.Event()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def committed(self) -> None:
        """Count a commit; every `every`th wakes the thread (started on first need, and again after a fork)."""
        self._commits += 1
        if self._commits % self._every:
            return
        with self._guard:
            if self._closed:
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="telentir-sqlite-checkpoints", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        conn = self._connect()
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closed:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    # A full disk, say: the pages stay in the WAL (still committed) for a later try.
                    log.debug("WAL checkpoint failed", exc_info=True)
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the thread (after its checkpoint in progress, if any)."""
        with self._guard:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout=10)
