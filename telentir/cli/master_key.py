"""`master-key rotate`: re-seal every secret under a new master key."""

from __future__ import annotations

import sqlite3

import click

from ..crypto import CryptoError
from ..maintenance import rotate
from ..storage.folder_lock import FolderLocked
from .common import embedded_config


@click.group("master-key")
def master_key() -> None:
    """Manage the master key that seals private keys at rest."""


@master_key.command("rotate")
def master_key_rotate() -> None:
    """Re-seal every secret under a new master key; keep the old key file as a dated backup.

    Stop the server first. Works on the key file (TELENTIR_MASTER_KEY_FILE, default
    <data dir>/master.key); the server then starts with the new key only. Back the new key
    up as you did the old one.

    Example: TELENTIR_DATA_DIR=/var/lib/telentir telentir master-key rotate
    """
    config = embedded_config("master-key rotate")
    try:
        result = rotate.rotate_master_key(config)
    except (rotate.RotationError, CryptoError, sqlite3.Error, FolderLocked) as exc:
        raise click.ClickException(str(exc)) from exc
    if result.finished_earlier_run:
        click.echo("Finished an interrupted rotation: the database was already sealed under the new key.")
    else:
        click.echo(f"Re-sealed {result.resealed} secret(s) under the new master key {result.fingerprint}.")
    click.echo(f"New key: {result.key_file}; the old key is kept as {result.old_key_backup}.")
