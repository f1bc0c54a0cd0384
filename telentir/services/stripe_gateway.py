"""Stripe customer balances, through the `stripe` library.

In Stripe a customer's `balance` is what they owe: a *negative* balance is credit. Our
prepaid balance is therefore `-balance`; a reservation is a balance transaction with a
positive amount (it uses up credit), a refund one with a negative amount (it gives it back).
Every call that moves money carries an idempotency key derived from the job and step, so
a retried call can never move money twice.
"""

from __future__ import annotations

import logging
from typing import Any

import stripe

from ..config import Config
from ..errors import ServiceUnavailable
from ..money import CURRENCY

log = logging.getLogger(__name__)


class StripeUnavailable(ServiceUnavailable):
    """Stripe could not be reached or refused the call."""

    code = "stripe_unavailable"


class StripeGateway:
    """The few Stripe calls the credits ledger needs."""

    def __init__(self, config: Config) -> None:
        base = {"api": config.stripe_api_base} if config.stripe_api_base else None
        self._http = stripe.RequestsClient(timeout=config.stripe_timeout_seconds)
        self.client = stripe.StripeClient(
            config.stripe_secret_key or "",
            base_addresses=base,  # type: ignore[arg-type]
            max_network_retries=0,  # our own retry loop owns retries, with the same idempotency key
            http_client=self._http,
        )

    def close(self) -> None:
        """Close the calling thread's pooled connections to Stripe (the client keeps one session per thread)."""
        self._http.close()

    def credit_balance(self, customer_id: str) -> int:
        """The customer's prepaid credit in minor units (Stripe's balance, sign flipped)."""
        customer = self._call(self.client.v1.customers.retrieve, customer_id)
        return -int(customer.balance or 0)

    def has_card(self, customer_id: str) -> bool:
        """Whether the customer has a default payment method."""
        # A StripeObject is not a dict (no .get): read a plain copy.
        customer = self._call(self.client.v1.customers.retrieve, customer_id).to_dict()
        settings = customer.get("invoice_settings") or {}
        return bool(settings.get("default_payment_method") or customer.get("default_source"))

    def debit(self, customer_id: str, amount: int, description: str, idempotency_key: str) -> str:
        """Use `amount` of the customer's credit; returns the balance transaction id."""
        return self._transaction(customer_id, amount, description, idempotency_key)

    def credit(self, customer_id: str, amount: int, description: str, idempotency_key: str) -> str:
        """Give `amount` of credit back; returns the balance transaction id."""
        return self._transaction(customer_id, -amount, description, idempotency_key)

    def _transaction(self, customer_id: str, amount: int, description: str, idempotency_key: str) -> str:
        params = {"amount": amount, "currency": CURRENCY, "description": description}
        txn = self._call(
            self.client.v1.customers.balance_transactions.create,
            customer_id,
            params,
            {"idempotency_key": idempotency_key},
        )
        return str(txn.id)

    @staticmethod
    def _call(method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except stripe.StripeError as exc:
            log.warning("Stripe call failed: %s", exc)
            raise StripeUnavailable("Stripe could not be reached; no credits were used. Try again shortly.") from exc

    # --- Billing: customers, Checkout, the customer portal, subscriptions (issue 13) -----------
    # These answer plain dicts and let stripe.StripeError through: telentir.services.billing maps
    # Stripe's errors to its routes' own answers. Every POST carries the caller's idempotency key.

    def create_customer(self, params: dict[str, Any], idempotency_key: str) -> str:
        """Create a customer; returns its id."""
        return str(self.client.v1.customers.create(params, {"idempotency_key": idempotency_key}).id)  # type: ignore[arg-type]

    def customer(self, customer_id: str) -> dict[str, Any]:
        """The customer object."""
        return self.client.v1.customers.retrieve(customer_id).to_dict()

    def update_customer(self, customer_id: str, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """Change a customer (e.g. its default payment method)."""
        options = {"idempotency_key": idempotency_key}
        return self.client.v1.customers.update(customer_id, params, options).to_dict()  # type: ignore[arg-type]

    def create_checkout_session(self, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """Create a Checkout Session (payment or subscription mode)."""
        options = {"idempotency_key": idempotency_key}
        return self.client.v1.checkout.sessions.create(params, options).to_dict()  # type: ignore[arg-type]

    def completed_checkout_sessions(self, customer_id: str) -> list[dict[str, Any]]:
        """Every completed Checkout Session of a customer, newest first."""
        listing = self.client.v1.checkout.sessions.list({"customer": customer_id, "status": "complete", "limit": 100})
        return [session.to_dict() for session in listing.auto_paging_iter()]

    def create_portal_session(self, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """Create a customer-portal session."""
        options = {"idempotency_key": idempotency_key}
        return self.client.v1.billing_portal.sessions.create(params, options).to_dict()  # type: ignore[arg-type]

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        """The subscription object."""
        return self.client.v1.subscriptions.retrieve(subscription_id).to_dict()

    def update_subscription(self, subscription_id: str, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        """Change a subscription (its price, with proration)."""
        options = {"idempotency_key": idempotency_key}
        return self.client.v1.subscriptions.update(subscription_id, params, options).to_dict()  # type: ignore[arg-type]

    def subscriptions(self, customer_id: str) -> list[dict[str, Any]]:
        """Every subscription of a customer, whatever its status, newest first."""
        listing = self.client.v1.subscriptions.list({"customer": customer_id, "status": "all", "limit": 100})
        return [subscription.to_dict() for subscription in listing.auto_paging_iter()]


def make_gateway(config: Config) -> StripeGateway | None:
    """A gateway when STRIPE_SECRET_KEY is set, else None (local prepaid balances)."""
    return StripeGateway(config) if config.stripe_secret_key else None
