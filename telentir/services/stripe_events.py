"""Stripe's word on money and plans: signed webhook events, and `billing sync` re-reading a customer.

Every event is verified against STRIPE_WEBHOOK_SECRET (`stripe.Webhook.construct_event`,
tolerance 300 s) on the raw body, and applied at most once: its id is recorded in
`stripe_events` in the same transaction as its effects and ledger rows. An event whose
application failed (Stripe unreachable) is recorded as `failed` and answered 503, so Stripe
delivers it again and the next delivery retries it.

Events may come twice or out of order; the outcome is the same:
- a Checkout top-up is credited once per Checkout Session (`stripe_topups`), with the Stripe
  balance transaction's idempotency key derived from the session the event names
  (`stripe_checkout`);
- each subscription and each invoice keeps the newest state seen, by the event's `created`,
  and the user's plan follows their subscriptions (`stripe_subscriptions`).
"""

from __future__ import annotations

import logging
from typing import Any

import stripe

from ..components.stripe_gateway import StripeGateway
from ..errors import ApiError, BadRequest, Conflict
from ..ids import now_iso
from ..runtime import Runtime
from ..storage.db import Transaction
from .billing import require_stripe
from .stripe_checkout import checkout_completed
from .stripe_objects import Effect, Outcome, id_of, ignored
from .stripe_subscriptions import invoice_changed, subscription_changed

log = logging.getLogger(__name__)

TOLERANCE_SECONDS = 300
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
            id_of(event["data"]["object"]),
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
        return checkout_completed(rt, gateway, obj, event)
    if kind in SUBSCRIPTION_EVENTS:
        return subscription_changed(rt, gateway, obj, event["created"])
    if kind in INVOICE_EVENTS:
        return invoice_changed(rt, obj, INVOICE_EVENTS[kind], event["created"])
    return ignored(f"{kind} is not an event this server acts on")


# --- the event log ----------------------------------------------------------------------------


def list_events(rt: Runtime, failed_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
    """Processed webhook events, newest first (only those whose application failed, with `failed_only`)."""
    rows = rt.db.query(
        "SELECT id, type, created, object_id, user_id, status, note, attempts, received_at, updated_at "
        "FROM stripe_events WHERE (? = 0 OR status = 'failed') ORDER BY received_at DESC, id DESC LIMIT ?",
        (int(failed_only), limit),
    )
    return [dict(r) for r in rows]
