"""Stripe subscriptions and their invoices: the newest state of each kept, and the user's plan recomputed.

Each subscription keeps the newest state seen, by the event's `created`; two events of the
same second that disagree are settled by reading the subscription from Stripe (and a replay
of either then changes nothing). The user's plan is recomputed from all their subscriptions:
the newest live subscription's plan, else the default plan once one has ended. Each invoice
likewise keeps its newest state; the user's newest one, if its payment failed, is shown in
`GET /api/billing/state` (`credits.payment_failure`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..components.stripe_gateway import StripeGateway, StripeUnavailable
from ..errors import ApiError
from ..ids import now_iso
from ..money import CURRENCY
from ..runtime import Runtime
from ..storage.db import Transaction
from .billing import LIVE_STATUSES, call_stripe
from .stripe_objects import Effect, Outcome, id_of, ignored, nested, user_for, whole_number

log = logging.getLogger(__name__)

ENDED_STATUSES = frozenset({"canceled", "incomplete_expired", "unpaid", "paused"})


@dataclass(frozen=True)
class SubscriptionState:
    """What a subscription event (or a read) says of one subscription."""

    id: str
    customer_id: str
    status: str
    price_id: str | None
    plan: str | None
    started: int

    @classmethod
    def of(cls, rt: Runtime, subscription: dict[str, Any]) -> SubscriptionState:
        """From a Stripe subscription object: the plan is the catalog's plan of its price."""
        items = nested(subscription.get("items")).get("data")
        price = id_of(nested(items[0]).get("price")) if isinstance(items, list) and items else None
        plan = plan_of_price(rt, price) or nested(subscription.get("metadata")).get("plan")
        return cls(
            subscription["id"],
            id_of(subscription.get("customer")) or "",
            str(subscription.get("status")),
            price,
            plan if isinstance(plan, str) and plan in rt.config.plans else None,
            whole_number(subscription.get("created")),
        )


def plan_of_price(rt: Runtime, price_id: str | None) -> str | None:
    """The catalog plan sold at this Stripe price."""
    return next((k for k, p in rt.config.plans.items() if price_id and p.get("stripePriceId") == price_id), None)


def subscription_changed(rt: Runtime, gateway: StripeGateway, subscription: dict[str, Any], created: int) -> Effect:
    """What a `customer.subscription.*` event writes: the subscription's state if newer, and the user's plan."""
    metadata = nested(subscription.get("metadata"))
    user = user_for(rt, metadata.get("telentir_user"), subscription.get("customer"))
    if user is None or not isinstance(subscription.get("id"), str):
        return ignored("no user of this server is named by the subscription or linked to its customer")
    state, settled = settle_tie(rt, gateway, SubscriptionState.of(rt, subscription), created)
    return lambda tx: record_subscription(tx, rt, user["id"], state, created, settled)


def settle_tie(
    rt: Runtime, gateway: StripeGateway, state: SubscriptionState, stamp: int
) -> tuple[SubscriptionState, bool]:
    """Two events of one second that disagree cannot be ordered by `created`: ask Stripe which is current.

    Returns the state to keep and whether it settles a tie (it then replaces what is known at that second).
    """
    known = rt.db.query_one("SELECT status, price_id, stamp FROM stripe_subscriptions WHERE id = ?", (state.id,))
    if (
        known is None
        or known["stamp"] != stamp
        or (known["status"], known["price_id"]) == (state.status, state.price_id)
    ):
        return state, False
    current = call_stripe("read the subscription", lambda: gateway.subscription(state.id))
    return SubscriptionState.of(rt, current), True


