"""`telentir master-key rotate`: re-seal every secret at rest under a new master key.

Order of work, so that no crash loses the key the database needs:
1. the new key is written, durably, beside the key file as `master.key.new`;
2. one transaction re-seals every secret (platform and custodial private keys) under it;
3. the old file is renamed to a dated backup and `.new` takes its name.
A crash between 2 and 3 leaves the database sealed under `.new`; running the command
again sees which key opens the database and finishes the renames.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .. import crypto
from ..config import Config
from ..storage.blobs import fsync_dir
from .files import master_key_text, write_private
from .lock import data_folder_lock
from .sealed import reseal, sealed_secrets


class RotationError(Exception):
    """The rotation cannot be done; nothing was changed (or a previous run was finished)."""


@dataclass
class RotationResult:
    """What the rotation did."""

    resealed: int
    key_file: Path
    old_key_backup: Path
    fingerprint: str
    finished_earlier_run: bool = False


def rotate_master_key(config: Config) -> RotationResult:
    """Re-seal every secret under a fresh master key; the old key file is kept as a dated backup."""
    if config.master_key:
        raise RotationError(
            "the master key comes from TELENTIR_MASTER_KEY, which this command cannot change: move it into a "
            "key file (unset TELENTIR_MASTER_KEY, write its value to TELENTIR_MASTER_KEY_FILE), then rotate"
        )
    key_file = config.master_key_path
    pending = key_file.with_name(key_file.name + ".new")
    with data_folder_lock(config), closing(sqlite3.connect(config.database_path, isolation_level=None)) as conn:
        conn.execute("PRAGMA busy_timeout = 30000")
        old_key = _read_key(key_file)
        if pending.exists():
            finished = _finish_earlier_run(conn, key_file, pending, old_key)
            if finished is not None:
                return finished
        new_key = secrets.token_bytes(crypto.MASTER_KEY_BYTES)
        write_private(pending, master_key_text(new_key))
        try:
            count = _reseal_all(conn, old_key, new_key)
        except BaseException:
            pending.unlink(missing_ok=True)
            raise
        backup = _swap_files(key_file, pending)
    return RotationResult(count, key_file, backup, crypto.master_key_fingerprint(new_key))


def _read_key(path: Path) -> bytes:
    try:
        return crypto.parse_master_key(path.read_text())
    except FileNotFoundError as exc:
        raise RotationError(f"no master key file at {path}") from exc


def _reseal_all(conn: sqlite3.Connection, old_key: bytes, new_key: bytes) -> int:
    """One transaction: every secret opened with the old key and sealed with the new one, or none."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        count = 0
        for secret in list(sealed_secrets(conn)):
            try:
                plain = crypto.unseal(old_key, secret.sealed, secret.context.encode())
            except crypto.CryptoError as exc:
                raise RotationError(
                    f"the sealed private key of {secret.label} does not open with the current master key: "
                    "nothing was changed (`telentir verify` reports every such secret)"
                ) from exc
            reseal(conn, secret, crypto.seal(new_key, plain, secret.context.encode()))
            count += 1
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return count


def _swap_files(key_file: Path, pending: Path) -> Path:
    """The old key becomes `master.key.<UTC time>.old`; the new one takes the key file's name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = key_file.with_name(f"{key_file.name}.{stamp}.old")
    # A second name for the old key, then the new key over the first: at every instant the key
    # file exists (old, then new), so a crash between the two steps never leaves the folder keyless.
    if not backup.exists():  # a run cut short right after linking it left it already
        os.link(key_file, backup)
    os.replace(pending, key_file)
    fsync_dir(key_file.parent)
    return backup


def _finish_earlier_run(
    conn: sqlite3.Connection, key_file: Path, pending: Path, old_key: bytes
) -> RotationResult | None:
    """A `.new` key file is left from an interrupted run: finish it if the database already uses it."""
    new_key = _read_key(pending)
    first = next(sealed_secrets(conn), None)
    if (
        first is not None
        and _opens(new_key, first.sealed, first.context)
        and not _opens(old_key, first.sealed, first.context)
    ):
        backup = _swap_files(key_file, pending)
        return RotationResult(0, key_file, backup, crypto.master_key_fingerprint(new_key), finished_earlier_run=True)
    pending.unlink()  # the earlier run never committed: its key was never used
    return None


def _opens(key: bytes, sealed: bytes, context: str) -> bool:
    try:
        crypto.unseal(key, sealed, context.encode())
    except crypto.CryptoError:
        return False
    return True
