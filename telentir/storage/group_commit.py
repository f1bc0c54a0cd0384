"""Group commit: the write transactions of a process's threads share one SQLite commit while others queue.

SQLite runs one write transaction at a time per file, and every commit appends each page it
touched to the WAL: a create alone writes some nine pages and, under load, waits for the GIL
after each of its statements while holding the box's writer lock. Here the threads of a
process that write at the same time take turns on one connection inside one transaction:

- a writer takes the process's turn (`_turn`); if no batch is open it takes the box's writer
  lock (the `flock` of writer_lock.py) and begins one (`BEGIN IMMEDIATE`);
- it runs its statements there, as it would alone; if it joined a batch others already wrote
  in, inside a SAVEPOINT, so its failure rolls back its own statements only;
- when it is done, and another writer of the process is waiting for the turn, it leaves the
  batch open for that one and waits; the last writer of a batch (no one waiting, or the batch
  full) commits for all, releases the writer lock and wakes them.

Each writer returns only once the COMMIT that holds its statements succeeded, so a 2xx means
what it meant (the row survives kill -9); a failed COMMIT fails every writer of the batch,
each running its after-rollback hooks. Each body runs alone and sees the batch's earlier
writes, in the order the turns were taken: the same serial order as separate transactions,
and event ids still become visible in commit order (a batch commits its ids together). With
one writer at a time nothing changes: each transaction commits alone, with no SAVEPOINT.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

from ..errors import EngineUnavailable, InsufficientStorage
from .writer_lock import WriterLock

MAX_MEMBERS = 64  # writers per batch: bounds the wait of its first one, and the other processes'
MAX_AGE_SECONDS = 0.02  # nor does a batch stay open longer, however many keep coming
STALL_SECONDS = 0.1  # a writer whose batch is still open after this long commits it itself


class _Batch:
    """One open transaction on the shared connection, and the writers waiting for its COMMIT."""

    def __init__(self) -> None:
        self.members = 0  # writers whose statements it holds (a failed one leaves)
        self.opened = time.monotonic()
        self.finished = False
        # Made only when a writer leaves the batch open and will wait (always while holding the
        # turn, as `finish` is called): a writer alone never pays for it.
        self.done: threading.Event | None = None
        self.error: BaseException | None = None

    def will_wait(self) -> None:
        if self.done is None:
            self.done = threading.Event()

    def finish(self, error: BaseException | None) -> None:
        self.error, self.finished = error, True
        if self.done is not None:
            self.done.set()

    def wait(self, seconds: float) -> bool:
        """Whether the batch is committed or rolled back (waiting up to `seconds`)."""
        return self.finished or (self.done is not None and self.done.wait(seconds))

    def full(self) -> bool:
        return self.members >= MAX_MEMBERS or time.monotonic() - self.opened > MAX_AGE_SECONDS


class GroupCommit:
    """The write transactions of one process on one SQLite file (see the module's docstring)."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        writer: WriterLock,
        raise_mapped: Callable[[sqlite3.OperationalError], NoReturn],
    ) -> None:
        self._connect, self._writer, self._raise_mapped = connect, writer, raise_mapped
        self._turn = threading.Lock()  # who uses the shared connection now
        self._count = threading.Lock()
        self._waiting = 0  # writers queued for the turn
        self._conn: sqlite3.Connection | None = None
        self._batch: _Batch | None = None
        self.commits = 0  # COMMITs of batches so far (writes per commit = writes / commits)

    @contextmanager
    def member(self) -> Iterator[sqlite3.Connection]:
        """Run the block's statements in the open batch (or a new one); return once they are committed.

        Raises what the block raised (its statements undone), or why the batch did not commit.
        """
        self._queue()
        try:
            batch, joined = self._join()
            conn = self._shared()
            try:
                yield conn
            except BaseException as exc:
                self._leave(batch, joined, exc)
                raise
            if joined:
                self._execute("RELEASE member", batch)
        finally:
            self._end_turn()
        while not batch.wait(STALL_SECONDS):
            self._commit_if_open(batch)  # the writer it was left open for never came
        if batch.error is not None:
            raise _own_copy(batch.error)  # each thread raises its own: tracebacks stay apart

    @contextmanager
    def alone(self) -> Iterator[None]:
        """The turn and the writer lock for a transaction of the caller's own, on its own connection.

        An open batch is committed first, so this transaction's writes come after its.
        """
        self._queue()
        try:
            if self._batch is not None:
                self._commit(self._batch)
            with self._writer:
                yield
        finally:
            self._turn.release()

    def close(self) -> None:
        """Close the shared connection (at shutdown; an open batch is committed first)."""
        with self._turn:
            if self._batch is not None:
                self._commit(self._batch)
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _queue(self) -> None:
        if self._turn.acquire(blocking=False):
            return  # no one to wait for (the common case when idle), and no one is counted
        with self._count:
            self._waiting += 1
        try:
            self._turn.acquire()
        finally:
            with self._count:
                self._waiting -= 1

    def _shared(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _join(self) -> tuple[_Batch, bool]:
        """The batch to write in (a new one if none is open or the open one is full); whether it had members."""
        batch = self._batch
        if batch is not None and batch.full():
            self._commit(batch)
            batch = None
        if batch is None:
            batch = self._begin()
        joined = batch.members > 0
        if joined:
            self._execute("SAVEPOINT member", batch)
        batch.members += 1
        return batch, joined

    def _begin(self) -> _Batch:
        conn = self._shared()
        self._writer.acquire()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            self._writer.release()
            if isinstance(exc, sqlite3.OperationalError):
                self._raise_mapped(exc)
            raise
        self._batch = _Batch()
        return self._batch

    def _execute(self, sql: str, batch: _Batch) -> None:
        """A statement that manages the batch; its failure fails the whole batch, this writer included."""
        try:
            self._shared().execute(sql)
        except BaseException as exc:
            self._abort(batch, exc)
            raise self._engine_error(exc) from exc

    def _leave(self, batch: _Batch, joined: bool, exc: BaseException) -> None:
        """A writer's block raised `exc`: undo its statements (the whole batch's, if it was first)."""
        batch.members -= 1
        if batch.finished:
            return
        if not joined:
            self._abort(batch, None)  # the first writer: no one else's statements are in it yet
            return
        conn = self._shared()
        try:
            if not conn.in_transaction:
                raise sqlite3.OperationalError("SQLite rolled the transaction back")
            conn.execute("ROLLBACK TO member")
            conn.execute("RELEASE member")
        except sqlite3.Error as lost:
            # The whole transaction is gone (SQLite rolls back by itself on a full disk, say):
            # every writer of the batch fails, with the same kind of error as this one.
            if not isinstance(exc, (InsufficientStorage, EngineUnavailable)):
                exc = EngineUnavailable("sqlite", f"a write transaction shared with others was lost: {lost}")
            self._abort(batch, exc)

    def _end_turn(self) -> None:
        """Commit the open batch unless a writer waits to add to it; then pass the turn on."""
        try:
            batch = self._batch
            if batch is None:
                return
            if self._waiting == 0 or batch.full():
                if batch.members == 0:
                    self._abort(batch, None)  # only failed writers: nothing to commit
                else:
                    self._commit(batch)
            else:
                batch.will_wait()  # left open for the next writer
        finally:
            self._turn.release()

    def _commit_if_open(self, batch: _Batch) -> None:
        with self._turn:
            if self._batch is batch:
                self._commit(batch)

    def _commit(self, batch: _Batch) -> None:
        try:
            self._shared().execute("COMMIT")
        except sqlite3.Error as exc:
            self._abort(batch, exc)
            return
        self.commits += 1
        self._close(batch, None)

    def _abort(self, batch: _Batch, exc: BaseException | None) -> None:
        """Roll the batch back: its writers fail with `exc` as an engine error (with None, none was committed)."""
        try:
            conn = self._shared()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        finally:
            self._close(batch, None if exc is None else self._engine_error(exc))

    def _close(self, batch: _Batch, error: BaseException | None) -> None:
        if self._batch is batch:
            self._batch = None
            self._writer.release()
        batch.finish(error)

    def _engine_error(self, exc: BaseException) -> BaseException:
        """What the writers of a failed batch are told: an engine's failure mapped (507, 503), else `exc` itself."""
        if isinstance(exc, sqlite3.OperationalError):
            try:
                self._raise_mapped(exc)  # records the episode (a full disk, a lock never granted)
            except BaseException as mapped:  # noqa: BLE001 - it raises by contract: keep what it raised
                return mapped
        return exc


def _own_copy(error: BaseException) -> BaseException:
    """`error` for one more thread to raise: the same type and fields, a traceback of its own."""
    clone = type(error).__new__(type(error), *error.args)
    clone.__dict__.update(error.__dict__)
    clone.__cause__ = error.__cause__
    return clone
