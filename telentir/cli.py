"""Admin commands: a thin click shell over the service functions."""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from . import __version__, logs, wiring
from .config import Config, ConfigError, load_config
from .crypto import CryptoError
from .errors import ApiError
from .maintenance import backup as backups
from .maintenance import rotate, verify
from .money import MAX_GRANT, format_amount
from .runtime import Runtime
from .services import accounts, credentials, credits, invites, stripe_events, twofactor
from .storage import schema
from .storage.blobs import BlobStore
from .storage.db import SqliteDatabase
from .storage.folder_lock import FolderLock, FolderLocked
from .storage.schema import SchemaError
from .wiring import build_runtime

DEMO_EMAIL = "demo@localhost.localdomain"
DEMO_PHONE = "+15555550100"


@contextmanager
def _runtime() -> Iterator[Runtime]:
    try:
        rt = build_runtime(load_config())
    except (ConfigError, CryptoError, SchemaError) as exc:  # CryptoError: an unreadable master key file
        raise click.ClickException(str(exc)) from exc
    try:
        yield rt
    except ApiError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        rt.close()


@click.group()
@click.version_option(__version__, "--version", prog_name="telentir", message="%(prog)s %(version)s")
def main() -> None:
    """Telentir server: an open, self-hostable encrypted data plane.

    Every command acts on the data folder of TELENTIR_DATA_DIR (default ./data).
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--workers", type=click.IntRange(1, 64), help="Worker processes (default: TELENTIR_WORKERS, else one per core)."
)
@click.option("--threads", type=click.IntRange(1, 4096), help="Threads per worker (gthread).")
@click.option(
    "--worker-class",
    type=click.Choice(["gthread", "gevent"]),
    help="gunicorn worker: gthread (default) or gevent (one event loop per worker).",
)
@click.option("--demo", is_flag=True, help="Create a demo user once; print its API key and the console's address.")
def serve(host: str, port: int, workers: int | None, threads: int | None, worker_class: str | None, demo: bool) -> None:
    """Run the production server (gunicorn); refused while another server holds the data folder.

    Example: python -m telentir serve --port 8000 --demo
    """
    from .serving import serve as run_server
    from .serving import stop_multiprocess_metrics, use_multiprocess_metrics

    try:
        config = load_config()
        logs.configure(config.log_level, config.log_format)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc

    def announce_demo(config: Config) -> None:
        rt = build_runtime(config)
        try:
            _announce_demo(rt, host, port)
        finally:
            rt.close()

    # Before anything counts: the master and its workers share one metrics folder.
    use_multiprocess_metrics()
    try:
        # The gunicorn master takes the folder's lock before binding, then repairs storage once
        # the port is bound (telentir.serving): nothing is touched here.
        run_server(
            host, port, workers or config.worker_count, threads, worker_class, on_ready=announce_demo if demo else None
        )
    finally:
        stop_multiprocess_metrics()


def _prepare(config: Config) -> dict[str, int]:
    from .serving import STARTUP_ERRORS, prepare

    try:
        return prepare(config)
    except STARTUP_ERRORS as exc:  # a live server on the folder; a master key that does not fit it
        raise click.ClickException(str(exc)) from exc


def _announce_demo(rt: Runtime, host: str, port: int) -> None:
    key = ensure_demo_user(rt)
    click.echo(
        f"Demo user: {DEMO_EMAIL}\nDemo API key: {key}\n"
        f"Console: http://{host}:{port}/console (sign in with the API key)\n"
        f"Try: curl -H 'Authorization: Bearer {key}' http://{host}:{port}/api/root"
    )


def ensure_demo_user(rt: Runtime) -> str:
    """Create the demo user (once) and return a live API key for it, kept in the data dir."""
    try:
        user = accounts.find_user_by_email(rt, DEMO_EMAIL)
    except ApiError:
        user = accounts.create_user(rt, DEMO_EMAIL, DEMO_PHONE, first_name="Demo", last_name="User", verified=True)
    key_file = rt.config.data_dir / "demo-api-key"
    if key_file.exists():
        key = key_file.read_text().strip()
        try:
            if credentials.authenticate(rt, key)["id"] == user["id"]:
                return key
        except ApiError:
            pass  # revoked or from another database: mint a new one
    new_key = str(credentials.create_api_key(rt, user["id"], "demo")["key"])
    _write_private(key_file, new_key + "\n")
    return new_key


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


@main.command()
def init() -> None:
    """Create the data folder, database, master key and platform keys (idempotent; refused while a server runs).

    Example: TELENTIR_DATA_DIR=/var/lib/telentir python -m telentir init
    """
    try:
        config = load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    report = _prepare(config)
    database = "PostgreSQL (TELENTIR_DATABASE_URL)" if config.uses_postgres else config.database_path
    click.echo(
        f"Initialized {config.data_dir} (database {database}); removed {report['swept_blobs']} stray blob file(s)."
    )


@main.command()
@click.option("--dry-run", is_flag=True, help="List the migrations that would run, and change nothing.")
def migrate(dry_run: bool) -> None:
    """Upgrade the data folder's database to this server's schema (stop the server and back up first).

    Example: TELENTIR_DATA_DIR=/var/lib/telentir telentir migrate --dry-run
    """
    try:
        config = load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
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


def _config() -> Config:
    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@contextmanager
def _bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """click's progress bar on a terminal (and for long jobs only); nothing otherwise."""
    if not sys.stdout.isatty() or total < 100:
        yield lambda steps: None
        return
    with click.progressbar(length=total, label=label) as bar:
        yield bar.update


