"""`copy-data`: move an embedded deployment (SQLite + files) into PostgreSQL and a bucket, verified."""

from __future__ import annotations

import click

from .. import wiring
from ..config import Config, ConfigError, load_config
from ..storage.blobs import BlobStore
from ..storage.db import SqliteDatabase
from ..storage.folder_lock import FolderLocked
from ..storage.schema import SchemaError


@click.command("copy-data")
@click.option("--to-database", required=True, help="postgresql://… URL of an empty database (its schema is created).")
@click.option(
    "--to-blobs",
    help="s3://bucket/prefix for the ciphertext files (endpoint: TELENTIR_S3_ENDPOINT_URL). Omitted: they stay put.",
)
def copy_data(to_database: str, to_blobs: str | None) -> None:
    """Copy this embedded deployment (SQLite + files) into PostgreSQL and a bucket, then verify it.

    Stop the server first. Every table is copied with its ids, every ciphertext file is written
    to the bucket before the row naming it, then row counts, row hashes and every object's
    ciphertext are compared between the two. Start the nodes with the new URLs afterwards.

    Example: telentir copy-data --to-database postgresql://telentir@db:5432/telentir --to-blobs s3://acme-telentir/prod
    """
    from ..maintenance.lock import data_folder_lock

    source_config, target_config = _copy_configs(to_database, to_blobs)
    try:
        with data_folder_lock(source_config):  # refused while a server holds the folder
            source_db, source_blobs = _open_source(source_config)
            try:
                _copy_and_verify(source_db, source_blobs, target_config, to_blobs is not None)
            finally:
                source_db.close()
    except FolderLocked as exc:
        raise click.ClickException(str(exc)) from exc


def _copy_configs(to_database: str, to_blobs: str | None) -> tuple[Config, Config]:
    try:
        source = load_config()
        if source.uses_postgres or source.uses_s3:
            raise ConfigError(
                "copy-data copies an embedded deployment: unset TELENTIR_DATABASE_URL and TELENTIR_BLOB_URL"
            )
        target = load_config({"database_url": to_database, "blob_url": to_blobs or source.blob_url})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if not target.uses_postgres:
        raise click.ClickException("--to-database must be a postgresql:// URL")
    if to_blobs is not None and not target.uses_s3:
        raise click.ClickException("--to-blobs must be an s3://bucket/prefix URL")
    return source, target


def _open_source(config: Config) -> tuple[SqliteDatabase, BlobStore]:
    if not config.database_path.exists():
        raise click.ClickException(f"no database at {config.database_path}: nothing to copy")
    source = SqliteDatabase(config.database_path)
    try:
        source.open_schema()
    except SchemaError as exc:
        source.close()
        raise click.ClickException(str(exc)) from exc
    return source, wiring.open_blobs(config)


def _copy_and_verify(source: SqliteDatabase, source_blobs: BlobStore, target_config: Config, new_blobs: bool) -> None:
    from ..storage import copy  # imports psycopg: only for this command
    from ..storage.postgres import PostgresDatabase

    target = wiring.open_database(target_config)
    try:
        assert isinstance(target, PostgresDatabase)
        target.open_schema()
        target_blobs = wiring.open_blobs(target_config) if new_blobs else source_blobs
        tables = copy.tables_in_order(source)
        with click.progressbar(length=copy.count_items(source, tables), label="Copying") as bar:
            copied = copy.copy_deployment(source, source_blobs, target, target_blobs if new_blobs else None, bar.update)
        objects = int(source.query_value("SELECT COUNT(*) FROM objects"))
        with click.progressbar(length=objects, label="Verifying") as bar:
            verified = copy.verify_copy(source, source_blobs, target, target_blobs, bar.update)
    except copy.CopyError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        target.close()
    click.echo(f"Copied {sum(copied.rows.values())} row(s) in {len(copied.rows)} table(s) and {copied.blobs} blob(s).")
    click.echo(
        f"Verified: row counts and hashes of every table, and the ciphertext of all {verified.objects_verified} "
        f"object(s), read back from {target.describe()} and {target_blobs.describe()}."
    )
