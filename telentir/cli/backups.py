"""An embedded data folder's safety: `backup`, `restore` and `verify`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click

from ..crypto import CryptoError
from ..maintenance import backup as backups
from ..maintenance import verify as checks
from ..storage.folder_lock import FolderLocked
from .common import embedded_config, progress


@click.command("backup")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--include-master-key", is_flag=True, help="Also copy the master key (whoever has the backup can then read it)."
)
def backup(dest: Path, include_master_key: bool) -> None:
    """Write a consistent backup of the data folder to DEST while the server runs.

    DEST must be absent or empty. It receives the database (one instant's snapshot), every
    ciphertext file that snapshot references, and manifest.json (format and schema version,
    rows per table, SHA-256 of every file, the master key's fingerprint). The master key
    itself is left out unless --include-master-key: keep it apart from the data.

    Example: telentir backup /backups/telentir-$(date +%F)
    """
    config = embedded_config("backup")
    if include_master_key:
        click.echo(
            "Warning: the backup will hold the master key; anyone with the backup can open every sealed key.",
            err=True,
        )
    try:
        result = backups.backup(config, dest, include_master_key, progress)
    except (backups.BackupError, CryptoError, sqlite3.Error) as exc:
        raise click.ClickException(str(exc)) from exc
    manifest = result.manifest
    click.echo(
        f"Backed up {config.data_dir} to {dest}: {manifest['tables'].get('objects', 0)} object(s), "
        f"{len(manifest['files']) - 1 - int(include_master_key)} ciphertext file(s), schema version "
        f"{manifest['schema_version']}, master key {manifest['master_key_fingerprint']}"
        f"{' (included)' if include_master_key else ' (not included)'}."
    )


@click.command("restore")
@click.argument("src", type=click.Path(path_type=Path, exists=True, file_okay=False))
def restore(src: Path) -> None:
    """Fill the (empty or absent) data folder from the backup in SRC, after checking it against its manifest.

    Refuses a data folder that holds anything, a backup whose files do not match its
    manifest, and a configured master key other than the backup's. A master key included
    in the backup is written where TELENTIR_MASTER_KEY_FILE says (default: the data folder).
    Clients that hold event ids newer than the backup are told to resync.

    Example: TELENTIR_DATA_DIR=/var/lib/telentir telentir restore /backups/telentir-2026-12-01
    """
    config = embedded_config("restore")
    try:
        result = backups.restore(config, src, progress)
    except (backups.BackupError, CryptoError, sqlite3.Error, FolderLocked) as exc:
        raise click.ClickException(str(exc)) from exc
    manifest = result.manifest
    click.echo(
        f"Restored {src} (made {manifest['created_at']}) into {config.data_dir}: "
        f"{manifest['tables'].get('objects', 0)} object(s), schema version {manifest['schema_version']}."
    )
    if result.key_written is not None:
        click.echo(f"Wrote the backup's master key to {result.key_written}.")
    for note in result.notes:
        click.echo(note)


@click.command("verify")
def verify() -> None:
    """Check the data folder: database integrity, ciphertext files, sealed secrets; exit 1 on any problem.

    Checks SQLite's integrity and foreign keys, that every ciphertext file an object names
    is there with its recorded size, that no file lies there unnamed, that every sealed
    private key opens with the configured master key, and (in a backup) every file against
    the manifest. Safe while the server runs.

    Example: TELENTIR_DATA_DIR=/backups/telentir-2026-12-01 telentir verify
    """
    config = embedded_config("verify")
    try:
        report = checks.verify(config, progress)
    except sqlite3.Error as exc:
        raise click.ClickException(f"the database cannot be read: {exc}") from exc
    for check in report.checks:
        click.echo(f"{'ok' if check.ok else 'FAILED'}  {check.name}: {check.summary if check.ok else ''}".rstrip())
        for problem in check.problems:
            click.echo(f"    {problem}")
    if not report.ok:
        raise click.ClickException(f"{sum(not c.ok for c in report.checks)} check(s) failed in {config.data_dir}")
    click.echo(f"{config.data_dir} is whole.")
