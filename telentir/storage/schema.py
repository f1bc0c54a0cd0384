"""The schema and its upgrades: `schema.sql` creates a new database, numbered migrations upgrade an old one.

Version 1 is the first release's schema. Each later version is one file in
`telentir/storage/migrations/`, named `NNNN_what_it_does.sql` (NNNN = the version it
upgrades *to*), whose first line is a `-- ` comment saying what it does. `schema.sql` is
always the whole current schema, so a new database is created in one step at the newest
version, and `tests/operate/test_migrations.py` checks that migrating the oldest database gives
the very same schema.

A database is upgraded only on purpose: at `serve` start-up and by `telentir migrate`,
both under the data folder's lock; each migration runs in its own transaction together
with the version it sets (`PRAGMA user_version` on SQLite, the `schema_version` table on
PostgreSQL), so a crash leaves the database at one version or the next, never between.
Every other command refuses an older database and says to migrate.

One schema for both databases: `schema.sql` and the migrations are written for SQLite and
translated to PostgreSQL by `telentir.storage.dialect.postgres_ddl`. A step that cannot be
shared ships a second file, `NNNN_what_it_does.postgres.sql`, used on PostgreSQL instead.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from importlib import resources

INITIAL_VERSION = 1
_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


class SchemaError(Exception):
    """The database's schema version does not fit this server."""


class SchemaOutdated(SchemaError):
    """The database predates this server: `telentir migrate` upgrades it."""


@dataclass(frozen=True)
class Migration:
    """One upgrade step: the version it produces, its name, what it does, its SQL (and PostgreSQL's own, if any)."""

    version: int
    name: str
    description: str
    sql: str
    postgres_sql: str | None = None


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped with the package, in version order (checked to be contiguous)."""
    folder = resources.files("telentir.storage").joinpath("migrations")
    found = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = _NAME.fullmatch(entry.name)
        if match is None:
            continue
        sql = entry.read_text()
        first = sql.splitlines()[0] if sql else ""
        description = first[3:].strip() if first.startswith("-- ") else match.group(2).replace("_", " ")
        own = folder.joinpath(f"{match.group(1)}_{match.group(2)}.postgres.sql")
        postgres_sql = own.read_text() if own.is_file() else None
        found.append(Migration(int(match.group(1)), match.group(2), description, sql, postgres_sql))
    found.sort(key=lambda m: m.version)
    expected = list(range(INITIAL_VERSION + 1, INITIAL_VERSION + 1 + len(found)))
    if [m.version for m in found] != expected:
        raise SchemaError(f"migrations must be numbered {expected}, found {[m.version for m in found]}")
    return tuple(found)


def latest_version() -> int:
    """The schema version this server writes."""
    steps = migrations()
    return steps[-1].version if steps else INITIAL_VERSION


def schema_sql() -> str:
    """The whole current schema (the top-level schema.sql, shipped in the package)."""
    return resources.files("telentir").joinpath("schema.sql").read_text()


def version_of(conn: sqlite3.Connection) -> int:
    """A SQLite file's `PRAGMA user_version` (0: a new, empty database)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def pending(version: int) -> list[Migration]:
    """The migrations a database at `version` still needs, in order."""
    return [m for m in migrations() if m.version > version]


def check_version(version: int) -> None:
    """Refuse a database newer than this server, or older (until it is migrated)."""
    latest = latest_version()
    if version > latest:
        raise SchemaError(
            f"the database's schema is version {version}, newer than this server's ({latest}): "
            "run the newer server, or restore a backup made for this one"
        )
    if version < latest:
        raise SchemaOutdated(
            f"the database's schema is version {version} and this server needs {latest}: "
            "stop the server, back the data folder up, then run `telentir migrate`"
        )