def _embedded_config(command: str) -> Config:
    """The settings, for a command that works on an embedded data folder's SQLite file and ciphertext files."""
    config = _config()
    if config.uses_postgres or config.uses_s3:
        raise click.ClickException(
            f"`telentir {command}` works on an embedded data folder (SQLite and files); with PostgreSQL and an "
            "S3 bucket use their own tools (pg_dump, the bucket's versioning): see docs/scale-out.md"
        )
    return config


@main.command("backup")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option(
    "--include-master-key", is_flag=True, help="Also copy the master key (whoever has the backup can then read it)."
)
def backup_command(dest: Path, include_master_key: bool) -> None:
    """Write a consistent backup of the data folder to DEST while the server runs.

    DEST must be absent or empty. It receives the database (one instant's snapshot), every
    ciphertext file that snapshot references, and manifest.json (format and schema version,
    rows per table, SHA-256 of every file, the master key's fingerprint). The master key
    itself is left out unless --include-master-key: keep it apart from the data.

    Example: telentir backup /backups/telentir-$(date +%F)
    """
    config = _embedded_config("backup")
    if include_master_key:
        click.echo(
            "Warning: the backup will hold the master key; anyone with the backup can open every sealed key.",
            err=True,
        )
    try:
        result = backups.backup(config, dest, include_master_key, _bar)
    except (backups.BackupError, CryptoError, sqlite3.Error) as exc:
        raise click.ClickException(str(exc)) from exc
    manifest = result.manifest
    click.echo(
        f"Backed up {config.data_dir} to {dest}: {manifest['tables'].get('objects', 0)} object(s), "
        f"{len(manifest['files']) - 1 - int(include_master_key)} ciphertext file(s), schema version "
        f"{manifest['schema_version']}, master key {manifest['master_key_fingerprint']}"
        f"{' (included)' if include_master_key else ' (not included)'}."
    )


@main.command("restore")
@click.argument("src", type=click.Path(path_type=Path, exists=True, file_okay=False))
def restore_command(src: Path) -> None:
    """Fill the (empty or absent) data folder from the backup in SRC, after checking it against its manifest.

    Refuses a data folder that holds anything, a backup whose files do not match its
    manifest, and a configured master key other than the backup's. A master key included
    in the backup is written where TELENTIR_MASTER_KEY_FILE says (default: the data folder).
    Clients that hold event ids newer than the backup are told to resync.

    Example: TELENTIR_DATA_DIR=/var/lib/telentir telentir restore /backups/telentir-2026-12-01
    """
    config = _embedded_config("restore")
    try:
        result = backups.restore(config, src, _bar)
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


