"""Metadata storage: one interface, two databases (SQLite by default, PostgreSQL to scale out).

Services write plain SQL through `Database` (`query`, `query_one`, `query_row`,
`query_value`) and `atomic()` transactions (`tx.execute`, `tx.insert`, hooks after commit
or rollback). SQL is written once, in the subset both engines accept: `?` or `:name`
placeholders, `ON CONFLICT … DO NOTHING / DO UPDATE` rather than `INSERT OR …`, no
`PRAGMA`, no SQLite-only functions. `telentir.storage.postgres` translates placeholders.

Write transactions are serialised, so services can check, then insert (read a balance, then
reserve), and a user's event ids commit in the order they are assigned: a stream that has
read id N never later finds a smaller id appear. SQLite runs one write at a time (`BEGIN
IMMEDIATE`), the concurrent ones of a process in turn inside one shared transaction that
commits once for all (`telentir.storage.group_commit`); PostgreSQL runs `atomic(user_id=…)`
alone among that user's writes, and every other write alone in the cluster
(`telentir.storage.pg_locks`).

A full disk (SQLITE_FULL) is `InsufficientStorage` (507), a lock never granted in the busy
timeout `EngineUnavailable("sqlite")` (503): rolled back whole, after-rollback hooks run.

SQLite: a connection per thread for reads, one per process for the grouped writes (a block's
reads inside `atomic()` use it, and so see its writes); WAL (readers never wait; checkpoints
by a thread of their own, checkpoints.py); `busy_timeout`; foreign keys; `BEGIN IMMEDIATE`
(no two readers deadlock upgrading to writers).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, NoReturn, Protocol

from ..errors import EngineUnavailable, InsufficientStorage
from . import schema
from .checkpoints import Checkpointer
from .group_commit import GroupCommit
from .health import DISK, EngineHealth
from .sqlite_schema import create, immediate, migrate_to_latest, version_of
from .sqlite_schema import split_script as split_script
from .writer_lock import SingletonClaim, WriterLock

BUSY_TIMEOUT_MS = 30_000
# SQLite's primary result codes (the low byte of an extended code) that are no bug of ours.
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL = 5, 6, 13

log = logging.getLogger(__name__)


class IntegrityError(Exception):
    """A constraint (unique, foreign key, check) refused a statement, whichever database said so."""


class Row(Protocol):
    """A result row: indexed by position or column name, `dict(row)` gives column → value."""

    def __getitem__(self, key: int | str) -> Any: ...

    def keys(self) -> Sequence[str]: ...

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


class Cursor(Protocol):
    """What `tx.execute` returns: the rows of a query, or how many rows a change touched."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...


class Transaction(ABC):
    """An open write transaction with hooks that run once it has committed or rolled back."""

    def __init__(self) -> None:
        self._on_commit: list[Callable[[], None]] = []
        self._on_rollback: list[Callable[[], None]] = []
        self.user_id: str | None = None  # whose rows it may write: one user's, or anyone's (None)

    @abstractmethod
    def execute(self, sql: str, params: Any = ()) -> Cursor:
        """Run one statement inside the transaction."""

    @abstractmethod
    def insert(self, sql: str, params: Any = ()) -> int:
        """Run one INSERT into a table with an integer `id` key and return the new row's id."""

    @abstractmethod
    def execute_many(self, sql: str, rows: Sequence[Any]) -> None:
        """Run one statement once per parameter row (bulk copies)."""

    @abstractmethod
    def lock_user(self, user_id: str) -> None:
        """Hold the user's row until commit, so one user's money moves one transaction at a time."""

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run `hook` after COMMIT succeeds (delete replaced blobs, publish events)."""
        self._on_commit.append(hook)

    def after_rollback(self, hook: Callable[[], None]) -> None:
        """Run `hook` after ROLLBACK (remove blobs written for rows that never landed)."""
        self._on_rollback.append(hook)

    def committed(self) -> None:
        """Run the after-commit hooks (called by the database once COMMIT succeeded)."""
        _run_hooks(self._on_commit)

    def rolled_back(self) -> None:
        """Run the after-rollback hooks (called by the database after ROLLBACK)."""
        _run_hooks(self._on_rollback)


class Database(ABC):
    """The metadata database: reads, write transactions, the schema."""

    dialect: str  # "sqlite" | "postgresql"

    @abstractmethod
    def query(self, sql: str, params: Any = ()) -> list[Any]:
        """Run a read and return all rows."""

    @abstractmethod
    def query_one(self, sql: str, params: Any = ()) -> Any:
        """Run a read and return the first row or None."""

    def query_row(self, sql: str, params: Any = ()) -> Any:
        """Run a read of a row that must exist (LookupError otherwise: damage, not a client error)."""
        row = self.query_one(sql, params)
        if row is None:
            raise LookupError(f"no row where one must exist: {sql}")
        return row

    def query_value(self, sql: str, params: Any = ()) -> Any:
        """Run a read that yields one row (an aggregate, say) and return its first column."""
        return self.query_row(sql, params)[0]

    @abstractmethod
    def atomic(self, user_id: str | None = None) -> AbstractContextManager[Transaction]:
        """A write transaction (COMMIT, or ROLLBACK on any exception); with `user_id`, of that user's rows only.

        Leave `user_id` out if it checks rows another user's write could change (addresses, phones, rate limits).
        """

    def settled(self, user_id: str) -> AbstractContextManager[None]:
        """Reads inside run when no write of `user_id` is in flight: its later events get larger ids."""
        return nullcontext()

    @abstractmethod
    def open_schema(self, migrate: bool = False) -> list[schema.Migration]:
        """Create a new database at the newest schema; upgrade an older one if `migrate`, else refuse it."""

    @abstractmethod
    def schema_version(self) -> int:
        """The database's schema version (0 when it is new)."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection this object opened (at app shutdown)."""

    @abstractmethod
    def size_bytes(self) -> int:
        """How much storage the database takes now (for /metrics)."""

    @abstractmethod
    def claim_singleton(self, task: str) -> bool:
        """Whether this process may run `task`, which one process of the deployment runs at a time.

        The first process to claim it keeps it for its life (or until its connection to the
        claim is lost); the others' claims fail at once and succeed once the holder is gone.
        """

    @abstractmethod
    def park_connection(self) -> None:
        """Hand this thread's connection on to the next request (called as each request ends)."""

    @abstractmethod
    def release_thread_connection(self) -> None:
        """Close this thread's connection (for short-lived threads, which would otherwise leak it)."""

    def describe(self) -> str:
        """Where the data lives, for messages (never a password)."""
        return self.dialect


