"""Buying with Stripe: Checkout top-ups, plan checkouts and changes, the customer portal.

Each of the three routes the SDK calls (docs/protocol.md §7) answers a URL. Nothing here
moves money or changes a plan: that happens when Stripe says so, in a signed webhook
(`services/stripe_events.py`) or when `telentir billing sync` re-reads the customer.
Without STRIPE_SECRET_KEY every operation here is a 409 `stripe_not_configured`.

Stripe's errors are mapped as everywhere (`stripe_gateway.map_error`): Stripe unreachable,
failing or busy with the same request → 503 `stripe_unavailable` (try again); a refused
request → 400 `stripe_invalid_request`; our key refused → 500, logged for the operator.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import stripe

from ..components.stripe_gateway import StripeGateway, map_error
from ..config import Config, origin_of
from ..errors import BadRequest, Conflict
from ..money import CURRENCY
from ..runtime import Runtime
from ..storage.rows import UserRow

log = logging.getLogger(__name__)
T = TypeVar("T")

# Subscription statuses in which the customer has the plan they pay for.
LIVE_STATUSES = frozenset({"active", "trialing", "past_due"})
MAX_RETURN_URL = 2048
TOPUP_UNIT_CENTS = 100  # the top-up is sold as a quantity of one-dollar units, chosen on Stripe's page


class StripeNotConfigured(Conflict):
    code = "stripe_not_configured"


class ReturnOriginsNotConfigured(Conflict):
    code = "return_origins_not_configured"


def require_stripe(rt: Runtime) -> StripeGateway:
    """The Stripe gateway; 409 `stripe_not_configured` without STRIPE_SECRET_KEY."""
    if rt.stripe is None:
        raise StripeNotConfigured(
            "Stripe is not configured on this server (STRIPE_SECRET_KEY is unset): credits are granted by an operator."
        )
    return rt.stripe


def call_stripe(action: str, call: Callable[[], T]) -> T:
    """Run one Stripe call, once more if the network failed (same idempotency key: never twice in effect)."""
    try:
        try:
            return call()
        except (stripe.APIConnectionError, stripe.APIError) as exc:
            log.info("retrying Stripe call to %s after: %s", action, exc)
            return call()
    except stripe.StripeError as exc:
        raise map_error(exc) from exc


# --- where Stripe sends the customer back ---------------------------------------------------


def return_url(config: Config, return_to: str | None) -> str:
    """`returnTo` when its origin is allowed (400 otherwise); the first allowed origin when absent."""
    if not config.return_origins:
        raise ReturnOriginsNotConfigured(
            "No return origins are configured (TELENTIR_RETURN_ORIGINS): Stripe could send no one back."
        )
    if return_to is None:
        return config.return_origins[0] + "/"
    if _origin(return_to) not in config.return_origins:
        raise BadRequest(
            "returnTo must be an absolute http(s) URL on one of the allowed origins "
            f"({', '.join(config.return_origins)}).",
            code="invalid_return_to",
        )
    return return_to


def _origin(url: str) -> str | None:
    """The URL's origin, or None for anything a browser might read differently than we do."""
    # Backslashes, spaces, control and non-ASCII characters are where parsers disagree
    # (`https://ok.example\@evil.example`): refuse them rather than guess.
    if not url or len(url) > MAX_RETURN_URL or not all(33 <= ord(ch) < 127 and ch != "\\" for ch in url):
        return None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or "@" in parts.netloc or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return origin_of(parts.scheme, host, port)


def with_query(url: str, name: str, value: str) -> str:
    """`url` with one more query parameter (an existing one of that name replaced)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name] + [(name, value)]
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- the customer -----------------------------------------------------------------------------


def ensure_customer(rt: Runtime, user: UserRow) -> str:
    """The user's Stripe customer, created on first use and remembered (this links the user: Stripe mode)."""
    if user.get("stripe_customer_id"):
        return str(user["stripe_customer_id"])
    gateway = require_stripe(rt)
    params: dict[str, Any] = {"email": user["email"], "metadata": {"telentir_user": user["id"]}}
    name = f"{user.get('first_name') or ''} {user.get('last_name') or ''}".strip()
    if name:
        params["name"] = name
    # One key per user and details: two first requests at once make one customer.
    digest = hashlib.sha256(repr(sorted(params.items())).encode()).hexdigest()[:16]
    key = f"telentir:customer:{user['id']}:{digest}"
    created = call_stripe("create a customer", lambda: gateway.create_customer(params, key))
    with rt.db.atomic() as tx:
        tx.execute(
            "UPDATE users SET stripe_customer_id = ? WHERE id = ? AND stripe_customer_id IS NULL", (created, user["id"])
        )
    user["stripe_customer_id"] = rt.db.query_value("SELECT stripe_customer_id FROM users WHERE id = ?", (user["id"],))
    return str(user["stripe_customer_id"])


def _request_key(purpose: str) -> str:
    """An idempotency key for one HTTP request: its retries to Stripe never make two of anything."""
    return f"telentir:{purpose}:{uuid.uuid4().hex}"


def _metadata(user: UserRow, purpose: str, **extra: str) -> dict[str, str]:
    return {"telentir_user": str(user["id"]), "purpose": purpose, **extra}


# --- the three routes -------------------------------------------------------------------------


