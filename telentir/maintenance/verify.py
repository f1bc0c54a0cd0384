"""`telentir verify`: is this data folder whole, and does the master key open it?

Checks, each reported by name: SQLite's integrity and foreign keys; every ciphertext file
a row names present with the size the row records; no file that no row names; every
sealed secret opening with the configured master key; and, in a backup folder, every file
matching the manifest. Read-only, so it may run beside a server: a file the server adds
or removes while the check runs is looked up again before it is called a problem.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from .. import crypto
from ..config import Config
from ..storage import schema
from ..storage.blobs import BlobStore
from .backup import MANIFEST, BackupError, check_files, read_manifest
from .files import Progress, existing_master_key, no_progress
from .sealed import count_sealed, sealed_secrets

SHOWN_PER_CHECK = 20  # a report names this many problems of one kind, then counts the rest
_OURS = re.compile(r"[A-Za-z0-9_-]{20,64}(\.[0-9a-f]{8}\.tmp)?")


@dataclass
class Check:
    """One check's outcome: a one-line summary and the problems found."""

    name: str
    summary: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems


@dataclass
class Report:
    """Every check of a verify run."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every check passed."""
        return all(check.ok for check in self.checks)


def verify(config: Config, progress: Progress = no_progress) -> Report:
    """Run every check on the configured data folder."""
    report = Report()
    if not config.database_path.exists():
        report.checks.append(Check("database", problems=[f"no database at {config.database_path}"]))
        return report
    with closing(sqlite3.connect(config.database_path, isolation_level=None)) as conn:
        conn.execute("PRAGMA busy_timeout = 30000")
        report.checks.append(_check_database(conn))
        report.checks += _check_blobs(conn, config.blob_path, progress)
        report.checks.append(_check_secrets(conn, config, progress))
    if (config.data_dir / MANIFEST).exists():
        report.checks.append(_check_manifest(config.data_dir, progress))
    return report


def _check_database(conn: sqlite3.Connection) -> Check:
    check = Check("database")
    rows = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    if rows != ["ok"]:
        check.problems += [f"SQLite integrity: {row}" for row in rows]
    for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
        check.problems.append(f"row {rowid} of {table} names a missing row of {parent}")
    version, latest = schema.version_of(conn), schema.latest_version()
    if version > latest:
        check.problems.append(f"schema version {version} is newer than this server's ({latest})")
    note = "" if version == latest else f"; schema version {version}: `telentir migrate` upgrades it to {latest}"
    check.summary = f"integrity ok, foreign keys ok{note}" if check.ok else ""
    return check


def _check_blobs(conn: sqlite3.Connection, root: Path, progress: Progress) -> list[Check]:
    """Referenced files present with their recorded size; files no row references."""
    present, absent = Check("ciphertext files"), Check("unreferenced files")
    conn.execute("BEGIN")  # one snapshot of the rows for the whole walk
    rows = dict(conn.execute("SELECT blob, size FROM objects WHERE blob IS NOT NULL").fetchall())
    conn.execute("COMMIT")
    store = BlobStore(root)
    damaged: dict[str, str] = {}
    with progress("Checking ciphertext files", len(rows)) as advance:
        for blob_id, size in rows.items():
            problem = _blob_problem(store.path_for(blob_id), size)
            if problem:
                damaged[blob_id] = problem
            advance(1)
    orphans = [path for path in store.iter_files() if _OURS.fullmatch(path.name) and path.name not in rows]
    # The server may have changed rows since the snapshot: only what is still wrong now counts.
    damaged = {b: p for b, p in damaged.items() if _still_referenced(conn, b)}
    orphans = [path for path in orphans if path.exists() and not _still_referenced(conn, path.name)]
    present.problems = _capped([f"{problem}: blob {blob_id}" for blob_id, problem in damaged.items()])
    present.summary = f"{len(rows)} referenced, all present with their recorded size" if present.ok else ""
    absent.problems = _capped([f"{path}: no object names this file" for path in orphans])
    absent.summary = "none (a crash leaves some; `serve` removes them at start)" if absent.ok else ""
    return [present, absent]


def _blob_problem(path: Path, size: int) -> str | None:
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return f"missing file {path}"
    if actual != size:
        return f"{path} has {actual} bytes, its object records {size} (truncated or damaged)"
    return None


def _still_referenced(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM objects WHERE blob = ?", (name,)).fetchone() is not None


def _check_secrets(conn: sqlite3.Connection, config: Config, progress: Progress) -> Check:
    check = Check("master key")
    try:
        key = existing_master_key(config)
    except crypto.CryptoError as exc:
        check.problems.append(f"the master key cannot be read: {exc}")
        return check
    if key is None:
        check.problems.append(f"no master key: TELENTIR_MASTER_KEY is unset and {config.master_key_path} is missing")
        return check
    failed = []
    with progress("Opening sealed secrets", count_sealed(conn)) as advance:
        for secret in sealed_secrets(conn):
            try:
                crypto.unseal(key, secret.sealed, secret.context.encode())
            except crypto.CryptoError:
                failed.append(secret.label)
            advance(1)
    if failed:
        check.problems = _capped(
            [f"the sealed private key of {label} does not open with the master key" for label in failed]
        )
        check.problems.insert(
            0, f"{len(failed)} sealed secret(s) do not open with the master key {crypto.master_key_fingerprint(key)}"
        )
    else:
        check.summary = f"every sealed secret opens with {crypto.master_key_fingerprint(key)}"
    return check


def _check_manifest(folder: Path, progress: Progress) -> Check:
    check = Check("backup manifest")
    try:
        manifest = read_manifest(folder)
    except BackupError as exc:
        check.problems.append(str(exc))
        return check
    check.problems = _capped(check_files(folder, manifest, progress))
    check.summary = f"{len(manifest['files'])} file(s) match their SHA-256" if check.ok else ""
    return check


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= SHOWN_PER_CHECK:
        return problems
    return [*problems[:SHOWN_PER_CHECK], f"… and {len(problems) - SHOWN_PER_CHECK} more"]
