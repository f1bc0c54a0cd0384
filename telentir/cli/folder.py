"""The data folder's life: `init` (create it) and `migrate` (upgrade its database's schema)."""

from __future__ import annotations

from contextlib import nullcontext

import click

from .. import wiring
from ..config import Config
from ..storage import schema
from ..storage.folder_lock import FolderLock, FolderLocked
from ..storage.schema import SchemaError
from .common import config as load_settings


@click.command()
def init() -> None:
    """Create the data folder, database, master key and platform keys (idempotent; refused while a server runs).

    Example: TELENTIR_DATA_DIR=/var/lib/telentir python -m telentir init
    """
    config = load_settings()
    report = _prepare(config)
    database = "PostgreSQL (TELENTIR_DATABASE_URL)" if config.uses_postgres else config.database_path
    click.echo(
        f"Initialized {config.data_dir} (database {database}); removed {report['swept_blobs']} stray blob file(s)."
    )


def _prepare(config: Config) -> dict[str, int]:
    from ..serving import STARTUP_ERRORS, prepare

    try:
        return prepare(config)
    except STARTUP_ERRORS as exc:  # a live server on the folder; a master key that does not fit it
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.option("--dry-run", is_flag=True, help="List the migrations that would run, and change nothing.")
def migrate(dry_run: bool) -> None:
    """Upgrade the data folder's database to this server's schema (stop the server and back up first).

    Example: TELENTIR_DATA_DIR=/var/lib/telentir telentir migrate --dry-run
    """
    config = load_settings()
    if not config.uses_postgres and not config.database_path.exists():
        raise click.ClickException(f"no database at {config.database_path}: `telentir init` creates one")
    try:
        # A dry run only reads; a migration runs under the folder's lock, so never under a live server.
        with nullcontext() if dry_run else FolderLock(config.data_dir):
            _migrate(config, dry_run)
    except (SchemaError, FolderLocked) as exc:
        raise click.ClickException(str(exc)) from exc


def _migrate(config: Config, dry_run: bool) -> None:
    db = wiring.open_database(config)
    try:
        version = db.schema_version()
        steps = schema.pending(version)
        if dry_run or not steps:
            _list_migrations(version, steps)
            return
        for step in db.open_schema(migrate=True):
            click.echo(f"applied {step.version:04d} {step.name}: {step.description}")
    finally:
        db.close()
    click.echo(f"The database is at schema version {schema.latest_version()}.")


def _list_migrations(version: int, steps: list[schema.Migration]) -> None:
    if not steps:
        click.echo(f"The database is at schema version {version}, this server's: nothing to do.")
        return
    click.echo(f"The database is at schema version {version}; `telentir migrate` would apply:")
    for step in steps:
        click.echo(f"  {step.version:04d} {step.name}: {step.description}")
