"""`api-keys`: create, list and revoke a user's API keys."""

from __future__ import annotations

import click

from ..services import accounts, credentials
from .common import runtime


@click.group("api-keys")
def api_keys() -> None:
    """Manage API keys."""


@api_keys.command("create")
@click.argument("email")
@click.option("--name", default="cli", show_default=True, help="A label for the key.")
def api_keys_create(email: str, name: str) -> None:
    """Create an API key; prints the key as the last line (shown only this once).

    Example: python -m telentir api-keys create ada@example.com --name laptop
    """
    with runtime() as rt:
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
    with runtime() as rt:
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
    with runtime() as rt:
        credentials.revoke_api_key(rt, key_id)
        click.echo(f"Revoked {key_id}")
