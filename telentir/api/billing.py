"""Buying with Stripe: /api/credits/add, /api/billing/plan, /api/billing/portal (docs/protocol.md §7).

Each answers `{"url"}`. Without Stripe configured each is a 409 `stripe_not_configured`
right after the data-plane guard, before anything else is looked at.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..services import billing
from .common import json_body, require_csrf_header, runtime
from .guard import data_plane_user, guard

bp = Blueprint("billing", __name__, url_prefix="/api")
bp.before_request(guard)


def _return_to() -> str | None:
    return request.args.get("returnTo")


@bp.post("/credits/add")
def add_credits() -> Response:
    """A Stripe Checkout URL where the caller buys lead credits."""
    rt, user = runtime(), data_plane_user()
    billing.require_stripe(rt)
    return jsonify({"url": billing.create_topup_session(rt, user, _return_to())})


@bp.post("/billing/plan")
def plan_checkout() -> Response:
    """A Stripe Checkout URL for a plan's subscription (or, with mode "upgrade", the subscription changed)."""
    rt, user = runtime(), data_plane_user()
    billing.require_stripe(rt)
    return jsonify({"url": billing.create_plan_checkout(rt, user, json_body(), _return_to())})


@bp.get("/billing/portal")
def portal() -> Response:
    """A Stripe customer-portal URL (cards, invoices, cancellation)."""
    rt, user = runtime(), data_plane_user()
    require_csrf_header()  # a GET that may create the Stripe customer: not from a cross-site navigation
    billing.require_stripe(rt)
    return jsonify({"url": billing.create_portal_session(rt, user, _return_to())})
