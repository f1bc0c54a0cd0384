"""Stripe customer balances, through the `stripe` library.

In Stripe a customer's `balance` is what they owe: a *negative* balance is credit. Our
prepaid balance is therefore `-balance`; a reservation is a balance transaction with a
positive amount (it uses up credit), a refund one with a negative amount (it gives it back).
Every call that moves money carries an idempotency key derived from the job and step
(`telentir:<job>:<step>`), so a retried call can never move money twice while Stripe keeps
the key (at least 24 hours), and `metadata` {job, step}, so that once the key may have
expired the transaction can still be found among the customer's balance transactions.

Stripe's failures become one of four errors (docs/protocol.md §7):

    StripeCallFailed
    ├── StripeCardError (402 stripe_card_error)           card declined: the user can act
    ├── StripeRequestRejected (400 stripe_invalid_request) Stripe refused the request
    ├── StripeMisconfigured (500 internal_error)           our key or account: the operator must act
    └── StripeUnavailable (503 stripe_unavailable, Retry-After)  connection, rate limit, Stripe 5xx
"""

from __future__ import annotations

import logging
import time
from typing import Any

import stripe

from ..config import Config
from ..errors import ApiError
from ..money import CURRENCY

log = logging.getLogger(__name__)

IDEMPOTENCY_HORIZON_SECONDS = 23 * 3600
"""How long a retry may rely on its idempotency key alone.

Stripe keeps a key for at least 24 hours; an hour of margin covers clock skew and slow
requests. Past it, a pending step is first looked up by its metadata before it is resent.
"""

DEFAULT_RETRY_AFTER = 5  # seconds a client is told to wait when Stripe is unavailable
_LOOKBACK_MARGIN_SECONDS = 3600  # our clock and Stripe's `created` may disagree a little
_PAGE_SIZE = 100  # Stripe's largest page


class StripeCallFailed(ApiError):
    """A Stripe call failed; `applied_unknown` when Stripe may still have done it (no answer, or a 5xx)."""

    applied_unknown = False


class StripeCardError(StripeCallFailed):
    """The card was declined (Stripe's card_error)."""

    status, code = 402, "stripe_card_error"


class StripeRequestRejected(StripeCallFailed):
    """Stripe refused the request as invalid (e.g. the linked customer does not exist)."""

    status, code = 400, "stripe_invalid_request"


class StripeMisconfigured(StripeCallFailed):
    """Stripe refused our credentials or permissions: logged for the operator, generic to the client."""

    status, code = 500, "internal_error"

    def __init__(self) -> None:
        super().__init__("Something went wrong on our side; no credits were used. Try again later.")


