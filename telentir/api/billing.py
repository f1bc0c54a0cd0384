"""Buying with Stripe: /api/credits/add, /api/billing/plan, /api/billing/portal (docs/protocol.md §7).

Each answers `{"url"}`. Without Stripe configured each is a 409 `stripe_not_configured`
right after the data-plane guard, before anything else is looked at.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..services import billing
from .common import json_body, require_csrf_header, runtime
from .guard import data_plane_user, guard
from .registry import Answer, operation
from .types.money import PlanChoice, ReturnTo, StripeUrl

STRIPE_ERRORS = (402, 409, 503)
STRIPE_URL = Answer(type=StripeUrl, example={"url": "https://checkout.stripe.com/c/pay/cs_test_a1"})

bp = Blueprint("billing", __name__, url_prefix="/api")
bp.before_request(guard)


def _return_to() -> str | None:
    return request.args.get("returnTo")


@bp.post("/credits/add")
@operation(
    "create_topup_checkout",
    "Billing",
    "A Stripe Checkout URL for a credit top-up (409 stripe_not_configured without Stripe)",
    ok=STRIPE_URL,
    errors=STRIPE_ERRORS,
    query=ReturnTo,
)
def add_credits() -> Response:
    """A Stripe Checkout URL where the caller buys lead credits."""
    rt, user = runtime(), data_plane_user()
    billing.require_stripe(rt)
    return jsonify({"url": billing.create_topup_session(rt, user, _return_to())})


@bp.post("/billing/plan")
@operation(
    "create_plan_checkout",
    "Billing",
    "A Stripe Checkout URL for a plan, or (mode upgrade) the subscription changed with proration",
    ok=STRIPE_URL,
    errors=STRIPE_ERRORS,
    query=ReturnTo,
    body=PlanChoice,
    body_example={"plan": "pro"},
)
def plan_checkout() -> Response:
    """A Stripe Checkout URL for a plan's subscription (or, with mode "upgrade", the subscription changed)."""
    rt, user = runtime(), data_plane_user()
    billing.require_stripe(rt)
    return jsonify({"url": billing.create_plan_checkout(rt, user, json_body(), _return_to())})


@bp.get("/billing/portal")
@operation(
    "create_portal_session",
    "Billing",
    "A Stripe customer-portal URL",
    ok=STRIPE_URL,
    errors=STRIPE_ERRORS,
    query=ReturnTo,
)
def portal() -> Response:
    """A Stripe customer-portal URL (cards, invoices, cancellation)."""
    rt, user = runtime(), data_plane_user()
    require_csrf_header()  # a GET that may create the Stripe customer: not from a cross-site navigation
    billing.require_stripe(rt)
    return jsonify({"url": billing.create_portal_session(rt, user, _return_to())})
