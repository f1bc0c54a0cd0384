"""POST /api/stripe/webhook: Stripe's events, authenticated by their signature only (docs/protocol.md §7)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..services import stripe_events
from .common import runtime
from .registry import Answer, Header, operation
from .types.money import StripeEvent, StripeSignature, WebhookReceived

bp = Blueprint("webhooks", __name__, url_prefix="/api")


@bp.post("/stripe/webhook")
@operation(
    "receive_stripe_event",
    "Billing",
    "Stripe's events, verified by signature (tolerance 300 s) and applied once; a replay is a 200",
    ok=Answer(type=WebhookReceived, example={"received": True, "id": "evt_1PxYz", "status": "applied"}),
    errors=(409, 503),
    auth=None,
    body=StripeEvent,
    headers=(Header("Stripe-Signature", StripeSignature),),
)
def stripe_webhook() -> Response:
    """Verify a Stripe event's signature over the raw body, then apply it once."""
    payload = request.get_data(cache=False)  # the exact bytes Stripe signed: never parsed before verifying
    signature = request.headers.get("Stripe-Signature")
    return jsonify(stripe_events.handle_webhook(runtime(), payload, signature))
