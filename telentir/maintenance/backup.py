"""Backups that restore: an online, consistent snapshot of a data folder, its manifest, and restore.

A backup is a folder laid out like a data folder (`telentir.db`, `blobs/…`, and
`master.key` only when asked for), plus `manifest.json`, written last: a folder without
it is an interrupted backup. The database is copied with SQLite's backup API inside one
read transaction, so the copy is the database as it was at one instant while the server
goes on writing (WAL readers never block writers); then every file that snapshot
references is copied. A file can vanish meanwhile, when the server deletes or replaces
its object after the snapshot: the snapshot is then taken again and only the files it
adds are copied, until a round finds every file.

Restore fills an empty data folder from a backup after checking every file against the
manifest, then moves the event ids on (see `_skip_event_ids`), so that clients holding
ids the restored server never issued are told to resync instead of silently missing events.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, crypto
from ..config import Config
from ..ids import now_iso
from ..storage import schema
from ..storage.blobs import fsync_dir
from .files import (
    Progress,
    copy_file,
    existing_master_key,
    is_empty_folder,
    master_key_text,
    no_progress,
    sha256_file,
    write_private,
)
from .lock import data_folder_lock

FORMAT = "telentir-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "telentir.db"
BLOBS = "blobs"
MASTER_KEY = "master.key"
SNAPSHOT_ROUNDS = 5
PAGES_PER_STEP = 1024


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


@dataclass
class Snapshot:
    """The database copy of one round and what it references."""

    blobs: dict[str, int]  # blob id -> size recorded in its row
    tables: dict[str, int]
    schema_version: int
    event_sequence: int


@dataclass
class BackupResult:
    """What `backup` wrote."""

    path: Path
    manifest: dict[str, Any]
    rounds: int = 1
    notes: list[str] = field(default_factory=list)


# --- backup ---------------------------------------------------------------------------------


def backup(
    config: Config, dest: Path, include_master_key: bool = False, progress: Progress = no_progress
) -> BackupResult:
    """Write a consistent backup of the configured data folder to `dest` (absent or empty)."""
    dest = Path(dest)
    if not is_empty_folder(dest):
        raise BackupError(f"{dest} is not empty: back up into a new folder")
    if not config.database_path.exists():
        raise BackupError(f"no database at {config.database_path}: nothing to back up")
    key = existing_master_key(config)
    if key is None:
        raise BackupError(
            f"no master key (TELENTIR_MASTER_KEY, or the file {config.master_key_path}): a backup could not be opened"
        )
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        return _write_backup(config, dest, key, include_master_key, progress)
    except BaseException:
        _remove_contents(dest, remove_folder=created)
        raise


def _write_backup(config: Config, dest: Path, key: bytes, include_key: bool, progress: Progress) -> BackupResult:
    files: dict[str, dict[str, Any]] = {}
    rounds = 0
    while True:
        rounds += 1
        snap = _snapshot(config.database_path, dest / DATABASE, progress)
        missing = _copy_blobs(config.blob_path, dest, snap.blobs, files, progress)
        if not missing:
            break
        if rounds == SNAPSHOT_ROUNDS:
            raise BackupError(
                f"{len(missing)} ciphertext file(s) kept vanishing while the backup ran ({SNAPSHOT_ROUNDS} "
                "snapshots): the server deletes faster than the backup copies; retry at a quieter time"
            )
    _drop_unreferenced(dest, files, snap.blobs)
    files[DATABASE] = _file_entry(dest / DATABASE)
    if include_key:
        write_private(dest / MASTER_KEY, master_key_text(key))
        files[MASTER_KEY] = _file_entry(dest / MASTER_KEY)
    manifest = _manifest(snap, key, include_key, files)
    os.sync()  # every copied file is on disk before the manifest says the backup is complete
    _write_manifest(dest, manifest)
    return BackupResult(dest, manifest, rounds)


def _snapshot(source: Path, target: Path, progress: Progress) -> Snapshot:
    """Copy the database as of one instant into `target` (replacing an earlier round's copy)."""
    target.unlink(missing_ok=True)
    # Read-write open, though nothing is written: read-only opens of a WAL database fail when
    # no server is running to have made its shared-memory file.
    with closing(sqlite3.connect(source, isolation_level=None)) as src:
        src.execute("PRAGMA busy_timeout = 30000")
        # One read transaction across every step: the copy is one snapshot, and the backup
        # never restarts however much the server writes meanwhile.
        src.execute("BEGIN")
        src.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        with closing(sqlite3.connect(target, isolation_level=None)) as dst:
            pages = int(src.execute("PRAGMA page_count").fetchone()[0])
            with progress("Copying the database", pages) as advance:
                done = [0]

                def step(status: int, remaining: int, total: int) -> None:
                    advance(max(0, total - remaining - done[0]))
                    done[0] = total - remaining

                src.backup(dst, pages=PAGES_PER_STEP, progress=step)
            src.execute("COMMIT")
            # One self-contained file: no -wal beside it (the server turns WAL back on at start).
            dst.execute("PRAGMA journal_mode = DELETE")
            return _describe(dst)


def _describe(conn: sqlite3.Connection) -> Snapshot:
    names = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    ).fetchall()
    # Table names come from the file itself, quoted as SQL identifiers (a doubled quote inside).
    tables = {
        name: int(conn.execute('SELECT COUNT(*) FROM "{}"'.format(name.replace('"', '""'))).fetchone()[0])  # noqa: S608
        for (name,) in names
    }
    blobs = {row[0]: int(row[1]) for row in conn.execute("SELECT blob, size FROM objects WHERE blob IS NOT NULL")}
    sequence = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return Snapshot(blobs, tables, schema.version_of(conn), int(sequence[0]) if sequence else 0)