class StripeUnavailable(StripeCallFailed):
    """Stripe could not be reached, was rate limiting us, or failed on its side."""

    status, code = 503, "stripe_unavailable"

    def __init__(
        self,
        message: str = "Stripe could not be reached; no credits were used. Try again shortly.",
        *,
        retry_after: int = DEFAULT_RETRY_AFTER,
        applied_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.applied_unknown = applied_unknown


def idempotency_key(job_id: str, step: str) -> str:
    """The key of a job's money step (`reserve` or `refund`): the same for every retry."""
    return f"telentir:{job_id}:{step}"


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
        customer = _call(self.client.v1.customers.retrieve, customer_id)
        return -int(customer.balance or 0)

    def has_card(self, customer_id: str) -> bool:
        """Whether the customer has a default payment method."""
        # A StripeObject is not a dict (no .get): read a plain copy.
        customer = _call(self.client.v1.customers.retrieve, customer_id).to_dict()
        settings = customer.get("invoice_settings") or {}
        return bool(settings.get("default_payment_method") or customer.get("default_source"))

    def debit(self, customer_id: str, amount: int, description: str, job_id: str, step: str = "reserve") -> str:
        """Use `amount` of the customer's credit for a job's step; returns the balance transaction id."""
        return self._job_transaction(customer_id, amount, description, job_id, step)

    def credit(self, customer_id: str, amount: int, description: str, job_id: str, step: str = "refund") -> str:
        """Give `amount` of credit back for a job's step; returns the balance transaction id."""
        return self._job_transaction(customer_id, -amount, description, job_id, step)

    def credit_topup(self, customer_id: str, amount: int, description: str, session_id: str, paid_at: float) -> str:
        """Credit a paid Checkout top-up, once per session whoever retries it; returns the balance transaction id.

        `paid_at` (Unix time) is the earliest the credit can have been made: past the key's
        horizon, a credit already made is found by its metadata instead of being made again.
        """
        metadata = {"purpose": "topup", "checkout_session": session_id}
        if time.time() - paid_at >= IDEMPOTENCY_HORIZON_SECONDS:
            found = self.find_transaction_by(customer_id, paid_at, metadata)
            if found is not None:
                log.warning("the top-up of %s had been credited (%s); not credited again", session_id, found)
                return found
        return self._transaction(customer_id, -amount, description, f"telentir:topup:{session_id}", metadata)

    def find_transaction(self, customer_id: str, job_id: str, step: str, since: float) -> str | None:
        """The id of the balance transaction a job's step made, searched by metadata from `since` (Unix time)."""
        return self.find_transaction_by(customer_id, since, {"job": job_id, "step": step})

    def find_transaction_by(self, customer_id: str, since: float, metadata: dict[str, str]) -> str | None:
        """The id of the customer's balance transaction carrying `metadata`, made at `since` (Unix time) or later."""
        earliest = max(0, int(since) - _LOOKBACK_MARGIN_SECONDS)
        params: dict[str, Any] = {"limit": _PAGE_SIZE, "created": {"gte": earliest}}
        while True:
            page = _call(self.client.v1.customers.balance_transactions.list, customer_id, params)
            for txn in page.data:
                found = txn.metadata.to_dict() if txn.metadata else {}
                if all(found.get(name) == value for name, value in metadata.items()):
                    return str(txn.id)
            if not page.has_more or not page.data:
                return None
            params = {**params, "starting_after": page.data[-1].id}

    def _job_transaction(self, customer_id: str, amount: int, description: str, job_id: str, step: str) -> str:
        metadata = {"job": job_id, "step": step}
        return self._transaction(customer_id, amount, description, idempotency_key(job_id, step), metadata)

    def _transaction(self, customer_id: str, amount: int, description: str, key: str, metadata: dict[str, str]) -> str:
        params = {"amount": amount, "currency": CURRENCY, "description": description, "metadata": metadata}
        txn = _call(self.client.v1.customers.balance_transactions.create, customer_id, params, {"idempotency_key": key})
        return str(txn.id)

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


def _call(method: Any, *args: Any) -> Any:
    try:
        return method(*args)
    except stripe.StripeError as exc:
        raise map_error(exc) from exc


def map_error(exc: stripe.StripeError) -> StripeCallFailed:
    """Our error for one of Stripe's (see the module docstring); logged at the level the operator needs."""
    if isinstance(exc, stripe.CardError):
        log.info("Stripe declined a card: %s", exc)
        return StripeCardError(exc.user_message or "The card was declined; no credits were used.")
    if isinstance(exc, stripe.InvalidRequestError):
        log.warning("Stripe refused a request: %s", exc)
        detail = f" ({exc.code})" if exc.code else ""
        return StripeRequestRejected(
            f"Stripe refused the request for this account{detail}; no credits were used. "
            "Ask the operator to check the account's Stripe customer."
        )
    # A key reused with other parameters (Stripe's 400 idempotency_error) is our bug; the same key
    # still in flight elsewhere (409, e.g. a webhook and `billing sync` crediting one top-up at
    # once) is only busy: that one is retried like an outage, below.
    reused_key = isinstance(exc, stripe.IdempotencyError) and exc.http_status != 409
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)) or reused_key:
        # Our secret key, its permissions or our keys are wrong: only the operator can fix it.
        log.error("Stripe refused this server's request (%s): %s", type(exc).__name__, exc)
        return StripeMisconfigured()
    applied_unknown = not isinstance(exc, stripe.RateLimitError)  # a 429 was refused before any effect
    log.warning("Stripe unavailable (%s): %s", type(exc).__name__, exc)
    return StripeUnavailable(applied_unknown=applied_unknown)


def make_gateway(config: Config) -> StripeGateway | None:
    """A gateway when STRIPE_SECRET_KEY is set, else None (local prepaid balances)."""
    return StripeGateway(config) if config.stripe_secret_key else None