@main.command("verify")
def verify_command() -> None:
    """Check the data folder: database integrity, ciphertext files, sealed secrets; exit 1 on any problem.

    Checks SQLite's integrity and foreign keys, that every ciphertext file an object names
    is there with its recorded size, that no file lies there unnamed, that every sealed
    private key opens with the configured master key, and (in a backup) every file against
    the manifest. Safe while the server runs.

    Example: TELENTIR_DATA_DIR=/backups/telentir-2026-12-01 telentir verify
    """
    config = _embedded_config("verify")
    try:
        report = verify.verify(config, _bar)
    except sqlite3.Error as exc:
        raise click.ClickException(f"the database cannot be read: {exc}") from exc
    for check in report.checks:
        click.echo(f"{'ok' if check.ok else 'FAILED'}  {check.name}: {check.summary if check.ok else ''}".rstrip())
        for problem in check.problems:
            click.echo(f"    {problem}")
    if not report.ok:
        raise click.ClickException(f"{sum(not c.ok for c in report.checks)} check(s) failed in {config.data_dir}")
    click.echo(f"{config.data_dir} is whole.")


@main.group("master-key")
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
    config = _embedded_config("master-key rotate")
    try:
        result = rotate.rotate_master_key(config)
    except (rotate.RotationError, CryptoError, sqlite3.Error, FolderLocked) as exc:
        raise click.ClickException(str(exc)) from exc
    if result.finished_earlier_run:
        click.echo("Finished an interrupted rotation: the database was already sealed under the new key.")
    else:
        click.echo(f"Re-sealed {result.resealed} secret(s) under the new master key {result.fingerprint}.")
    click.echo(f"New key: {result.key_file}; the old key is kept as {result.old_key_backup}.")


@main.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.argument("email")
@click.option("--phone", required=True, help="Phone number, e.g. +15555550123.")
@click.option("--verified", is_flag=True, help="Mark the phone verified.")
@click.option("--password", help="Password for logging in (omit for API-key-only users).")
@click.option("--first-name", default="", help="First name.")
@click.option("--last-name", default="", help="Last name.")
@click.option("--plan", help="Plan key of the catalog (default: TELENTIR_DEFAULT_PLAN).")
def users_create(
    email: str, phone: str, verified: bool, password: str | None, first_name: str, last_name: str, plan: str | None
) -> None:
    """Create a user; prints the user id as the last line.

    Example: python -m telentir users create ada@example.com --phone +15555550123 --verified
    """
    with _runtime() as rt:
        user = accounts.create_user(
            rt,
            email,
            phone,
            first_name=first_name,
            last_name=last_name,
            password=password,
            verified=verified,
            plan=plan,
        )
        click.echo(f"Created {user['email']}")
        click.echo(user["id"])


@users.command("list")
def users_list() -> None:
    """List users: id, email, phone verified, plan.

    Example: python -m telentir users list
    """
    with _runtime() as rt:
        for user in accounts.list_users(rt):
            verified = "verified" if user["phone_verified"] else "unverified"
            click.echo(f"{user['id']}\t{user['email']}\t{verified}\t{user['plan']}")


@users.command("verify-phone")
@click.argument("email")
def users_verify_phone(email: str) -> None:
    """Mark a user's phone verified.

    Example: python -m telentir users verify-phone ada@example.com
    """
    with _runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        accounts.set_phone_verified(rt, user["id"])
        click.echo(f"Phone verified for {user['email']}")


@users.command("disable-2fa")
@click.argument("email")
def users_disable_2fa(email: str) -> None:
    """Turn a user's two-factor sign-in off (a lost phone): the TOTP secret and recovery codes go.

    Example: python -m telentir users disable-2fa ada@example.com
    """
    with _runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        was_on = bool(user["totp_enabled"])
        twofactor.disable(rt, user["id"])
        click.echo(f"Two-factor sign-in {'turned off' if was_on else 'was already off'} for {user['email']}")