def _copy_blobs(
    blob_root: Path, dest: Path, wanted: dict[str, int], files: dict[str, dict[str, Any]], progress: Progress
) -> list[str]:
    """Copy the referenced files not copied yet; returns the ids of those that are gone."""
    todo = [blob_id for blob_id in wanted if _blob_name(blob_id) not in files]
    missing = []
    with progress("Copying ciphertext files", len(todo)) as advance:
        for blob_id in todo:
            name = _blob_name(blob_id)
            try:
                size, digest = copy_file(blob_root / name.removeprefix(BLOBS + "/"), dest / name)
            except FileNotFoundError:
                missing.append(blob_id)
            else:
                files[name] = {"bytes": size, "sha256": digest}
            advance(1)
    return missing


def _drop_unreferenced(dest: Path, files: dict[str, dict[str, Any]], wanted: dict[str, int]) -> None:
    """Remove files copied in an earlier round that the final snapshot no longer names."""
    keep = {_blob_name(blob_id) for blob_id in wanted}
    for name in [n for n in files if n.startswith(BLOBS + "/") and n not in keep]:
        (dest / name).unlink()
        del files[name]


def _blob_name(blob_id: str) -> str:
    """A blob's path inside a data folder or backup (the blob store's sharding: first two characters)."""
    return f"{BLOBS}/{blob_id[:2]}/{blob_id}"


def _file_entry(path: Path) -> dict[str, Any]:
    size, digest = sha256_file(path)
    return {"bytes": size, "sha256": digest}


def _manifest(snap: Snapshot, key: bytes, include_key: bool, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_at": now_iso(),
        "server_version": __version__,
        "schema_version": snap.schema_version,
        "tables": snap.tables,
        "event_sequence": snap.event_sequence,
        "master_key_fingerprint": crypto.master_key_fingerprint(key),
        "master_key_included": include_key,
        "files": dict(sorted(files.items())),
    }


def _write_manifest(dest: Path, manifest: dict[str, Any]) -> None:
    tmp = dest / f".{MANIFEST}.tmp"
    with open(tmp, "w") as fh:
        json.dump(manifest, fh, indent=1)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dest / MANIFEST)
    fsync_dir(dest)