class SqliteTransaction(Transaction):
    """A write transaction on one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection, db: SqliteDatabase | None = None) -> None:
        super().__init__()
        self.conn, self._db = conn, db

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        """Run one statement inside the transaction."""
        try:
            return self.conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            if self._db is None:
                raise
            self._db.raise_mapped(exc)

    def insert(self, sql: str, params: Any = ()) -> int:
        """Run one INSERT and return the new row's id."""
        row_id = self.execute(sql, params).lastrowid
        assert row_id is not None, "an INSERT always sets lastrowid"
        return row_id

    def execute_many(self, sql: str, rows: Sequence[Any]) -> None:
        """Run one statement once per parameter row."""
        try:
            self.conn.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            if self._db is None:
                raise
            self._db.raise_mapped(exc)

    def lock_user(self, user_id: str) -> None:
        """Nothing to do: SQLite's single writer already serialises every write transaction."""
        return None


class SqliteDatabase(Database):
    """The SQLite file: per-thread connections, transactions, schema."""

    dialect = "sqlite"

    def __init__(
        self, path: Path, synchronous: str = "NORMAL", cache_mib: int = 2, health: EngineHealth | None = None
    ) -> None:
        self.path = Path(path)
        self.health = health or EngineHealth()
        self.synchronous = synchronous
        self.cache_mib = cache_mib
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._writer = WriterLock(self.path.with_name(self.path.name + "-writer"))
        self._checkpoints = Checkpointer(self.connect)
        self._group = GroupCommit(self.connect, self._writer, self.raise_mapped)
        self._singletons: dict[str, SingletonClaim] = {}
        self._idle: list[sqlite3.Connection] = []  # parked by finished requests, for the next one
        self._closed = False

    def describe(self) -> str:
        """The file's path."""
        return f"sqlite:///{self.path}"

    def connect(self) -> sqlite3.Connection:
        """A new connection with the house pragmas; the caller owns and closes it."""
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        # Each thread's connection has its own page cache: this many MiB, at most, per thread.
        conn.execute(f"PRAGMA cache_size = {-1024 * int(self.cache_mib)}")
        # synchronous is validated to NORMAL/FULL by the config, never client input.
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (inside `atomic()`, the transaction's)."""
        conn = getattr(self._local, "tx_conn", None) or getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError("database is closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self.connect()
                with self._lock:
                    self._connections.append(conn)
            self._local.conn = conn
        return conn

    def park_connection(self) -> None:
        """Hand this thread's connection on to the next request (called as each request ends).

        Under the gevent worker every request is a new greenlet, and "per thread" would mean
        a new connection per request, never closed; parked connections are reused instead.
        """
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        if conn.in_transaction:  # atomic() never leaves one open; a bare read might
            conn.execute("ROLLBACK")
        with self._lock:
            if not self._closed:
                self._idle.append(conn)

    def release_thread_connection(self) -> None:
        """Close this thread's connection (for short-lived threads, which would otherwise leak it)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._lock:
            self._connections = [c for c in self._connections if c is not conn]
            self._idle = [c for c in self._idle if c is not conn]
        conn.close()

    def raise_mapped(self, exc: sqlite3.OperationalError) -> NoReturn:
        """Raise a full disk as InsufficientStorage, a lock never granted as EngineUnavailable, else `exc` itself."""
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code == SQLITE_FULL or "disk is full" in str(exc):
            cause = f"{exc} (the SQLite database {self.path} or its write-ahead log)"
            self.health.failed(DISK, cause)
            raise InsufficientStorage("writing the database", cause) from exc
        if code in (SQLITE_BUSY, SQLITE_LOCKED) or "database is locked" in str(exc):
            self.health.failed("sqlite", str(exc))
            raise EngineUnavailable("sqlite", str(exc)) from exc
        raise exc

    def query(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        """Run a read and return all rows."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            self.raise_mapped(exc)

    def query_one(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        """Run a read and return the first row or None."""
        try:
            row: sqlite3.Row | None = self.conn.execute(sql, params).fetchone()
        except sqlite3.OperationalError as exc:
            self.raise_mapped(exc)
        return row

    @contextmanager
    def atomic(self, user_id: str | None = None) -> Iterator[SqliteTransaction]:
        """A write transaction, grouped with the process's concurrent ones (group_commit.py): alone, whatever `user_id`.

        Returns once it is committed; raises (its statements undone) if the block raised or the COMMIT failed.
        """
        if getattr(self._local, "tx_conn", None) is not None or self.conn.in_transaction:
            raise RuntimeError("nested write transaction")
        if getattr(self._local, "alone", False):
            yield from self._atomic_alone(user_id)
            return
        tx: SqliteTransaction | None = None
        try:
            with self._group.member() as conn:
                tx = SqliteTransaction(conn, self)
                tx.user_id = user_id
                self._local.tx_conn = conn  # the block's reads see its own writes
                try:
                    yield tx
                finally:
                    self._local.tx_conn = None
        except BaseException:
            if tx is not None:
                tx.rolled_back()
            raise
        assert tx is not None, "member() yields or raises"
        self._committed(tx)

    def _atomic_alone(self, user_id: str | None) -> Iterator[SqliteTransaction]:
        """BEGIN IMMEDIATE on this thread's own connection, then COMMIT, or ROLLBACK on any exception."""
        conn = self.conn
        tx = SqliteTransaction(conn, self)
        tx.user_id = user_id
        with self._group.alone():
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                self.raise_mapped(exc)
            try:
                yield tx
            except BaseException:
                _roll_back(conn, tx)
                raise
            try:
                conn.execute("COMMIT")
            except BaseException as exc:
                _roll_back(conn, tx)
                if isinstance(exc, sqlite3.OperationalError):
                    self.raise_mapped(exc)
                raise
        self._committed(tx)

    @contextmanager
    def writing_alone(self) -> Iterator[sqlite3.Connection]:
        """This thread's write transactions inside run on its own connection (returned), never grouped.

        For a transaction that needs its connection's own settings (erase.py's `secure_delete`).
        """
        self._local.alone = True
        try:
            yield self.conn
        finally:
            self._local.alone = False

    def _committed(self, tx: SqliteTransaction) -> None:
        self.health.ok(DISK)
        self._checkpoints.committed()
        tx.committed()

    def open_schema(self, migrate: bool = False) -> list[schema.Migration]:
        """Create a new database at the newest schema; upgrade an older one if `migrate`, else refuse it.

        Safe to run concurrently: creation and each migration take the write lock. Returns the
        migrations applied (none for a new or current database).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self.connect()
        try:
            # WAL is a property of the file: set once, kept by every later connection.
            conn.execute("PRAGMA journal_mode = WAL")
            with immediate(conn):
                if version_of(conn) == 0:
                    create(conn)
            applied = migrate_to_latest(conn) if migrate else []
            schema.check_version(version_of(conn))
            return applied
        finally:
            conn.close()

    def size_bytes(self) -> int:
        """The database file plus its write-ahead log, on disk now."""
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += self.path.with_name(self.path.name + suffix).stat().st_size
            except FileNotFoundError:
                pass
        return total

    def schema_version(self) -> int:
        """The database's schema version (0 when the file is new)."""
        conn = self.connect()
        try:
            return version_of(conn)
        finally:
            conn.close()

    def claim_singleton(self, task: str) -> bool:
        """Whether this process may run `task`, which one process of the deployment runs at a time."""
        with self._lock:
            claim = self._singletons.setdefault(task, SingletonClaim(self.path.with_name(f"{self.path.name}-{task}")))
        return claim.claim()

    def close(self) -> None:
        """Close every connection this object opened (at app shutdown)."""
        with self._lock:
            self._closed = True
            connections, self._connections, self._idle = self._connections, [], []
        for conn in connections:
            conn.close()
        self._group.close()
        self._writer.close()
        self._checkpoints.close()
        for claim in self._singletons.values():
            claim.close()


def set_clause(changes: dict[str, Any], allowed: frozenset[str]) -> str:
    """`col = :col, …` for an UPDATE; refuses any column outside `allowed` (names never come from clients)."""
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
    return ", ".join(f"{column} = :{column}" for column in changes)


def _roll_back(conn: sqlite3.Connection, tx: Transaction) -> None:
    # A failed COMMIT (deferred constraint, disk full) leaves the transaction open, which would
    # wedge this thread's connection for good; and when SQLite has already rolled back by itself,
    # a second ROLLBACK would raise and hide the real error.
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    tx.rolled_back()


def _run_hooks(hooks: list[Callable[[], None]]) -> None:
    # The transaction is already decided; a failing hook must not undo or hide that.
    for hook in hooks:
        try:
            hook()
        except Exception:
            log.exception("transaction hook failed")
