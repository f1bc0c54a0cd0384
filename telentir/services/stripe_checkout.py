"""Completed Checkout Sessions: a paid top-up credited once per session, a plan bought as a subscription.

A top-up is credited to the customer's Stripe balance with an idempotency key derived from the
session, and recorded in `stripe_topups` once per session, whichever event or sync names it.
"""

from __future__ import annotations

from typing import Any

from ..components.stripe_gateway import StripeGateway
from ..ids import now_iso
from ..money import CURRENCY
from ..runtime import Runtime
from ..storage.db import Transaction
from ..storage.rows import UserRow
from . import credits
from .stripe_objects import Effect, Outcome, id_of, ignored, nested, user_for, whole_number
from .stripe_subscriptions import SubscriptionState, adopt_payment_method, record_subscription, settle_tie


def checkout_completed(rt: Runtime, gateway: StripeGateway, session: dict[str, Any], event: dict[str, Any]) -> Effect:
    """What a completed (or asynchronously paid) Checkout Session writes: a top-up credited, or a plan bought."""
    metadata = nested(session.get("metadata"))
    user = user_for(rt, metadata.get("telentir_user"), session.get("customer"))
    if user is None or not isinstance(session.get("id"), str):
        return ignored("no user of this server is named by the session or linked to its customer")
    if metadata.get("purpose") == "topup" and session.get("mode") == "payment":
        return topup_effect(rt, gateway, user, session, event["id"])
    if metadata.get("purpose") == "plan" and session.get("mode") == "subscription":
        return _plan_bought(rt, gateway, user, session, event["created"])
    return ignored("not a Checkout Session this server created", user["id"])


def topup_amount(session: dict[str, Any]) -> int:
    """What a paid top-up session credits: the amount paid, net of tax, in minor units."""
    tax = whole_number(nested(session.get("total_details")).get("amount_tax"))
    return whole_number(session.get("amount_total")) - tax


def topup_effect(
    rt: Runtime, gateway: StripeGateway, user: UserRow, session: dict[str, Any], event_id: str | None
) -> Effect:
    """Credit a paid top-up to the customer's Stripe balance (once per session); the ledger row follows."""
    amount, customer = topup_amount(session), id_of(session.get("customer"))
    if session.get("payment_status") != "paid":
        return ignored("not paid yet: credited when checkout.session.async_payment_succeeded comes", user["id"])
    if session.get("currency") != CURRENCY or amount <= 0 or customer is None:
        return ignored(f"nothing to credit ({amount} {session.get('currency')})", user["id"])
    if rt.db.query_one("SELECT 1 FROM stripe_topups WHERE session_id = ?", (session["id"],)):
        return ignored(f"{session['id']} was credited already", user["id"])
    description = f"Lead credits bought with Checkout {session['id']}"
    txn = gateway.credit_topup(customer, amount, description, session["id"], paid_at=float(session.get("created") or 0))

    def write(tx: Transaction) -> Outcome:
        inserted = tx.execute(
            "INSERT INTO stripe_topups (session_id, user_id, customer_id, amount, transaction_id, event_id, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
            (session["id"], user["id"], customer, amount, txn, event_id, now_iso()),
        ).rowcount
        if not inserted:
            return Outcome("ignored", f"{session['id']} was credited already", user["id"])
        credits.ledger_row(
            tx, user["id"], None, "topup", amount=amount, source="stripe", external_id=txn, note=session["id"]
        )
        return Outcome("applied", f"credited {amount} {CURRENCY} ({txn})", user["id"])

    return write


def _plan_bought(rt: Runtime, gateway: StripeGateway, user: UserRow, session: dict[str, Any], created: int) -> Effect:
    plan, subscription = nested(session.get("metadata")).get("plan"), id_of(session.get("subscription"))
    if not isinstance(plan, str) or plan not in rt.config.plans or subscription is None:
        return ignored(f"plan {plan!r} is not in the catalog, or the session has no subscription", user["id"])
    paid = session.get("payment_status") in ("paid", "no_payment_required")
    state = SubscriptionState(
        subscription,
        id_of(session.get("customer")) or "",
        "active" if paid else "incomplete",
        rt.config.plans[plan].get("stripePriceId"),
        plan,
        created,
    )

    state, settled = settle_tie(rt, gateway, state, created)

    def write(tx: Transaction) -> Outcome:
        if state.customer_id:
            tx.after_commit(lambda: adopt_payment_method(rt, gateway, state.customer_id, subscription))
        return record_subscription(tx, rt, user["id"], state, created, settled)

    return write
