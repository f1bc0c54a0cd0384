"""Event-table reads shared by the streams of one process (see RecentReads)."""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

# Rows are read this many at a time; a window keeps twice as many.
REPLAY_CHUNK = 500
Row = tuple[int, str, dict[str, Any], str]  # id, channel, payload, payload as JSON text


class RecentReads:
    """Table reads shared by the streams of one process.

    When a write rings a thousand streams of one user, they all need the same new rows. Each
    (user, type) keeps a window: every row after a cursor `start`, complete up to its newest
    id. Sharing is safe because SQLite commits one writer at a time and ids grow with each
    commit: a read that saw event N saw every event before N. A stream whose cursor lies in
    the window and whose doorbell it reaches takes its rows from there; otherwise one stream
    reads the rows after the window's newest (or after its own cursor) and extends it for all.
    """

    def __init__(self, size: int = 512, keep: int = 2 * REPLAY_CHUNK) -> None:
        self._size, self._keep = size, keep
        self._lock = threading.Lock()  # guards the two maps' membership
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}

    def rows_after(
        self, user_id: str, event_type: str, last: int, rung: int | None, read: Callable[[int], list[Row]]
    ) -> list[Row]:
        """The rows after `last` (up to REPLAY_CHUNK read at once), shared when a window reaches `rung`."""
        if rung is None:
            return read(last)
        key = (user_id, event_type)
        # A hit takes no lock: a thousand streams woken together queueing on one lock cost
        # more than the rows they share.
        if (rows := _covering(self._windows.get(key), last, rung)) is not None:
            return rows
        with self._key_lock(key):  # streams that miss together wait for one read
            window = self._windows.get(key)
            if (rows := _covering(window, last, rung)) is not None:
                return rows
            if window is not None and window.start <= last <= window.newest:
                window = window.extended(read(window.newest), self._keep)
            else:
                window = _Window(last, read(last))
            self._store(key, window)
        # A stream so far behind that the trimmed window starts past its cursor reads its own rows.
        return window.after(last) if window.start <= last else read(last)

    def _key_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _store(self, key: tuple[str, str], window: _Window) -> None:
        with self._lock:
            self._windows[key] = window
            self._windows.move_to_end(key)
            if len(self._windows) > self._size:
                old, _ = self._windows.popitem(last=False)
                self._key_locks.pop(old, None)


class _Window:
    """Every row of one (user, type) after `start`, complete up to `newest`; never changed once made."""

    def __init__(self, start: int, rows: list[Row]) -> None:
        self.start, self.rows = start, rows
        self.ids = [row[0] for row in rows]
        self.newest = self.ids[-1] if rows else start

    def extended(self, more: list[Row], keep: int) -> _Window:
        """This window plus the rows read after its newest, trimmed to the newest `keep` rows."""
        rows = self.rows + more
        if len(rows) <= keep:
            return _Window(self.start, rows)
        # Dropping the oldest rows moves the start to the newest dropped id: what follows it is complete.
        return _Window(rows[-keep - 1][0], rows[-keep:])

    def after(self, last: int) -> list[Row]:
        """The rows after id `last`."""
        return self.rows[bisect.bisect_right(self.ids, last) :]


def _covering(window: _Window | None, last: int, rung: int) -> list[Row] | None:
    """The window's rows after `last` if it holds every row from `last` through `rung`, else None."""
    if window is None or not window.start <= last <= window.newest or window.newest < rung:
        return None
    return window.after(last)