def _remove_contents(folder: Path, remove_folder: bool) -> None:
    if remove_folder:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


# --- reading and checking a backup --------------------------------------------------------------


def read_manifest(source: Path) -> dict[str, Any]:
    """The backup's manifest, checked to be one this server can restore."""
    path = Path(source) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise BackupError(f"{path} is missing: {source} is not a complete backup") from exc
    except ValueError as exc:
        raise BackupError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path} is not a Telentir backup manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(
            f"the backup's format version is {manifest.get('format_version')!r}; this server reads {FORMAT_VERSION}"
        )
    if not isinstance(manifest.get("files"), dict) or DATABASE not in manifest["files"]:
        raise BackupError(f"{path} lists no database")
    if int(manifest.get("schema_version", 0)) > schema.latest_version():
        raise BackupError(
            f"the backup's schema is version {manifest['schema_version']}, newer than this server's "
            f"({schema.latest_version()}): restore it with the server version that made it"
        )
    return manifest


def check_files(source: Path, manifest: dict[str, Any], progress: Progress = no_progress) -> list[str]:
    """Problems with the backup's files: each listed one present with its size and SHA-256."""
    problems = []
    entries = manifest["files"]
    with progress("Checking the backup's files", len(entries)) as advance:
        for name, entry in entries.items():
            problems.extend(_check_file(Path(source), name, entry))
            advance(1)
    return problems


def _check_file(source: Path, name: str, entry: dict[str, Any]) -> list[str]:
    path = source / name
    if ".." in Path(name).parts or Path(name).is_absolute():
        return [f"{name}: not a path inside the backup"]
    if not path.is_file():
        return [f"{name}: missing"]
    size, digest = sha256_file(path)
    if size != entry.get("bytes"):
        return [f"{name}: {size} bytes where the manifest says {entry.get('bytes')} (truncated or changed)"]
    if digest != entry.get("sha256"):
        return [f"{name}: its SHA-256 does not match the manifest (the file changed)"]
    return []


# --- restore --------------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    """What `restore` did, and what the operator still has to do."""

    manifest: dict[str, Any]
    key_written: Path | None = None
    notes: list[str] = field(default_factory=list)


def restore(config: Config, source: Path, progress: Progress = no_progress) -> RestoreResult:
    """Fill the configured (empty or absent) data folder from the backup at `source`."""
    source = Path(source)
    manifest = read_manifest(source)
    _check_targets_empty(config)
    problems = check_files(source, manifest, progress)
    if problems:
        raise BackupError("the backup does not match its manifest:\n  " + "\n  ".join(problems))
    plan = _key_plan(config, source, manifest)
    with data_folder_lock(config):
        undo = _Undo()
        try:
            for folder in (config.data_dir, config.blob_path):
                undo.take_folder(folder)
            result = _restore_files(config, source, manifest, progress, undo)
            if plan.write_key is not None:
                undo.files.append(config.master_key_path)
                write_private(config.master_key_path, plan.write_key)
                result.key_written = config.master_key_path
        except BaseException:
            undo.run()
            raise
    result.notes.extend(plan.notes)
    return result


class _Undo:
    """What a failed restore takes back: folders it made, what it put in folders that were empty, files."""

    def __init__(self) -> None:
        self.made: list[Path] = []
        self.emptied: list[Path] = []
        self.files: list[Path] = []

    def take_folder(self, folder: Path) -> None:
        """Use `folder` (absent or empty): made now, or emptied again on failure."""
        if folder.exists():
            self.emptied.append(folder)
        else:
            folder.mkdir(parents=True)
            self.made.append(folder)

    def run(self) -> None:
        """Put things back as they were."""
        for path in self.files:
            path.unlink(missing_ok=True)
        for folder in self.emptied:
            _remove_contents(folder, remove_folder=False)
        for folder in reversed(self.made):
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class _KeyPlan:
    write_key: bytes | None = None
    notes: list[str] = field(default_factory=list)


