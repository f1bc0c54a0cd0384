"""Admin commands: a thin click shell over the service functions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from . import __version__, wiring
from .config import Config, ConfigError, load_config
from .crypto import CryptoError
from .errors import ApiError
from .runtime import Runtime
from .services import accounts, credentials, credits
from .storage import schema
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
@click.option("--demo", is_flag=True, help="Create a demo user once and print an API key for it.")
def serve(host: str, port: int, workers: int | None, threads: int | None, worker_class: str | None, demo: bool) -> None:
    """Run the production server (gunicorn).

    Example: python -m telentir serve --port 8000 --demo
    """
    from .serving import serve as run_server

    try:
        config = load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _prepare(config)
    if demo:
        with _runtime() as rt:
            _announce_demo(rt, host, port)
    run_server(host, port, workers or config.worker_count, threads, worker_class)


def _prepare(config: Config) -> dict[str, int]:
    from .serving import prepare

    try:
        return prepare(config)
    except (ConfigError, CryptoError, SchemaError) as exc:  # e.g. a master key that does not fit the data folder
        raise click.ClickException(str(exc)) from exc


def _announce_demo(rt: Runtime, host: str, port: int) -> None:
    key = ensure_demo_user(rt)
    click.echo(
        f"Demo user: {DEMO_EMAIL}\nDemo API key: {key}\n"
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
    """Create the data folder, database, master key and platform keys (idempotent).

    Example: TELENTIR_DATA_DIR=/var/lib/telentir python -m telentir init
    """
    try:
        config = load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    report = _prepare(config)
    click.echo(
        f"Initialized {config.data_dir} (database {config.database_path}); "
        f"removed {report['swept_blobs']} stray blob file(s)."
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
    if not config.database_path.exists():
        raise click.ClickException(f"no database at {config.database_path}: `telentir init` creates one")
    db = wiring.open_database(config)
    try:
        version = db.schema_version()
        steps = schema.pending(version)
        if dry_run or not steps:
            _list_migrations(version, steps)
            return
        for step in db.open_schema(migrate=True):
            click.echo(f"applied {step.version:04d} {step.name}: {step.description}")
    except SchemaError as exc:
        raise click.ClickException(str(exc)) from exc
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
def users_create(email: str, phone: str, verified: bool, password: str | None, first_name: str, last_name: str) -> None:
    """Create a user; prints the user id as the last line.

    Example: python -m telentir users create ada@example.com --phone +15555550123 --verified
    """
    with _runtime() as rt:
        user = accounts.create_user(
            rt, email, phone, first_name=first_name, last_name=last_name, password=password, verified=verified
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
@click.argument("amount", type=click.IntRange(min=1))
def credits_grant(email: str, amount: int) -> None:
    """Add AMOUNT minor units (cents) of prepaid credit to a user's local balance.

    Example: python -m telentir credits grant ada@example.com 5000
    """
    with _runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        balance = credits.grant_credits(rt, user["id"], amount)
        click.echo(f"Granted {amount} to {user['email']}; local balance is now {balance}")


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
        click.echo(f"balance: {credits.balance(rt, user)} {credits.CURRENCY}")


@main.command("demo-scraper")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
def demo_scraper(host: str, port: int) -> None:
    """Run a local scraper that streams fake leads over SSE (for development).

    Example: python -m telentir demo-scraper --port 8001
    """
    from .demo_scraper import serve_demo_scraper

    serve_demo_scraper(host, port)
