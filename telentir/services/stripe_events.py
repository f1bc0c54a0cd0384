"""Stripe's word on money and plans: signed webhook events, and `billing sync` re-reading a customer.

Every event is verified against STRIPE_WEBHOOK_SECRET (`stripe.Webhook.construct_event`,
tolerance 300 s) on the raw body, and applied at most once: its id is recorded in
`stripe_events` in the same transaction as its effects and ledger rows. An event whose
application failed (Stripe unreachable) is recorded as `failed` and answered 503, so Stripe
delivers it again and the next delivery retries it.

Events may come twice or out of order; the outcome is the same:
- a Checkout top-up is credited once per Checkout Session (`stripe_topups`), with the Stripe
  balance transaction's idempotency key derived from the session the event names;
- each subscription keeps the newest state seen, by the event's `created`; two events of the
  same second that disagree are settled by reading the subscription from Stripe (and a replay
  of either then changes nothing). The user's plan is recomputed from all their subscriptions:
  the newest live subscription's plan, else the default plan once one has ended;
- each invoice likewise keeps its newest state; the user's newest one, if its payment failed,
  is shown in `GET /api/billing/state` (`credits.payment_failure`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import stripe

from ..components.stripe_gateway import StripeGateway, StripeUnavailable
from ..errors import ApiError, BadRequest, Conflict
from ..ids import now_iso
from ..money import CURRENCY
from ..runtime import Runtime
from ..storage.db import Transaction
from ..storage.rows import UserRow, as_row, as_row_or_none
from . import credits
from .billing import LIVE_STATUSES, call_stripe, newest_live, require_stripe

log = logging.getLogger(__name__)

TOLERANCE_SECONDS = 300
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired", "unpaid", "paused"})
CHECKOUT_COMPLETED = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
SUBSCRIPTION_EVENTS = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
INVOICE_EVENTS = {"invoice.payment_failed": "failed", "invoice.paid": "paid"}


class WebhookNotConfigured(Conflict):
    code = "webhook_not_configured"


class InvalidSignature(BadRequest):
    code = "invalid_signature"


@dataclass(frozen=True)
class Outcome:
    """What applying an event did (`applied`, `ignored`; `replayed` when another delivery did it), in a sentence."""

    status: str
    note: str
    user_id: str | None = None


Effect = Callable[[Transaction], Outcome]


def _ignored(note: str, user_id: str | None = None) -> Effect:
    return lambda tx: Outcome("ignored", note, user_id)


# --- the webhook ------------------------------------------------------------------------------


def handle_webhook(rt: Runtime, payload: bytes, signature: str | None) -> dict[str, Any]:
    """`POST /api/stripe/webhook`: verify, then apply the event once; answers what became of it."""
    if not signature:  # unsigned is malformed whatever this server's configuration
        raise InvalidSignature("The Stripe-Signature header is missing: only Stripe's signed events are accepted.")
    gateway = require_stripe(rt)
    event = verify_event(rt, payload, signature)
    if _done(rt, event["id"]):
        return {"received": True, "id": event["id"], "status": "replayed"}
    try:
        outcome = _apply(rt, gateway, event)
    except ApiError as exc:
        _record_failure(rt, event, exc.message)
        raise
    log.info("Stripe event %s (%s): %s, %s", event["id"], event["type"], outcome.status, outcome.note)
    return {"received": True, "id": event["id"], "status": outcome.status}


def _apply(rt: Runtime, gateway: StripeGateway, event: dict[str, Any]) -> Outcome:
    effect = _effect_of(rt, gateway, event)
    with rt.db.atomic() as tx:
        if _done(rt, event["id"]):  # another delivery of it was applied meanwhile
            return Outcome("replayed", "applied by another delivery")
        outcome = effect(tx)
        _record(tx, event, outcome)
    return outcome


def verify_event(rt: Runtime, payload: bytes, signature: str | None) -> dict[str, Any]:
    """The event in `payload` if Stripe signed it within the tolerance; 400 `invalid_signature` otherwise."""
    secret = rt.config.stripe_webhook_secret
    if not secret:
        raise WebhookNotConfigured("The Stripe webhook is not configured on this server (STRIPE_WEBHOOK_SECRET).")
    if not payload.lstrip().startswith(b"{"):  # an event is a JSON object; nothing else is parsed at all
        raise InvalidSignature("The body is not a Stripe event.")
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret, tolerance=TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError as exc:
        raise InvalidSignature(f"The Stripe-Signature does not verify: {exc.user_message or exc}.") from exc
    except (ValueError, RecursionError) as exc:  # not UTF-8 (a ValueError too), not JSON, nested too deeply
        raise InvalidSignature("The body is not a Stripe event.") from exc
    return _checked_event(event.to_dict())


def _checked_event(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    if not (
        isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("created"), int)
        and 0 <= event["created"] < 2**53
        and isinstance(data, dict)
        and isinstance(data.get("object"), dict)
    ):
        raise BadRequest("The Stripe event lacks its id, type, created or data.object.", code="invalid_event")
    return event


def _done(rt: Runtime, event_id: str) -> bool:
    row = rt.db.query_one("SELECT status FROM stripe_events WHERE id = ?", (event_id,))
    return row is not None and row["status"] != "failed"


def _record(tx: Transaction, event: dict[str, Any], outcome: Outcome) -> None:
    now = now_iso()
    tx.execute(
        "INSERT INTO stripe_events (id, type, created, object_id, user_id, status, note, received_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
        # The table's own `attempts`, named in full: PostgreSQL finds a bare name ambiguous with excluded's.
        "note = excluded.note, user_id = excluded.user_id, attempts = stripe_events.attempts + 1, "
        "updated_at = excluded.updated_at",
        (
            event["id"],
            event["type"],
            event["created"],
            _id_of(event["data"]["object"]),
            outcome.user_id,
            outcome.status,
            outcome.note,
            now,
            now,
        ),
    )


def _record_failure(rt: Runtime, event: dict[str, Any], message: str) -> None:
    with rt.db.atomic() as tx:
        known = tx.execute("SELECT status FROM stripe_events WHERE id = ?", (event["id"],)).fetchone()
        if known is None or known["status"] == "failed":
            _record(tx, event, Outcome("failed", message))
    log.warning("Stripe event %s (%s) failed; Stripe will deliver it again: %s", event["id"], event["type"], message)


def _effect_of(rt: Runtime, gateway: StripeGateway, event: dict[str, Any]) -> Effect:
    """Do the event's Stripe calls (idempotent), and return what it writes, to run in one transaction."""
    kind, obj = event["type"], event["data"]["object"]
    if kind in CHECKOUT_COMPLETED:
        return _checkout_completed(rt, gateway, obj, event)
    if kind in SUBSCRIPTION_EVENTS:
        return _subscription_changed(rt, gateway, obj, event["created"])
    if kind in INVOICE_EVENTS:
        return _invoice_changed(rt, obj, INVOICE_EVENTS[kind], event["created"])
    return _ignored(f"{kind} is not an event this server acts on")