def _key_plan(config: Config, source: Path, manifest: dict[str, Any]) -> _KeyPlan:
    """Where the master key will come from; refuse a configured key that is not the backup's."""
    expected = manifest.get("master_key_fingerprint")
    included = manifest["files"].get(MASTER_KEY) is not None
    configured = existing_master_key(config)
    if configured is not None:
        if crypto.master_key_fingerprint(configured) != expected:
            where = "TELENTIR_MASTER_KEY" if config.master_key else str(config.master_key_path)
            raise BackupError(
                f"the configured master key ({where}) is not the one this backup was made with "
                f"(fingerprint {expected}): the restored secrets would not open"
            )
        return _KeyPlan(notes=["The configured master key is the backup's."])
    if included:
        key = crypto.parse_master_key((source / MASTER_KEY).read_text())
        if crypto.master_key_fingerprint(key) != expected:
            raise BackupError("the backup's master.key does not match the fingerprint in its manifest")
        return _KeyPlan(write_key=master_key_text(key))
    return _KeyPlan(
        notes=[
            f"The backup holds no master key: put the key with fingerprint {expected} at "
            f"{config.master_key_path} (or set TELENTIR_MASTER_KEY) before starting the server."
        ]
    )


def _check_targets_empty(config: Config) -> None:
    """The data folder, database and blob folder must be absent or empty: restore never overwrites."""
    busy = [str(p) for p in (config.data_dir, config.blob_path) if not is_empty_folder(p)]
    busy += [str(p) for p in _database_files(config.database_path) if p.exists()]
    if busy:
        raise BackupError(
            "restore fills an empty data folder only, and these hold data: "
            + ", ".join(dict.fromkeys(busy))
            + ". Point TELENTIR_DATA_DIR at a new folder, or move these away first."
        )


def _database_files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def _restore_files(
    config: Config, source: Path, manifest: dict[str, Any], progress: Progress, undo: _Undo
) -> RestoreResult:
    entries = {name: entry for name, entry in manifest["files"].items() if name.startswith(BLOBS + "/")}
    with progress("Restoring ciphertext files", len(entries)) as advance:
        for name, entry in entries.items():
            _copy_checked(source / name, config.blob_path / name.removeprefix(BLOBS + "/"), entry)
            advance(1)
    # The database last, under a temporary name: until the rename there is no half-restored database.
    staging = config.database_path.with_name(config.database_path.name + ".restoring")
    undo.files += [staging, config.database_path]
    config.database_path.parent.mkdir(parents=True, exist_ok=True)
    _copy_checked(source / DATABASE, staging, manifest["files"][DATABASE])
    _skip_event_ids(staging)
    os.sync()
    os.replace(staging, config.database_path)
    fsync_dir(config.database_path.parent)
    return RestoreResult(manifest)


def _copy_checked(source: Path, target: Path, entry: dict[str, Any]) -> None:
    size, digest = copy_file(source, target)
    if (size, digest) != (entry["bytes"], entry["sha256"]):
        raise BackupError(f"{source} changed while it was restored: its SHA-256 no longer matches the manifest")


def _skip_event_ids(database: Path) -> None:
    """Move event ids past any the lost server may have issued, and make older cursors resync.

    The backup's newest event is older than what the lost server had sent: a client may hold
    a later id. Reusing those ids would make such a client skip the new events that get them
    (it believes it has them). So ids continue from the current time in microseconds, which
    no server writing fewer than a million events a second can have reached since the
    backup, and which grows across repeated restores; and every cursor below that point is
    answered `event: resync`, the rule for a cursor whose events are gone (docs/protocol.md §6).
    """
    floor = int(time.time() * 1_000_000)
    with closing(sqlite3.connect(database, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        current = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        skip_to = max(floor, int(current[0]) if current else 0)
        if current is None:
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (skip_to,))
        else:
            conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'", (skip_to,))
        conn.execute("UPDATE event_retention SET pruned_through = MAX(pruned_through, ?) WHERE id = 1", (skip_to,))
        conn.execute("COMMIT")