def record_subscription(
    tx: Transaction, rt: Runtime, user_id: str, state: SubscriptionState, stamp: int, settled: bool = False
) -> Outcome:
    """Keep `state` if it is newer than what is known of the subscription; then recompute the user's plan.

    `settled`: the state was read from Stripe to settle a tie at `stamp`, so it replaces one of that second.
    """
    known = tx.execute("SELECT status, price_id, stamp FROM stripe_subscriptions WHERE id = ?", (state.id,)).fetchone()
    if known is not None and stamp == known["stamp"] and not settled:
        if (known["status"], known["price_id"]) != (state.status, state.price_id):
            # Another event of this second landed since settle_tie looked: let Stripe deliver this one again.
            raise StripeUnavailable("Two events of one second for one subscription arrived together; retry.")
        return Outcome("ignored", f"{state.id} is {state.status} already", user_id)
    if known is not None and stamp < known["stamp"]:
        return Outcome("ignored", f"older than what is known of {state.id} ({known['status']})", user_id)
    tx.execute(
        "INSERT INTO stripe_subscriptions (id, user_id, customer_id, status, price_id, plan, started, stamp, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
        "price_id = excluded.price_id, plan = excluded.plan, started = excluded.started, stamp = excluded.stamp, "
        "updated_at = excluded.updated_at",
        (
            state.id,
            user_id,
            state.customer_id,
            state.status,
            state.price_id,
            state.plan,
            state.started,
            stamp,
            now_iso(),
        ),
    )
    plan = _plan_from_subscriptions(tx, rt, user_id)
    if plan is not None:
        tx.execute("UPDATE users SET plan = ? WHERE id = ?", (plan, user_id))
    return Outcome("applied", f"{state.id} is {state.status}; plan {plan or 'unchanged'}", user_id)


def _plan_from_subscriptions(tx: Transaction, rt: Runtime, user_id: str) -> str | None:
    """The newest live subscription's plan; the default plan once they have all ended; None: leave it."""
    rows = tx.execute(
        "SELECT status, plan FROM stripe_subscriptions WHERE user_id = ? ORDER BY started DESC, id DESC", (user_id,)
    ).fetchall()
    live = [r for r in rows if r["status"] in LIVE_STATUSES]
    if live:
        return live[0]["plan"] if live[0]["plan"] in rt.config.plans else None
    if any(r["status"] in ENDED_STATUSES for r in rows):
        return rt.config.default_plan
    return None


def adopt_payment_method(rt: Runtime, gateway: StripeGateway, customer_id: str, subscription_id: str) -> None:
    """Make the subscription's card the customer's default (Checkout sets it on the subscription only)."""
    try:
        pm = id_of(
            call_stripe("read the subscription", lambda: gateway.subscription(subscription_id)).get(
                "default_payment_method"
            )
        )
        customer = call_stripe("read the customer", lambda: gateway.customer(customer_id))
        if (
            pm is None
            or nested(customer.get("invoice_settings")).get("default_payment_method")
            or customer.get("default_source")
        ):
            return
        params = {"invoice_settings": {"default_payment_method": pm}}
        key = f"telentir:default-payment-method:{customer_id}:{pm}"
        call_stripe("set the default card", lambda: gateway.update_customer(customer_id, params, key))
    except ApiError as exc:
        # The plan is applied already; the card shows up with `telentir billing sync`.
        log.warning("could not make %s's card the default of %s: %s", subscription_id, customer_id, exc.message)


# --- invoices ---------------------------------------------------------------------------------


def invoice_changed(rt: Runtime, invoice: dict[str, Any], status: str, created: int) -> Effect:
    """What an `invoice.paid` or `invoice.payment_failed` event writes: the invoice's state, if newer."""
    parent = nested(invoice.get("parent"))
    details = nested(invoice.get("subscription_details")) or nested(parent.get("subscription_details"))
    user = user_for(rt, nested(details.get("metadata")).get("telentir_user"), invoice.get("customer"))
    if user is None or not isinstance(invoice.get("id"), str):
        return ignored("no user of this server is linked to the invoice's customer")
    amount, currency = whole_number(invoice.get("amount_due")), str(invoice.get("currency") or CURRENCY)

    def write(tx: Transaction) -> Outcome:
        known = tx.execute("SELECT status, stamp FROM stripe_invoices WHERE id = ?", (invoice["id"],)).fetchone()
        if known is not None and not (
            created > known["stamp"] or (created == known["stamp"] and status == "paid" != known["status"])
        ):
            return Outcome("ignored", f"older than what is known of {invoice['id']} ({known['status']})", user["id"])
        tx.execute(
            "INSERT INTO stripe_invoices (id, user_id, status, amount_due, currency, stamp, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
            "amount_due = excluded.amount_due, stamp = excluded.stamp, updated_at = excluded.updated_at",
            (invoice["id"], user["id"], status, amount, currency, created, now_iso()),
        )
        return Outcome("applied", f"invoice {invoice['id']} payment {status}", user["id"])

    return write