def create_topup_session(rt: Runtime, user: UserRow, return_to: str | None) -> str:
    """`POST /api/credits/add`: a Checkout Session (payment mode) for a credit top-up; its URL."""
    gateway = require_stripe(rt)
    back = return_url(rt.config, return_to)
    customer = ensure_customer(rt, user)
    metadata = _metadata(user, "topup")
    params = {
        "mode": "payment",
        "customer": customer,
        "client_reference_id": user["id"],
        "success_url": with_query(back, "checkout", "success"),
        "cancel_url": with_query(back, "checkout", "cancel"),
        "line_items": [topup_line(rt.config)],
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata, "description": "Telentir lead credits"},
    }
    key = _request_key("checkout")
    session = call_stripe("create a Checkout Session", lambda: gateway.create_checkout_session(params, key))
    return str(session["url"])


def topup_line(config: Config) -> dict[str, Any]:
    """The one line item of a top-up: the configured price, else dollars between the configured bounds."""
    if config.topup_price_id:
        return {"price": config.topup_price_id, "quantity": 1}
    line: dict[str, Any] = {
        "price_data": {
            "currency": CURRENCY,
            "unit_amount": TOPUP_UNIT_CENTS,
            "product_data": {"name": "Lead credits (USD)"},
        },
        "quantity": config.topup_min_usd,
    }
    if config.topup_min_usd < config.topup_max_usd:  # Stripe wants minimum < maximum
        line["adjustable_quantity"] = {
            "enabled": True,
            "minimum": config.topup_min_usd,
            "maximum": config.topup_max_usd,
        }
    return line


def create_portal_session(rt: Runtime, user: UserRow, return_to: str | None) -> str:
    """`GET /api/billing/portal`: a customer-portal session; its URL."""
    gateway = require_stripe(rt)
    back = return_url(rt.config, return_to)
    params = {"customer": ensure_customer(rt, user), "return_url": back}
    key = _request_key("portal")
    return str(call_stripe("open the billing portal", lambda: gateway.create_portal_session(params, key))["url"])


def parse_plan_request(config: Config, body: dict[str, Any]) -> tuple[str, bool]:
    """`{plan, mode?}` → (plan key, upgrade?); 400 naming what is wrong."""
    plan, mode = body.get("plan"), body.get("mode")
    if not isinstance(plan, str) or plan not in config.plans:
        raise BadRequest(f"Unknown plan {plan!r}; the catalog has {', '.join(config.plans)}.", code="unknown_plan")
    if mode not in (None, "upgrade"):
        raise BadRequest('mode must be "upgrade" or left out.')
    if not config.plans[plan].get("stripePriceId"):
        raise BadRequest(
            f"Plan {plan!r} has no Stripe price (stripePriceId) and cannot be bought through Checkout.",
            code="plan_not_purchasable",
        )
    return plan, mode == "upgrade"


def create_plan_checkout(rt: Runtime, user: UserRow, body: dict[str, Any], return_to: str | None) -> str:
    """`POST /api/billing/plan`: Checkout for a subscription, or (upgrade) the subscription changed in place."""
    gateway = require_stripe(rt)
    back = return_url(rt.config, return_to)
    plan, upgrade = parse_plan_request(rt.config, body)
    customer = ensure_customer(rt, user)
    current = newest_live(call_stripe("read the subscriptions", lambda: gateway.subscriptions(customer)))
    if current is not None and not upgrade:
        raise Conflict(
            f'There already is a subscription ({current["id"]}): change it with mode "upgrade" or in the billing '
            "portal.",
            code="subscription_exists",
        )
    if current is not None:
        change_subscription(rt, gateway, user, current, plan)
        return with_query(back, "checkout", "success")
    params = _subscription_checkout(rt.config, user, customer, plan, back)
    key = _request_key("checkout")
    session = call_stripe("create a Checkout Session", lambda: gateway.create_checkout_session(params, key))
    return str(session["url"])


def _subscription_checkout(config: Config, user: UserRow, customer: str, plan: str, back: str) -> dict[str, Any]:
    metadata = _metadata(user, "plan", plan=plan)
    return {
        "mode": "subscription",
        "customer": customer,
        "client_reference_id": user["id"],
        "success_url": with_query(back, "checkout", "success"),
        "cancel_url": with_query(back, "checkout", "cancel"),
        "line_items": [{"price": config.plans[plan]["stripePriceId"], "quantity": 1}],
        "metadata": metadata,
        "subscription_data": {"metadata": metadata},
    }


def newest_live(subscriptions: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The most recently created subscription that is live (active, trialing, past due), if any."""
    live = [s for s in subscriptions if s.get("status") in LIVE_STATUSES]
    return max(live, key=lambda s: (int(s.get("created") or 0), str(s["id"])), default=None)


def change_subscription(
    rt: Runtime, gateway: StripeGateway, user: UserRow, subscription: dict[str, Any], plan: str
) -> None:
    """Move a subscription to the plan's price, prorated; the webhook that follows sets the plan."""
    price = rt.config.plans[plan]["stripePriceId"]
    items = (subscription.get("items") or {}).get("data") or []
    if not items:
        raise Conflict(
            f"{subscription['id']} has no item to change; change it in the billing portal.", code="subscription_exists"
        )
    item = items[0]
    if item["price"]["id"] == price:
        return  # already on it: nothing to prorate
    params = {
        "items": [{"id": item["id"], "price": price}],
        "proration_behavior": "create_prorations",
        "metadata": _metadata(user, "plan", plan=plan),
    }
    key = _request_key("plan-change")
    call_stripe("change the subscription", lambda: gateway.update_subscription(subscription["id"], params, key))