@users.command("set-password")
@click.argument("email")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="The new password (prompted for when omitted).",
)
def users_set_password(email: str, password: str) -> None:
    """Set a user's password; every session of the user is signed out (API keys keep working).

    Example: python -m telentir users set-password ada@example.com
    """
    with _runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        accounts.set_password(rt, user["id"], password)
        click.echo(f"Password set for {user['email']}; every session of theirs is signed out")


@main.group("api-keys")
def api_keys() -> None:
    """Manage API keys."""


@api_keys.command("create")
@click.argument("email")
@click.option("--name", default="cli", show_default=True, help="A label for the key.")
def api_keys_create(email: str, name: str) -> None:
    """Create an API key; prints the key as the last line (shown only this once).

    Example: python -m telentir api-keys create ada@example.com --name laptop
    """
    with _runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        record = credentials.create_api_key(rt, user["id"], name)
        click.echo(f"Created API key {record['id']} for {user['email']}")
        click.echo(record["key"])


@api_keys.command("list")
@click.argument("email")
def api_keys_list(email: str) -> None:
    """List a user's live API keys (never the keys themselves).

    Example: python -m telentir api-keys list ada@example.com
    """
    with _runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        for record in credentials.list_api_keys(rt, user["id"]):
            click.echo(
                f"{record['id']}\t{record['name']}\t{record['created_at']}\t{record['last_used_at'] or 'never used'}"
            )


@api_keys.command("revoke")
@click.argument("key_id")
def api_keys_revoke(key_id: str) -> None:
    """Revoke an API key by id, at once.

    Example: python -m telentir api-keys revoke ak_0123456789abcdefghijkl
    """
    with _runtime() as rt:
        credentials.revoke_api_key(rt, key_id)
        click.echo(f"Revoked {key_id}")


@users.command("set-plan")
@click.argument("email")
@click.argument("plan")
def users_set_plan(email: str, plan: str) -> None:
    """Move a user to a plan of the catalog (TELENTIR_PLANS).

    Example: python -m telentir users set-plan ada@example.com pro
    """
    with _runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        credits.set_plan(rt, user["id"], plan)
        click.echo(f"{user['email']} is now on plan {plan}")


@users.command("set-stripe-customer")
@click.argument("email")
@click.argument("customer_id", required=False)
def users_set_stripe_customer(email: str, customer_id: str | None) -> None:
    """Link a user to a Stripe customer (omit the id to unlink).

    Example: python -m telentir users set-stripe-customer ada@example.com cus_P5aBcD
    """
    with _runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        credits.set_stripe_customer(rt, user["id"], customer_id)
        click.echo(f"{user['email']} linked to {customer_id}" if customer_id else f"{user['email']} unlinked")


@main.group("credits")
def credits_group() -> None:
    """Manage prepaid lead credits (local ledger)."""


@credits_group.command("grant")
@click.argument("email")
@click.argument("amount", type=click.IntRange(min=1, max=MAX_GRANT))
def credits_grant(email: str, amount: int) -> None:
    """Add AMOUNT minor units (cents, 1 to 1000000000) of prepaid credit to a user's local balance.

    Example: python -m telentir credits grant ada@example.com 5000
    """
    with _runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        balance = credits.grant_credits(rt, user["id"], amount)
        click.echo(f"Granted {format_amount(amount)} to {user['email']}; local balance is now {format_amount(balance)}")


@credits_group.command("show")
@click.argument("email")
def credits_show(email: str) -> None:
    """Show a user's plan, this month's allowance use and prepaid balance.

    Example: python -m telentir credits show ada@example.com
    """
    with _runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        plan = credits.plan_of(rt, user)
        click.echo(f"plan: {user['plan']} ({plan['includedLeads'] if plan else 0} leads/month included)")
        click.echo(f"allowance used this month: {credits.allowance_used(rt, user['id'])}")
        click.echo(f"balance: {format_amount(credits.balance(rt, user))}")


@main.command("copy-data")
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
    from .maintenance.lock import data_folder_lock

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
    from .storage import copy  # imports psycopg: only for this command
    from .storage.postgres import PostgresDatabase

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


@main.group("billing")
def billing_group() -> None:
    """Stripe billing: repair a customer's local view, list webhook events."""


