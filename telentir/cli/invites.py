"""`invites`: single-use sign-up codes (TELENTIR_SIGNUP=invite), and the duration type of their expiry."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import click

from ..services import invites
from .common import runtime

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


@click.group("invites")
def invites_group() -> None:
    """Manage sign-up invites (used when TELENTIR_SIGNUP=invite)."""


@invites_group.command("create")
@click.option("--plan", help="Plan key the new account gets (default: TELENTIR_DEFAULT_PLAN at sign-up).")
@click.option("--expires-in", type=Duration(), help="Unusable after this long, e.g. 7d, 12h, 30m (default: never).")
@click.option("--note", default="", help="A label for your records (who it is for).")
def invites_create(plan: str | None, expires_in: timedelta | None, note: str) -> None:
    """Mint a single-use sign-up code; prints the code as the last line (shown only this once).

    Example: python -m telentir invites create --plan pro --expires-in 7d --note "Ada"
    """
    with runtime() as rt:
        record = invites.create_invite(rt, plan, expires_in, note)
        until = f", until {record['expires_at']}" if record["expires_at"] else ""
        click.echo(f"Created invite {record['id']} (plan {record['plan'] or 'default'}{until})")
        click.echo(record["code"])


@invites_group.command("list")
def invites_list() -> None:
    """List invites: id, state (unused, used, expired, revoked), plan, expiry, who used it, note.

    Example: python -m telentir invites list
    """
    with runtime() as rt:
        for invite in invites.list_invites(rt):
            fields = (invite["plan"] or "default", invite["expires_at"] or "never", invite["used_by"] or "-")
            click.echo("\t".join([invite["id"], invite["state"], *fields, invite["note"]]))


@invites_group.command("revoke")
@click.argument("invite_id")
def invites_revoke(invite_id: str) -> None:
    """Make an unused invite unusable, by id.

    Example: python -m telentir invites revoke inv_0123456789abcdefghijkl
    """
    with runtime() as rt:
        invites.revoke_invite(rt, invite_id)
        click.echo(f"Revoked {invite_id}")
