"""PostgreSQL metadata for several nodes: psycopg 3 with a connection pool.

Imported only when TELENTIR_DATABASE_URL names PostgreSQL. The services' SQL is the one
they write for SQLite (see `telentir.storage.db`): placeholders are translated once per
statement text and cached; rows index by position and by name like `sqlite3.Row`.

Write transactions take advisory locks at BEGIN: a user's writes run one at a time, writes
of different users side by side, and every write not marked as one user's alone in the
cluster; event ids commit in order per user (see `telentir.storage.pg_locks`). Reads need no
lock and borrow a pooled connection per statement, so an open event stream holds none.

Outages: every failure to reach the server (refused, reset, `AdminShutdown` on a restart, a
pool timeout, a serialization failure or deadlock) is `EngineUnavailable("postgresql")`, 503
with Retry-After. A statement that finds its pooled connection dead is retried once on a
fresh connection when that is safe: a read always; a write transaction only when the dead
connection failed at BEGIN (nothing of it ran yet). A connection lost during COMMIT leaves
the outcome unknown: the transaction's after-rollback hooks are not run then, so the blobs
it wrote stay (the sweeper removes them if the rows never landed) and no row can lose its
blob. While an outage is open a request waits at most OUTAGE_POOL_TIMEOUT_SECONDS for a
pooled connection (one already waiting when the outage is seen stops within as long), and
one that gets none tries a fresh connection: the pool's reconnection backs off, a node must
not wait for it once the server is back.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NoReturn, TypeVar

import psycopg
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import EngineUnavailable, InsufficientStorage
from . import pg_locks, schema
from .db import Cursor, Database, IntegrityError, Transaction, split_script
from .dialect import postgres_ddl, to_pyformat
from .health import EngineHealth, quiet_pool_log
from .pg_locks import WRITE_LOCK

log = logging.getLogger(__name__)

POOL_TIMEOUT_SECONDS = 10.0
OUTAGE_POOL_TIMEOUT_SECONDS = 1.0
# After a fresh connection failed, requests fail at once for this long instead of each trying
# again (on a silent network each try would hold the write lock for the connect timeout).
RECONNECT_PAUSE_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 5  # unless the URL sets connect_timeout: a dead host fails in seconds
ENGINE = "postgresql"
# SQLSTATEs of a connection the server ended: admin or crash shutdown, not accepting connections yet.
_SERVER_ENDED = frozenset({"57P01", "57P02", "57P03"})

T = TypeVar("T")
Release = Callable[[], None]


class PgRow(tuple[Any, ...]):
    """A row like `sqlite3.Row`: `row[0]`, `row["name"]`, `dict(row)`, unpacking."""

    _index: dict[str, int]

    def __new__(cls, values: Sequence[Any], index: dict[str, int]) -> PgRow:
        """A row of `values` whose column names map to positions through `index`."""
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: Any) -> Any:
        """By column name or by position."""
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._index)


def _row_factory(cursor: Any) -> RowMaker[PgRow]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: PgRow(values, index)


class PostgresTransaction(Transaction):
    """A write transaction on one pooled connection, holding the write lock."""

    def __init__(self, conn: psycopg.Connection[Any], db: PostgresDatabase) -> None:
        super().__init__()
        self.conn, self._db = conn, db

    def execute(self, sql: str, params: Any = ()) -> Cursor:
        """Run one statement inside the transaction."""
        try:
            return self.conn.execute(self._db.translate(sql), params)
        except psycopg.Error as exc:
            self._db.raise_mapped(exc)

    def insert(self, sql: str, params: Any = ()) -> int:
        """Run one INSERT and return the new row's `id` (RETURNING id)."""
        row = self.execute(sql + " RETURNING id", params).fetchone()
        assert row is not None, "INSERT … RETURNING always returns the row"
        return int(row[0])

    def execute_many(self, sql: str, rows: Sequence[Any]) -> None:
        """Run one statement once per parameter row (pipelined by psycopg)."""
        try:
            with self.conn.cursor() as cursor:
                cursor.executemany(self._db.translate(sql), rows)
        except psycopg.Error as exc:
            self._db.raise_mapped(exc)

    def lock_user(self, user_id: str) -> None:
        """Hold the user's row (FOR UPDATE) until commit: one user's money moves one transaction at a time."""
        self.execute("SELECT 1 FROM users WHERE id = ? FOR UPDATE", (user_id,))


