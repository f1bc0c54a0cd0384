"""`telentir billing sync`: re-read a customer from Stripe and repair the local view."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..components.stripe_gateway import StripeGateway
from ..errors import Conflict
from ..runtime import Runtime
from ..storage.rows import UserRow
from . import credits
from .billing import call_stripe, newest_live, require_stripe
from .stripe_checkout import topup_amount, topup_effect
from .stripe_objects import nested
from .stripe_subscriptions import SubscriptionState, adopt_payment_method, record_subscription


@dataclass
class SyncReport:
    """What `telentir billing sync` found and repaired."""

    customer_id: str
    plan_before: str
    plan_after: str
    subscriptions: list[str]
    credited: list[tuple[str, int]]
    balance: int
    has_card: bool


def sync_customer(rt: Runtime, user: UserRow) -> SyncReport:
    """Re-read a user's subscriptions, paid top-ups and balance from Stripe and repair the local view."""
    gateway = require_stripe(rt)
    customer = user.get("stripe_customer_id")
    if not customer:
        raise Conflict(f"{user['email']} is not linked to a Stripe customer.", code="no_stripe_customer")
    subscriptions = call_stripe("read the subscriptions", lambda: gateway.subscriptions(customer))
    sessions = call_stripe("read the Checkout Sessions", lambda: gateway.completed_checkout_sessions(customer))
    stamp = int(time.time())  # what was just read is the newest state there is
    with rt.db.atomic() as tx:
        for subscription in subscriptions:
            if nested(subscription.get("metadata")).get("telentir_user") in (None, user["id"]):
                record_subscription(tx, rt, user["id"], SubscriptionState.of(rt, subscription), stamp, settled=True)
    credited = [_sync_topup(rt, gateway, user, s) for s in sessions if _is_topup_of(s, user)]
    live = newest_live(subscriptions)
    if live is not None:
        adopt_payment_method(rt, gateway, customer, live["id"])
    plan_after = rt.db.query_value("SELECT plan FROM users WHERE id = ?", (user["id"],))
    return SyncReport(
        customer,
        user["plan"],
        plan_after,
        [f"{s['id']} {s.get('status')}" for s in subscriptions],
        [c for c in credited if c is not None],
        credits.balance(rt, {**user, "plan": plan_after}),
        gateway.has_card(customer),
    )


def _is_topup_of(session: dict[str, Any], user: UserRow) -> bool:
    metadata = nested(session.get("metadata"))
    return metadata.get("purpose") == "topup" and metadata.get("telentir_user") in (None, user["id"])


def _sync_topup(rt: Runtime, gateway: StripeGateway, user: UserRow, session: dict[str, Any]) -> tuple[str, int] | None:
    effect = topup_effect(rt, gateway, user, session, None)
    with rt.db.atomic() as tx:
        outcome = effect(tx)
    return (session["id"], topup_amount(session)) if outcome.status == "applied" else None
