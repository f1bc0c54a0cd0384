"""Money: `credits` (the local prepaid ledger) and `billing` (Stripe: repair a customer, list webhook events)."""

from __future__ import annotations

import click

from ..money import MAX_GRANT, format_amount
from ..services import accounts, credits, stripe_events, stripe_sync
from .common import runtime


@click.group("credits")
def credits_group() -> None:
    """Manage prepaid lead credits (local ledger)."""


@credits_group.command("grant")
@click.argument("email")
@click.argument("amount", type=click.IntRange(min=1, max=MAX_GRANT))
def credits_grant(email: str, amount: int) -> None:
    """Add AMOUNT minor units (cents, 1 to 1000000000) of prepaid credit to a user's local balance.

    Example: python -m telentir credits grant ada@example.com 5000
    """
    with runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        balance = credits.grant_credits(rt, user["id"], amount)
        click.echo(f"Granted {format_amount(amount)} to {user['email']}; local balance is now {format_amount(balance)}")


@credits_group.command("show")
@click.argument("email")
def credits_show(email: str) -> None:
    """Show a user's plan, this month's allowance use and prepaid balance.

    Example: python -m telentir credits show ada@example.com
    """
    with runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        plan = credits.plan_of(rt, user)
        click.echo(f"plan: {user['plan']} ({plan['includedLeads'] if plan else 0} leads/month included)")
        click.echo(f"allowance used this month: {credits.allowance_used(rt, user['id'])}")
        click.echo(f"balance: {format_amount(credits.balance(rt, user))}")


@click.group("billing")
def billing_group() -> None:
    """Stripe billing: repair a customer's local view, list webhook events."""


@billing_group.command("sync")
@click.argument("email")
def billing_sync(email: str) -> None:
    """Re-read a user's subscriptions, paid top-ups and balance from Stripe and repair the local view.

    Example: python -m telentir billing sync ada@example.com
    """
    with runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        report = stripe_sync.sync_customer(rt, user)
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
    with runtime() as rt:
        for event in stripe_events.list_events(rt, failed_only=failed, limit=limit):
            click.echo(
                f"{event['received_at']}\t{event['id']}\t{event['type']}\t{event['status']}\t"
                f"{event['user_id'] or '-'}\t{event['attempts']}\t{event['note'] or ''}"
            )