# --- whose is it ------------------------------------------------------------------------------


def user_for(rt: Runtime, user_id: object, customer: object) -> UserRow | None:
    """The user named in metadata (`telentir_user`), else the one linked to the customer."""
    if isinstance(user_id, str):
        row = rt.db.query_one("SELECT * FROM users WHERE id = ?", (user_id,))
        if row is not None:
            return as_row(UserRow, row)
    customer_id = customer.get("id") if isinstance(customer, dict) else customer
    if isinstance(customer_id, str):
        return as_row_or_none(
            UserRow, rt.db.query_one("SELECT * FROM users WHERE stripe_customer_id = ?", (customer_id,))
        )
    return None


def _obj(value: object) -> dict[str, Any]:
    """A nested object of a Stripe payload, or {} when it is absent (or, in a malformed event, not an object)."""
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int:
    """A whole number of a Stripe payload (0 when absent or not one)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _id_of(value: object) -> str | None:
    """An id that Stripe sends either bare or as an expanded object."""
    value = value.get("id") if isinstance(value, dict) else value
    return value if isinstance(value, str) else None


# --- Checkout ---------------------------------------------------------------------------------


def _checkout_completed(rt: Runtime, gateway: StripeGateway, session: dict[str, Any], event: dict[str, Any]) -> Effect:
    metadata = _obj(session.get("metadata"))
    user = user_for(rt, metadata.get("telentir_user"), session.get("customer"))
    if user is None or not isinstance(session.get("id"), str):
        return _ignored("no user of this server is named by the session or linked to its customer")
    if metadata.get("purpose") == "topup" and session.get("mode") == "payment":
        return topup_effect(rt, gateway, user, session, event["id"])
    if metadata.get("purpose") == "plan" and session.get("mode") == "subscription":
        return _plan_bought(rt, gateway, user, session, event["created"])
    return _ignored("not a Checkout Session this server created", user["id"])


def topup_amount(session: dict[str, Any]) -> int:
    """What a paid top-up session credits: the amount paid, net of tax, in minor units."""
    return _int(session.get("amount_total")) - _int(_obj(session.get("total_details")).get("amount_tax"))


def topup_effect(
    rt: Runtime, gateway: StripeGateway, user: UserRow, session: dict[str, Any], event_id: str | None
) -> Effect:
    """Credit a paid top-up to the customer's Stripe balance (once per session); the ledger row follows."""
    amount, customer = topup_amount(session), _id_of(session.get("customer"))
    if session.get("payment_status") != "paid":
        return _ignored("not paid yet: credited when checkout.session.async_payment_succeeded comes", user["id"])
    if session.get("currency") != CURRENCY or amount <= 0 or customer is None:
        return _ignored(f"nothing to credit ({amount} {session.get('currency')})", user["id"])
    if rt.db.query_one("SELECT 1 FROM stripe_topups WHERE session_id = ?", (session["id"],)):
        return _ignored(f"{session['id']} was credited already", user["id"])
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
    plan, subscription = _obj(session.get("metadata")).get("plan"), _id_of(session.get("subscription"))
    if not isinstance(plan, str) or plan not in rt.config.plans or subscription is None:
        return _ignored(f"plan {plan!r} is not in the catalog, or the session has no subscription", user["id"])
    paid = session.get("payment_status") in ("paid", "no_payment_required")
    state = SubscriptionState(
        subscription,
        _id_of(session.get("customer")) or "",
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


def adopt_payment_method(rt: Runtime, gateway: StripeGateway, customer_id: str, subscription_id: str) -> None:
    """Make the subscription's card the customer's default (Checkout sets it on the subscription only)."""
    try:
        pm = _id_of(
            call_stripe("read the subscription", lambda: gateway.subscription(subscription_id)).get(
                "default_payment_method"
            )
        )
        customer = call_stripe("read the customer", lambda: gateway.customer(customer_id))
        if (
            pm is None
            or _obj(customer.get("invoice_settings")).get("default_payment_method")
            or customer.get("default_source")
        ):
            return
        params = {"invoice_settings": {"default_payment_method": pm}}
        key = f"telentir:default-payment-method:{customer_id}:{pm}"
        call_stripe("set the default card", lambda: gateway.update_customer(customer_id, params, key))
    except ApiError as exc:
        # The plan is applied already; the card shows up with `telentir billing sync`.
        log.warning("could not make %s's card the default of %s: %s", subscription_id, customer_id, exc.message)


# --- subscriptions ----------------------------------------------------------------------------


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
        items = _obj(subscription.get("items")).get("data")
        price = _id_of(_obj(items[0]).get("price")) if isinstance(items, list) and items else None
        plan = plan_of_price(rt, price) or _obj(subscription.get("metadata")).get("plan")
        return cls(
            subscription["id"],
            _id_of(subscription.get("customer")) or "",
            str(subscription.get("status")),
            price,
            plan if isinstance(plan, str) and plan in rt.config.plans else None,
            _int(subscription.get("created")),
        )


def plan_of_price(rt: Runtime, price_id: str | None) -> str | None:
    """The catalog plan sold at this Stripe price."""
    return next((k for k, p in rt.config.plans.items() if price_id and p.get("stripePriceId") == price_id), None)


def _subscription_changed(rt: Runtime, gateway: StripeGateway, subscription: dict[str, Any], created: int) -> Effect:
    metadata = _obj(subscription.get("metadata"))
    user = user_for(rt, metadata.get("telentir_user"), subscription.get("customer"))
    if user is None or not isinstance(subscription.get("id"), str):
        return _ignored("no user of this server is named by the subscription or linked to its customer")
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


# --- invoices ---------------------------------------------------------------------------------


def _invoice_changed(rt: Runtime, invoice: dict[str, Any], status: str, created: int) -> Effect:
    details = _obj(invoice.get("subscription_details")) or _obj(_obj(invoice.get("parent")).get("subscription_details"))
    user = user_for(rt, _obj(details.get("metadata")).get("telentir_user"), invoice.get("customer"))
    if user is None or not isinstance(invoice.get("id"), str):
        return _ignored("no user of this server is linked to the invoice's customer")
    amount, currency = _int(invoice.get("amount_due")), str(invoice.get("currency") or CURRENCY)

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


# --- billing sync and the event log -----------------------------------------------------------


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
            if _obj(subscription.get("metadata")).get("telentir_user") in (None, user["id"]):
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
    metadata = _obj(session.get("metadata"))
    return metadata.get("purpose") == "topup" and metadata.get("telentir_user") in (None, user["id"])


def _sync_topup(rt: Runtime, gateway: StripeGateway, user: UserRow, session: dict[str, Any]) -> tuple[str, int] | None:
    effect = topup_effect(rt, gateway, user, session, None)
    with rt.db.atomic() as tx:
        outcome = effect(tx)
    return (session["id"], topup_amount(session)) if outcome.status == "applied" else None


def list_events(rt: Runtime, failed_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
    """Processed webhook events, newest first (only those whose application failed, with `failed_only`)."""
    rows = rt.db.query(
        "SELECT id, type, created, object_id, user_id, status, note, attempts, received_at, updated_at "
        "FROM stripe_events WHERE (? = 0 OR status = 'failed') ORDER BY received_at DESC, id DESC LIMIT ?",
        (int(failed_only), limit),
    )
    return [dict(r) for r in rows]
