"""`audit`: the audit log, a user's or everyone's, deleted accounts' `account_deleted` entries included."""

from __future__ import annotations

import json

import click

from ..errors import NotFound
from ..runtime import Runtime
from ..services import accounts, audit
from .common import runtime


@click.command("audit")
@click.argument("email", required=False)
@click.option("--action", help="Only entries of this action, e.g. login_failed.")
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True, help="At most this many entries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit_log(email: str | None, action: str | None, limit: int, as_json: bool) -> None:
    """Show the audit log, newest first: everyone's, or one account's (a deleted one's too, by its email).

    Example: python -m telentir audit ada@example.com --action login_failed
    """
    with runtime() as rt:
        user_ids = None if email is None else _user_ids(rt, email)
        for item in audit.search(rt, user_ids, action, limit):
            if as_json:
                click.echo(json.dumps(item, separators=(",", ":")))
            else:
                detail = json.dumps(item["detail"], separators=(",", ":"))
                fields = [item["at"], item["user_id"], item["action"], item["ip"] or "-", item["credential"] or "-"]
                click.echo("\t".join([*fields, detail]))


def _user_ids(rt: Runtime, email: str) -> list[str]:
    """The live account of `email` and the deleted ones that had it; an error if there is none."""
    ids = audit.deleted_account_ids(rt, email)
    try:
        ids.append(accounts.find_user_by_email(rt, email)["id"])
    except NotFound:
        if not ids:
            raise
    return ids
