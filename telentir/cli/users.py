"""`users`: create, list, disable, enable and delete users; their phone, two-factor sign-in, password, plan and
Stripe customer."""

from __future__ import annotations

import click

from ..services import accounts, credits, deletion, twofactor
from .common import runtime


@click.group()
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
    with runtime() as rt:
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
    with runtime() as rt:
        for user in accounts.list_users(rt):
            verified = "verified" if user["phone_verified"] else "unverified"
            click.echo(f"{user['id']}\t{user['email']}\t{verified}\t{user['plan']}")


@users.command("verify-phone")
@click.argument("email")
def users_verify_phone(email: str) -> None:
    """Mark a user's phone verified.

    Example: python -m telentir users verify-phone ada@example.com
    """
    with runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        accounts.set_phone_verified(rt, user["id"])
        click.echo(f"Phone verified for {user['email']}")


@users.command("disable-2fa")
@click.argument("email")
def users_disable_2fa(email: str) -> None:
    """Turn a user's two-factor sign-in off (a lost phone): the TOTP secret and recovery codes go.

    Example: python -m telentir users disable-2fa ada@example.com
    """
    with runtime() as rt:
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
    with runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        accounts.set_password(rt, user["id"], password)
        click.echo(f"Password set for {user['email']}; every session of theirs is signed out")


@users.command("set-plan")
@click.argument("email")
@click.argument("plan")
def users_set_plan(email: str, plan: str) -> None:
    """Move a user to a plan of the catalog (TELENTIR_PLANS).

    Example: python -m telentir users set-plan ada@example.com pro
    """
    with runtime() as rt:
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
    with runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        credits.set_stripe_customer(rt, user["id"], customer_id)
        click.echo(f"{user['email']} linked to {customer_id}" if customer_id else f"{user['email']} unlinked")


@users.command("disable")
@click.argument("email")
def users_disable(email: str) -> None:
    """Disable a user: every session, API key and sign-in is refused (account_disabled) until enabled.

    Example: python -m telentir users disable ada@example.com
    """
    with runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        deletion.set_disabled(rt, user["id"], True)
        click.echo(f"{user['email']} is disabled: every credential and sign-in is refused")


@users.command("enable")
@click.argument("email")
def users_enable(email: str) -> None:
    """Enable a disabled user again: their sessions and API keys work as before.

    Example: python -m telentir users enable ada@example.com
    """
    with runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        deletion.set_disabled(rt, user["id"], False)
        click.echo(f"{user['email']} is enabled")


@users.command("delete")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Confirm: the account and everything it owns are erased for good.")
def users_delete(email: str, yes: bool) -> None:
    """Delete a user for good: credentials, keys, objects (their ciphertext erased), servers, jobs, API keys.

    A Stripe customer is left alone: its id is printed, to close it in Stripe.
    Example: python -m telentir users delete ada@example.com --yes
    """
    if not yes:
        raise click.ClickException(f"Deleting {email} erases the account and all its data for good: add --yes.")
    with runtime() as rt:
        user = accounts.find_user_by_email(rt, email)
        customer = deletion.delete_account(rt, user["id"])
        click.echo(f"Deleted {user['email']} ({user['id']}) and everything it owned")
        if customer:
            click.echo(f"Stripe customer {customer} was left alone: close it in Stripe if it should go too")