class PostgresDatabase(Database):
    """A PostgreSQL database shared by every node."""

    dialect = "postgresql"

    def __init__(self, url: str, pool_size: int = 20, health: EngineHealth | None = None) -> None:
        self.url = url
        self.health = health or EngineHealth()
        quiet_pool_log()
        self._fresh_failed_at = -RECONNECT_PAUSE_SECONDS
        self._connect_kwargs: dict[str, Any] = {"autocommit": True, "row_factory": _row_factory}
        if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(url):
            self._connect_kwargs["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        self._sql_cache: dict[str, str] = {}
        self._local = threading.local()  # the connection of this thread's open transaction, if any
        # This process's writers queue here, not each on a pooled connection waiting for a lock:
        # cluster-wide writers on the first, a user's writers on the stripe of that user.
        self._write_lock = threading.Lock()
        self._user_queues = pg_locks.UserQueues(running=max(2, pool_size) // 2)
        self._claims: dict[str, psycopg.Connection[Any]] = {}  # task -> the connection holding its lock
        self._claims_lock = threading.Lock()
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(2, pool_size),
            kwargs=self._connect_kwargs,
            timeout=POOL_TIMEOUT_SECONDS,
            name="telentir",
            open=False,
        )
        self._pool.open(wait=True, timeout=POOL_TIMEOUT_SECONDS)

    def describe(self) -> str:
        """The server and database, without credentials."""
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return f"postgresql://{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def translate(self, sql: str) -> str:
        """The statement with psycopg's placeholders (cached: services reuse a few hundred texts)."""
        translated = self._sql_cache.get(sql)
        if translated is None:
            translated = self._sql_cache[sql] = to_pyformat(sql)
        return translated

    # --- failures ------------------------------------------------------------------------

    def raise_mapped(self, exc: psycopg.Error) -> NoReturn:
        """Raise a driver error as the service layer knows it: IntegrityError, 503/507, else `exc` itself."""
        if isinstance(exc, psycopg.errors.IntegrityError):
            raise IntegrityError(str(exc)) from exc
        if isinstance(exc, psycopg.errors.DiskFull):
            self.health.failed(ENGINE, f"the server's disk is full: {_first_line(exc)}")
            raise InsufficientStorage("the PostgreSQL server's disk", _first_line(exc)) from exc
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            # Connection failures, shutdowns, pool timeouts, serialization failures and deadlocks:
            # nothing a client did wrong, all worth a retry in a moment.
            self.health.failed(ENGINE, f"{type(exc).__name__}: {_first_line(exc)}")
            raise EngineUnavailable(ENGINE, _first_line(exc)) from exc
        raise exc

    # --- connections ---------------------------------------------------------------------

    def _checkout(self) -> tuple[psycopg.Connection[Any], Release]:
        """A pooled connection, or a fresh one when the pool has none in time (mapped errors).

        The wait is cut in slices of OUTAGE_POOL_TIMEOUT_SECONDS: a request that began waiting
        before this process saw the outage (the pool was growing when the server went away)
        stops within a slice of it being seen, not after the whole POOL_TIMEOUT_SECONDS
        (measured: five requests and a /readyz waited 10 s at an outage's start).
        """
        deadline = time.monotonic() + POOL_TIMEOUT_SECONDS
        while True:
            away = self.health.is_away(ENGINE)
            wait = (
                OUTAGE_POOL_TIMEOUT_SECONDS if away else min(OUTAGE_POOL_TIMEOUT_SECONDS, deadline - time.monotonic())
            )
            try:
                conn = self._pool.getconn(timeout=max(wait, 0.01))
            except PoolTimeout:
                if away or self.health.is_away(ENGINE) or time.monotonic() >= deadline:
                    # The pool may still be backing off its reconnection after an outage.
                    return self._fresh()
                continue
            return conn, functools.partial(self._pool.putconn, conn)

    def _fresh(self) -> tuple[psycopg.Connection[Any], Release]:
        """A new connection outside the pool (closed on release), for a retry."""
        if time.monotonic() - self._fresh_failed_at < RECONNECT_PAUSE_SECONDS:
            self.health.failed(ENGINE, "a connection attempt failed a moment ago")
            raise EngineUnavailable(ENGINE, "a connection attempt failed a moment ago")
        try:
            conn = psycopg.connect(self.url, **self._connect_kwargs)
        except psycopg.Error as exc:
            self._fresh_failed_at = time.monotonic()
            self.raise_mapped(exc)
        return conn, conn.close

    def _after_lost(self, exc: psycopg.Error) -> None:
        """A pooled connection was found dead: drop the pool's other dead ones too (a restart kills them all)."""
        log.info("PostgreSQL connection lost (%s); retrying on a fresh connection", _first_line(exc))
        try:
            self._pool.check()
        except Exception:
            log.debug("checking the pool's connections failed", exc_info=True)

    def _read(self, run: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run a read; on a dead pooled connection once more on a fresh one (a read is always safe to repeat)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:  # inside this thread's transaction: reads see its own writes, as on SQLite
            try:
                return run(conn)
            except psycopg.Error as exc:
                self.raise_mapped(exc)
        result, _, release = self._retried_once(run)
        release()
        self.health.ok(ENGINE)
        return result

    def _retried_once(self, run: Callable[[psycopg.Connection[Any]], T]) -> tuple[T, psycopg.Connection[Any], Release]:
        """Run `run` on a pooled connection, and once more on a fresh one if that connection was dead.

        Only for work that is safe to repeat: a read, or BEGIN and the write lock (nothing of the
        transaction has run yet). Returns the result and the connection, still held: the caller
        releases it. A failure releases it and comes out mapped.
        """
        conn, release = self._checkout()
        try:
            return run(conn), conn, release
        except psycopg.Error as exc:
            release()
            if not _connection_lost(exc):
                self.raise_mapped(exc)
            self._after_lost(exc)
        conn, release = self._fresh()
        try:
            return run(conn), conn, release
        except psycopg.Error as exc:
            release()
            self.raise_mapped(exc)

    def query(self, sql: str, params: Any = ()) -> list[Any]:
        """Run a read and return all rows."""
        statement = self.translate(sql)
        return self._read(lambda conn: conn.execute(statement, params).fetchall())

    def query_one(self, sql: str, params: Any = ()) -> Any:
        """Run a read and return the first row or None."""
        statement = self.translate(sql)
        return self._read(lambda conn: conn.execute(statement, params).fetchone())

    def _begin_write(self, begin: bytes) -> tuple[psycopg.Connection[Any], Release]:
        """A connection in a write transaction holding its locks; retried once on a fresh one if it was dead."""
        _, conn, release = self._retried_once(lambda conn: conn.execute(begin))
        return conn, release

    @contextmanager
    def atomic(self, user_id: str | None = None) -> Iterator[PostgresTransaction]:
        """A write transaction holding the user's lock (or the global one): COMMIT, or ROLLBACK on any exception."""
        if getattr(self._local, "conn", None) is not None:
            raise RuntimeError("nested write transaction")
        queue: AbstractContextManager[Any]
        if user_id is None:
            queue, begin = self._write_lock, pg_locks.BEGIN_GLOBAL
        else:
            key = pg_locks.user_key(user_id)
            queue, begin = self._user_queues.turn(key), pg_locks.begin_user(key)
        with queue:
            conn, release = self._begin_write(begin)
            tx = PostgresTransaction(conn, self)
            tx.user_id = user_id
            self._local.conn = conn
            try:
                yield tx
            except BaseException:
                self._local.conn = None
                _roll_back_quietly(conn)
                release()
                tx.rolled_back()
                raise
            self._local.conn = None
            try:
                conn.execute(b"COMMIT")
            except psycopg.Error as exc:
                release()
                if _connection_lost(exc):
                    # COMMIT may have reached the server: keep what the rows may name (no rollback hooks).
                    log.warning(
                        "PostgreSQL connection lost during COMMIT (%s): the transaction may or may not have "
                        "committed; the blobs it wrote are kept for the sweeper to judge",
                        _first_line(exc),
                    )
                else:
                    tx.rolled_back()  # refused at COMMIT (a serialization failure): nothing committed
                self.raise_mapped(exc)
            release()
        self.health.ok(ENGINE)
        tx.committed()

    @contextmanager
    def settled(self, user_id: str) -> Iterator[None]:
        """Reads inside run in one transaction holding the global lock and the user's lock, both shared.

        Shared: it waits for the user's write in flight (and for a cluster-wide one), not for
        other readers; until it ends, no write of the user can start, so the ids read inside
        bound everything of the user committed later.
        """
        if getattr(self._local, "conn", None) is not None:
            raise RuntimeError("settled() inside a transaction")
        conn, release = self._begin_write(pg_locks.begin_settled(pg_locks.user_key(user_id)))
        self._local.conn = conn
        try:
            yield
        finally:
            self._local.conn = None
            _roll_back_quietly(conn)  # it wrote nothing: ROLLBACK only ends it and frees the locks
            release()

    def claim_singleton(self, task: str) -> bool:
        """Whether this process runs `task` for the deployment: a session advisory lock on a connection of its own.

        Held for the process's life; if that connection dies, PostgreSQL releases the lock and
        the claim is tried afresh (another node may have taken it meanwhile).
        """
        with self._claims_lock:
            conn = self._claims.get(task)
            if conn is not None and not conn.closed and not conn.broken:
                return True
            self._claims.pop(task, None)
            key = int.from_bytes(hashlib.sha256(f"telentir:{task}".encode()).digest()[:8], "big", signed=True)
            options = {name: value for name, value in self._connect_kwargs.items() if name != "row_factory"}
            try:
                conn = psycopg.connect(self.url, **options)
            except psycopg.Error as exc:
                self.raise_mapped(exc)  # the server is away: no claim this round
            try:
                claimed = bool(_value(conn, "SELECT pg_try_advisory_lock(%s)", (key,)))
            except psycopg.Error as exc:
                conn.close()
                self.raise_mapped(exc)
            if claimed:
                self._claims[task] = conn
                return True
            conn.close()
            return False

    def open_schema(self, migrate: bool = False) -> list[schema.Migration]:
        """Create the schema in an empty database, or upgrade (if `migrate`) or refuse an older one.

        Every step holds the write lock: nodes starting together create or migrate once, and
        no node writes meanwhile.
        """
        with self._pool.connection() as conn:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
                if _version_of(conn) == 0:
                    _create(conn)
            applied = _migrate(conn) if migrate else []
            schema.check_version(_version_of(conn))
            return applied

    def schema_version(self) -> int:
        """The `schema_version` table's number (0 for an empty database)."""
        with self._pool.connection() as conn:
            return _version_of(conn)

    def identity_columns(self) -> dict[str, str]:
        """Table → its identity (self-counting) column."""
        rows = self.query(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND is_identity = 'YES'"
        )
        return {row[0]: row[1] for row in rows}

    def continue_ids_after(self, table: str, column: str, last: int) -> None:
        """Make the next id the identity of `table.column` hands out `last + 1` (after a bulk copy)."""
        with self.atomic() as tx:
            tx.execute("SELECT setval(pg_get_serial_sequence(?, ?), ?, ?)", (table, column, max(last, 1), last > 0))

    def park_connection(self) -> None:
        """Nothing to hand on: reads borrow a pooled connection per statement."""
        return None

    def release_thread_connection(self) -> None:
        """Nothing to close: no connection belongs to a thread outside its transaction."""
        return None

    def size_bytes(self) -> int:
        """The database's size as PostgreSQL reports it."""
        return int(self.query_value("SELECT pg_database_size(current_database())"))

    def close(self) -> None:
        """Close the pool and its connections, giving up every claimed task."""
        with self._claims_lock:
            claims, self._claims = list(self._claims.values()), {}
        for conn in claims:
            conn.close()
        self._pool.close()


def _roll_back_quietly(conn: psycopg.Connection[Any]) -> None:
    """ROLLBACK if the connection still can (a dead one has nothing left to roll back)."""
    if conn.closed or conn.broken:
        return
    try:
        conn.execute(b"ROLLBACK")
    except psycopg.Error:
        log.debug("ROLLBACK failed", exc_info=True)


def _connection_lost(exc: psycopg.Error) -> bool:
    """Whether `exc` says the connection itself is gone (not a pool timeout, not a refused statement)."""
    if isinstance(exc, PoolTimeout):
        return False
    if isinstance(exc, psycopg.InterfaceError):
        return True  # "the connection is closed"
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _SERVER_ENDED


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _value(conn: psycopg.Connection[Any], sql: str, params: Any = ()) -> Any:
    """The first column of the one row a statement returns."""
    row = conn.execute(sql.encode(), params).fetchone()
    assert row is not None, "the statement returns one row"
    return row[0]


def _version_of(conn: psycopg.Connection[Any]) -> int:
    if _value(conn, "SELECT to_regclass('schema_version')") is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def _create(conn: psycopg.Connection[Any]) -> None:
    """The whole current schema in an empty database; refuse one that holds other tables."""
    tables = _value(conn, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()")
    if tables:
        raise schema.SchemaError("the database holds tables but no schema version: it is not Telentir's")
    # citext: the case-insensitive email column (a trusted extension: the database owner may add it).
    conn.execute("CREATE EXTENSION IF NOT EXISTS citext")
    _execute_script(conn, postgres_ddl(schema.schema_sql()))
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (schema.latest_version(),))


def _migrate(conn: psycopg.Connection[Any]) -> list[schema.Migration]:
    """Apply the pending migrations, each in one transaction with the version it sets."""
    applied = []
    for step in schema.pending(_version_of(conn)):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            if _version_of(conn) >= step.version:
                continue  # another node applied it meanwhile
            _execute_script(conn, postgres_ddl(step.postgres_sql or step.sql))
            conn.execute("UPDATE schema_version SET version = %s", (step.version,))
        applied.append(step)
    return applied


def _execute_script(conn: psycopg.Connection[Any], script: str) -> None:
    for statement in split_script(script):
        if statement.strip():
            conn.execute(statement.encode())  # bytes: no placeholder parsing of DDL