@billing_group.command("sync")
@click.argument("email")
def billing_sync(email: str) -> None:
    """Re-read a user's subscriptions, paid top-ups and balance from Stripe and repair the local view.

    Example: python -m telentir billing sync ada@example.com
    """
    with _runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        report = stripe_events.sync_customer(rt, user)
        click.echo(f"customer: {report.customer_id}")
        for line in report.subscriptions or ["(no subscription)"]:
            click.echo(f"subscription: {line}")
        click.echo(f"plan: {report.plan_before} -> {report.plan_after}")
        for session_id, amount in report.credited:
            click.echo(f"credited missed top-up {session_id}: {format_amount(amount)}")
        click.echo(f"balance: {format_amount(report.balance)}; card on file: {'yes' if report.has_card else 'no'}")


@billing_group.command("events")
@click.option("--failed", is_flag=True, help="Only events whose application failed (Stripe delivers them again).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000), help="Most events listed.")
def billing_events(failed: bool, limit: int) -> None:
    """List processed Stripe webhook events, newest first: id, type, status, user, attempts, note.

    Example: python -m telentir billing events --failed
    """
    with _runtime() as rt:
        for event in stripe_events.list_events(rt, failed_only=failed, limit=limit):
            click.echo(
                f"{event['received_at']}\t{event['id']}\t{event['type']}\t{event['status']}\t"
                f"{event['user_id'] or '-'}\t{event['attempts']}\t{event['note'] or ''}"
            )


@main.group("invites")
def invites_group() -> None:
    """Manage sign-up invites (used when TELENTIR_SIGNUP=invite)."""


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """A duration such as `30m`, `12h`, `7d` or `90s`."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        """The value as a timedelta; a usage error otherwise."""
        if isinstance(value, timedelta):
            return value
        match = re.fullmatch(r"([1-9][0-9]{0,6})([smhd])", str(value).strip())
        if match is None:
            self.fail(f"{value!r} is not a duration such as 30m, 12h or 7d", param, ctx)
        return timedelta(seconds=int(match.group(1)) * _DURATION_UNITS[match.group(2)])


@invites_group.command("create")
@click.option("--plan", help="Plan key the new account gets (default: TELENTIR_DEFAULT_PLAN at sign-up).")
@click.option("--expires-in", type=Duration(), help="Unusable after this long, e.g. 7d, 12h, 30m (default: never).")
@click.option("--note", default="", help="A label for your records (who it is for).")
def invites_create(plan: str | None, expires_in: timedelta | None, note: str) -> None:
    """Mint a single-use sign-up code; prints the code as the last line (shown only this once).

    Example: python -m telentir invites create --plan pro --expires-in 7d --note "Ada"
    """
    with _runtime() as rt:
        record = invites.create_invite(rt, plan, expires_in, note)
        until = f", until {record['expires_at']}" if record["expires_at"] else ""
        click.echo(f"Created invite {record['id']} (plan {record['plan'] or 'default'}{until})")
        click.echo(record["code"])


@invites_group.command("list")
def invites_list() -> None:
    """List invites: id, state (unused, used, expired, revoked), plan, expiry, who used it, note.

    Example: python -m telentir invites list
    """
    with _runtime() as rt:
        for invite in invites.list_invites(rt):
            fields = (invite["plan"] or "default", invite["expires_at"] or "never", invite["used_by"] or "-")
            click.echo("\t".join([invite["id"], invite["state"], *fields, invite["note"]]))


@invites_group.command("revoke")
@click.argument("invite_id")
def invites_revoke(invite_id: str) -> None:
    """Make an unused invite unusable, by id.

    Example: python -m telentir invites revoke inv_0123456789abcdefghijkl
    """
    with _runtime() as rt:
        invites.revoke_invite(rt, invite_id)
        click.echo(f"Revoked {invite_id}")


@main.command("demo-scraper")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
def demo_scraper(host: str, port: int) -> None:
    """Run a local scraper that streams fake leads over SSE (for development).

    Example: python -m telentir demo-scraper --port 8001
    """
    from .demo_scraper import serve_demo_scraper

    serve_demo_scraper(host, port)
