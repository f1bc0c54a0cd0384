"""A local stand-in for the few Stripe endpoints the credits ledger uses, strict like the real one.

Endpoints: `GET /v1/customers/{id}`, `POST /v1/customers/{id}/balance_transactions`
(form-encoded `amount`, `currency`, `description`, `metadata[...]`) and `GET
/v1/customers/{id}/balance_transactions` (newest first; `limit` 1-100, default 10;
`starting_after`/`ending_before` cursors; `created[gt|gte|lt|lte]`; a list object with
`has_more`). It checks what Stripe checks: `Authorization: Bearer sk_...`, an integer
amount, currency `usd`, no unknown parameters, unknown customer → 404. Idempotency works
like Stripe's: the first answer to a key is stored; the same key with the same request
replays it (`Idempotent-Replayed: true`) with no second effect; the same key with different
parameters is a 400 `idempotency_error`. It also insists on an `Idempotency-Key` on every
POST (Stripe only recommends one). `expire_idempotency_keys()` forgets every stored key, as
Stripe does after 24 hours.

Failure modes (`fail(...)`) for the next matching calls:
- `"500"` or `"api_error"`: answer 500 before doing anything (nothing stored, so a retry runs afresh);
- `"card_error"` (402), `"invalid_request_error"` (400), `"authentication_error"` (401),
  `"permission_error"` (403), `"rate_limit"` (429): that error, before doing anything;
- `"drop"`:       close the connection without an answer and without doing anything (down);
- `"drop_after"`: do the work and store the answer, then close the connection (answer lost);
- `"hang_after"`: do the work and store the answer, then hold the connection until `release()`
  (or stop), then close it (a caller killed while waiting).
Every call is recorded in `calls`.

Billing (its own section below): `POST /v1/customers` and `/v1/customers/{id}`, Checkout
Sessions (`POST`/`GET /v1/checkout/sessions`, payment and subscription mode, strict about
line items, bounds, URLs and unknown parameters), `POST /v1/billing_portal/sessions`, and
subscriptions (`GET /v1/subscriptions[/{id}]`, `POST /v1/subscriptions/{id}`). A session's
`url` is a page of the fake: `POST` to it (or `pay()`) pays, making the subscription, the
invoice and the events Stripe would make; `deliver()` sends an event to the webhook endpoint
signed as Stripe signs (`Stripe-Signature: t=<time>,v1=<HMAC-SHA256 of "t.body">`).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from .local_server import BackgroundServer

_CUSTOMER = re.compile(r"/v1/customers/(?P<id>[^/]+)")
_BALANCE_TXNS = re.compile(r"/v1/customers/(?P<id>[^/]+)/balance_transactions")
_INTEGER = re.compile(r"-?[0-9]+")
_TXN_PARAMS = {"amount", "currency", "description"}
_LIST_PARAMS = {"limit", "starting_after", "ending_before", *(f"created[{op}]" for op in ("gt", "gte", "lt", "lte"))}
# Stripe's answers for each error class (types and codes as its API sends them).
_ERRORS: dict[str, tuple[int, str, str, str | None]] = {
    "500": (500, "api_error", "An unknown error occurred (fake).", None),
    "api_error": (500, "api_error", "An unknown error occurred (fake).", None),
    "card_error": (402, "card_error", "Your card was declined.", "card_declined"),
    "invalid_request_error": (400, "invalid_request_error", "Invalid request (fake).", "parameter_invalid_empty"),
    "authentication_error": (401, "invalid_request_error", "Invalid API Key provided: sk_test_****", None),
    "permission_error": (
        403,
        "invalid_request_error",
        "The provided key does not have the required permissions for this endpoint.",
        "secret_key_required",
    ),
    "rate_limit": (429, "invalid_request_error", "Too many requests hit the API too quickly.", "rate_limit"),
}
FAILURE_MODES = (*_ERRORS, "drop", "drop_after", "hang_after")


@dataclass
class Call:
    """One request the fake received, and what it did with it."""

    method: str
    path: str
    params: dict[str, str]
    idempotency_key: str | None
    authorization: str | None
    status: int | None = None  # None: the connection was dropped
    replayed: bool = False
    failure: str | None = None
    result_id: str | None = None  # the object the answer named (also when the answer was then lost)


@dataclass
class Customer:
    """A customer: `balance` is what they owe (negative = credit), as in Stripe."""

    id: str
    balance: int = 0
    default_payment_method: str | None = None
    transactions: list[dict[str, Any]] = field(default_factory=list)
    # Billing (Checkout, subscriptions): who it is, and the cards attached to it.
    email: str | None = None
    name: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    payment_methods: list[str] = field(default_factory=list)


@dataclass
class _Failure:
    method: str
    path: re.Pattern[str]
    key: re.Pattern[str] | None
    mode: str
    remaining: int | None  # None: every matching call

    def matches(self, call: Call) -> bool:
        return (
            self.method == call.method
            and bool(self.path.fullmatch(call.path))
            and (self.key is None or bool(self.key.fullmatch(call.idempotency_key or "")))
        )


@dataclass
class _Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    hang: bool = False


class FakeStripe(BackgroundServer):
    """A threaded HTTP server on 127.0.0.1 speaking the slice of Stripe's API we use."""

    owner_attr, thread_name = "fake", "fake-stripe"

    def __init__(self) -> None:
        super().__init__()
        self.customers: dict[str, Customer] = {}
        self.calls: list[Call] = []
        self._idempotent: dict[str, tuple[tuple[str, str, tuple[tuple[str, str], ...]], _Answer]] = {}
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._ids = itertools.count(1)
        self.billing = _Billing()  # Checkout, portal, subscriptions, webhook events (the billing section)

    # --- lifecycle (BackgroundServer) ----------------------------------------------------

    def _new_server(self) -> ThreadingHTTPServer:
        return _Server(("127.0.0.1", 0), _Handler)

    def _before_stop(self) -> None:
        self._released.set()  # answers held back by `hang_after` go out, so handlers can finish

    # --- test controls ---------------------------------------------------------------------

    def add_customer(self, credit: int = 0, card: bool = False) -> str:
        """A new customer holding `credit` minor units of credit; returns its id."""
        with self._lock:
            customer = Customer(f"cus_{secrets.token_hex(8)}", -credit, f"pm_{secrets.token_hex(6)}" if card else None)
            self.customers[customer.id] = customer
            return customer.id

    def credit_of(self, customer_id: str) -> int:
        """The customer's credit (Stripe's balance, sign flipped)."""
        with self._lock:
            return -self.customers[customer_id].balance

    def transactions(self, customer_id: str) -> list[dict[str, Any]]:
        """Balance transactions that took effect, oldest first."""
        with self._lock:
            return list(self.customers[customer_id].transactions)

    def fail(self, method: str, path_pattern: str, mode: str, times: int | None = 1, key: str | None = None) -> None:
        """Make the next `times` calls matching method, path and idempotency key (regexes) fail.

        `times=None` fails every matching call until `clear_failures()`.
        """
        assert mode in FAILURE_MODES, mode
        with self._lock:
            self._failures.append(
                _Failure(method.upper(), re.compile(path_pattern), re.compile(key) if key else None, mode, times)
            )

    def clear_failures(self) -> None:
        """Answer normally again (and let held calls go)."""
        with self._lock:
            self._failures.clear()
        self.release()

    @property
    def release_event(self) -> threading.Event:
        """What calls held by `hang_after` wait for."""
        return self._released

    def release(self) -> None:
        """Let every call held by `hang_after` end (its connection is closed unanswered)."""
        self._released.set()
        self._released = threading.Event()

    def expire_idempotency_keys(self) -> None:
        """Forget every stored idempotency key (Stripe prunes keys at least 24 hours old)."""
        with self._lock:
            self._idempotent.clear()

    def money_calls(self, customer_id: str | None = None) -> list[Call]:
        """Every POST that could move money (optionally for one customer), including failed ones."""
        with self._lock:
            return [
                c
                for c in self.calls
                if c.method == "POST"
                and _BALANCE_TXNS.fullmatch(c.path)
                and (customer_id is None or c.path.split("/")[3] == customer_id)
            ]

    # --- request handling (called by the handler) ------------------------------------------

    def handle(self, method: str, path: str, headers: Any, body: bytes, query: str = "") -> _Answer:
        """Record the call, apply failure modes and idempotency, then dispatch."""
        params = dict(parse_qsl(body.decode(), keep_blank_values=True)) if body else {}
        if method == "GET":  # list filters come in the query string
            params.update(parse_qsl(query, keep_blank_values=True))
        call = Call(method, path, params, headers.get("Idempotency-Key"), headers.get("Authorization"))
        with self._lock:
            self.calls.append(call)
            answer = self._answer(call)
            call.status = None if answer.drop else answer.status
            call.result_id = answer.body.get("id") if answer.status == 200 else None
        return answer

    def _answer(self, call: Call) -> _Answer:
        failure = self._take_failure(call)
        call.failure = failure
        if failure in _ERRORS:
            status, kind, message, code = _ERRORS[failure]
            retry = {"Stripe-Should-Retry": "true"} if status in (429, 500) else {}
            return _error(status, kind, message, code=code, headers=retry)
        if failure == "drop":
            return _Answer(0, {}, drop=True)
        if _HOSTED.fullmatch(call.path):  # a page the customer's browser opens: no API key
            return self._hosted_page(call)
        if not (call.authorization or "").startswith("Bearer sk_"):
            return _error(401, "invalid_request_error", "Invalid API Key provided.")
        if call.method == "POST" and not call.idempotency_key:
            return _error(400, "invalid_request_error", "The fake insists on an Idempotency-Key on every POST.")
        answer = self._idempotent_answer(call) if call.method == "POST" else self._dispatch(call)
        return _Answer(
            answer.status,
            answer.body,
            answer.headers,
            drop=failure in ("drop_after", "hang_after"),
            hang=failure == "hang_after",
        )

    def _take_failure(self, call: Call) -> str | None:
        for failure in self._failures:
            if failure.matches(call):
                if failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.remove(failure)
                return failure.mode
        return None

    def _idempotent_answer(self, call: Call) -> _Answer:
        assert call.idempotency_key is not None
        signature = (call.method, call.path, tuple(sorted(call.params.items())))
        stored = self._idempotent.get(call.idempotency_key)
        if stored is not None:
            if stored[0] != signature:
                return _error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters they were "
                    f"first used with. Try using a key other than '{call.idempotency_key}'.",
                )
            call.replayed = True
            return _Answer(stored[1].status, stored[1].body, {**stored[1].headers, "Idempotent-Replayed": "true"})
        answer = self._dispatch(call)
        self._idempotent[call.idempotency_key] = (signature, answer)
        return answer

    def _dispatch(self, call: Call) -> _Answer:
        billing = self._dispatch_billing(call)
        if billing is not None:
            return billing
        match = _BALANCE_TXNS.fullmatch(call.path)
        if match and call.method == "POST":
            return self._create_transaction(match["id"], call.params)
        if match and call.method == "GET":
            return self._list_transactions(match["id"], call.params)
        match = _CUSTOMER.fullmatch(call.path)
        if match and call.method == "GET":
            customer = self.customers.get(match["id"])
            return _customer_body(customer) if customer else _no_such_customer(match["id"])
        return _error(404, "invalid_request_error", f"Unrecognized request URL ({call.method}: {call.path}).")

    def _create_transaction(self, customer_id: str, params: dict[str, str]) -> _Answer:
        customer = self.customers.get(customer_id)
        if customer is None:
            return _no_such_customer(customer_id)
        unknown = set(params) - _TXN_PARAMS - {k for k in params if k.startswith("metadata[")}
        if unknown:
            return _error(
                400,
                "invalid_request_error",
                f"Received unknown parameter: {sorted(unknown)[0]}",
                param=sorted(unknown)[0],
            )
        if not _INTEGER.fullmatch(params.get("amount", "")):
            return _error(400, "invalid_request_error", "Invalid integer: amount", param="amount")
        if params.get("currency") != "usd":
            return _error(400, "invalid_request_error", "currency must be usd for this customer.", param="currency")
        amount = int(params["amount"])
        customer.balance += amount
        txn = {
            "id": f"cbtxn_{next(self._ids):06d}{secrets.token_hex(4)}",
            "object": "customer_balance_transaction",
            "amount": amount,
            "created": int(time.time()),
            "credit_note": None,
            "currency": "usd",
            "customer": customer_id,
            "description": params.get("description"),
            "ending_balance": customer.balance,
            "invoice": None,
            "livemode": False,
            "metadata": {k[9:-1]: v for k, v in params.items() if k.startswith("metadata[")},
            "type": "adjustment",
        }
        customer.transactions.append(txn)
        return _Answer(200, txn)

    # --- billing: customers, Checkout, the portal, subscriptions, signed webhooks (issue 13) --------
    # Checkout Sessions are "paid" through their hosted page (`POST <session url>`, or `pay()`), which
    # makes the objects and the events Stripe would; events wait in `outbox` until a test delivers
    # them, signed as Stripe signs them, to the configured webhook endpoint.

    def add_price(
        self, unit_amount: int | None = None, *, recurring: bool = False, custom: tuple[int, int] | None = None
    ) -> str:
        """A price: `unit_amount` cents (monthly when `recurring`), or `custom` (min, max) chosen by the payer."""
        assert (unit_amount is None) != (custom is None)
        with self._lock:
            price = {
                "id": f"price_{secrets.token_hex(8)}",
                "object": "price",
                "active": True,
                "currency": "usd",
                "unit_amount": unit_amount,
                "custom_unit_amount": None if custom is None else {"minimum": custom[0], "maximum": custom[1]},
                "recurring": {"interval": "month", "interval_count": 1} if recurring else None,
                "type": "recurring" if recurring else "one_time",
                "product": f"prod_{secrets.token_hex(6)}",
            }
            self.billing.prices[price["id"]] = price
            return str(price["id"])

    def configure_webhook(self, url: str, secret: str) -> None:
        """Where events are delivered, and the endpoint's signing secret."""
        self.billing.webhook_url, self.billing.webhook_secret = url, secret

    def session(self, session_id: str) -> dict[str, Any]:
        """A Checkout Session as Stripe would answer it (with the fake's `_line_items` kept aside)."""
        with self._lock:
            return copy.deepcopy(self.billing.sessions[session_id])

    def sessions_of(self, customer_id: str) -> list[dict[str, Any]]:
        """Every Checkout Session made for a customer, oldest first."""
        with self._lock:
            return [copy.deepcopy(s) for s in self.billing.sessions.values() if s["customer"] == customer_id]

    def subscription(self, subscription_id: str) -> dict[str, Any]:
        """A subscription object."""
        with self._lock:
            return copy.deepcopy(self.billing.subscriptions[subscription_id])

    def subscriptions_of(self, customer_id: str) -> list[dict[str, Any]]:
        """Every subscription of a customer, oldest first."""
        with self._lock:
            return [copy.deepcopy(s) for s in self.billing.subscriptions.values() if s["customer"] == customer_id]

    def customer(self, customer_id: str) -> Customer:
        """The customer record (a copy)."""
        with self._lock:
            return copy.deepcopy(self.customers[customer_id])

    def pay(
        self, session_id: str, quantity: int | None = None, amount: int | None = None, *, delayed: bool = False
    ) -> list[dict[str, Any]]:
        """Complete a Checkout Session as its hosted page would; returns the events made (also in `outbox`).

        `delayed` pays with an asynchronous method: the session completes unpaid, and
        `settle(session_id)` later makes it paid.
        """
        with self._lock:
            answer = self._complete_session(session_id, quantity, amount, delayed)
        assert answer.status == 200, answer.body
        return list(answer.body["events"])

    def settle(self, session_id: str) -> dict[str, Any]:
        """An asynchronous payment of a completed session succeeds: `checkout.session.async_payment_succeeded`."""
        with self._lock:
            session = self.billing.sessions[session_id]
            assert session["status"] == "complete" and session["payment_status"] == "unpaid"
            session["payment_status"] = "paid"
            return self._event("checkout.session.async_payment_succeeded", _public(session))

    def cancel_subscription(self, subscription_id: str) -> dict[str, Any]:
        """The subscription ends now: `customer.subscription.deleted`."""
        with self._lock:
            subscription = self.billing.subscriptions[subscription_id]
            now = int(time.time())
            subscription.update(status="canceled", canceled_at=now, ended_at=now)
            return self._event("customer.subscription.deleted", subscription)

    def fail_invoice(self, subscription_id: str) -> list[dict[str, Any]]:
        """The subscription's renewal invoice fails: `invoice.payment_failed`, then the subscription is past due."""
        with self._lock:
            subscription = self.billing.subscriptions[subscription_id]
            invoice = self._invoice(subscription, paid=False)
            failed = self._event("invoice.payment_failed", invoice)
            previous = {"status": subscription["status"]}
            subscription["status"] = "past_due"
            return [failed, self._event("customer.subscription.updated", subscription, previous)]

    def pay_invoice(self, invoice_id: str) -> list[dict[str, Any]]:
        """A failed invoice is paid after all: `invoice.paid`, then the subscription is active again."""
        with self._lock:
            invoice = self.billing.invoices[invoice_id]
            invoice.update(status="paid", paid=True, amount_paid=invoice["amount_due"], amount_remaining=0)
            subscription = self.billing.subscriptions[invoice["subscription"]]
            previous = {"status": subscription["status"]}
            subscription["status"] = "active"
            return [
                self._event("invoice.paid", invoice),
                self._event("customer.subscription.updated", subscription, previous),
            ]

    def take_outbox(self) -> list[dict[str, Any]]:
        """The events made since the last call, oldest first (they leave the outbox)."""
        with self._lock:
            events, self.billing.outbox = self.billing.outbox, []
            return events

    def sign(self, payload: bytes, timestamp: int | None = None, secret: str | None = None) -> str:
        """A `Stripe-Signature` header exactly as Stripe makes it: `t=<time>,v1=<HMAC-SHA256 of "t.payload">`."""
        stamp = int(time.time()) if timestamp is None else timestamp
        key = (secret if secret is not None else self.billing.webhook_secret or "").encode()
        digest = hmac.new(key, f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={stamp},v1={digest}"

    def deliver(
        self,
        event: dict[str, Any],
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        signature: str | None = None,
        body: bytes | None = None,
    ) -> requests.Response:
        """POST one event to the webhook endpoint as Stripe does (pretty-printed JSON, signed over those bytes).

        `signature=""` sends no Stripe-Signature header; `body` replaces the bytes sent (signed or not).
        """
        assert self.billing.webhook_url, "configure_webhook() first"
        payload = json.dumps(event, indent=2).encode() if body is None else body
        header = self.sign(payload, timestamp, secret) if signature is None else signature
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
        if header:
            headers["Stripe-Signature"] = header
        with requests.Session() as http:
            return http.post(self.billing.webhook_url, data=payload, headers=headers, timeout=30)

    def deliver_outbox(self) -> list[requests.Response]:
        """Deliver every event in the outbox, in order; each must be answered 200."""
        answers = [self.deliver(event) for event in self.take_outbox()]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        return answers

    # handlers (called under the lock)

    def _dispatch_billing(self, call: Call) -> _Answer | None:
        """Answer the billing endpoints; None for any other path."""
        route = (call.method, _billing_route(call.path))
        handler = {
            ("POST", "customers"): self._create_customer,
            ("POST", "customer"): self._update_customer,
            ("POST", "checkout_sessions"): self._create_session,
            ("GET", "checkout_sessions"): self._list_sessions,
            ("POST", "portal_sessions"): self._create_portal_session,
            ("GET", "subscription"): self._get_subscription,
            ("POST", "subscription"): self._update_subscription,
            ("GET", "subscriptions"): self._list_subscriptions,
        }.get(route)
        if handler is None:
            return None
        try:
            return handler(call.path.rsplit("/", 1)[1], _nest(call.params))
        except _Invalid as exc:
            return _error(400, "invalid_request_error", exc.message, param=exc.param, code=exc.code)

    def _create_customer(self, _: str, params: dict[str, Any]) -> _Answer:
        _check(params, {"email": "str", "name": "str", "description": "str", "phone": "str", "metadata": "meta"})
        customer = Customer(f"cus_{secrets.token_hex(8)}", email=params.get("email"), name=params.get("name"))
        customer.metadata = dict(params.get("metadata") or {})
        self.customers[customer.id] = customer
        return _customer_body(customer)

    def _update_customer(self, customer_id: str, params: dict[str, Any]) -> _Answer:
        customer = self.customers.get(customer_id)
        if customer is None:
            return _no_such_customer(customer_id)
        _check(
            params,
            {"email": "str", "name": "str", "metadata": "meta", "invoice_settings": {"default_payment_method": "str"}},
        )
        pm = (params.get("invoice_settings") or {}).get("default_payment_method")
        if pm is not None and pm not in customer.payment_methods:
            raise _Invalid(
                f"The customer does not have a payment method with the ID {pm}.",
                "invoice_settings[default_payment_method]",
                code="resource_missing",
            )
        customer.default_payment_method = pm or customer.default_payment_method
        customer.email, customer.name = params.get("email", customer.email), params.get("name", customer.name)
        customer.metadata.update(params.get("metadata") or {})
        return _customer_body(customer)

    def _create_session(self, _: str, params: dict[str, Any]) -> _Answer:
        _check(params, _SESSION_PARAMS)
        mode = params.get("mode")
        if mode not in ("payment", "subscription"):
            raise _Invalid("mode must be payment or subscription (the fake has no setup mode).", "mode")
        for name in ("success_url", "cancel_url"):
            if name in params and not _is_url(params[name]):
                raise _Invalid(f"Not a valid URL: {name}", name, code="url_invalid")
        if "success_url" not in params:
            raise _Invalid("success_url is required for a hosted Checkout Session.", "success_url")
        customer = params.get("customer")
        if customer is not None and customer not in self.customers:
            raise _Invalid(f"No such customer: '{customer}'", "customer", code="resource_missing")
        wrong = "subscription_data" if mode == "payment" else "payment_intent_data"
        if wrong in params:
            raise _Invalid(
                f"{wrong} can only be used in {'subscription' if mode == 'payment' else 'payment'} mode.", wrong
            )
        items = [self._line_item(i, item, mode) for i, item in enumerate(params.get("line_items") or [])]
        if not items:
            raise _Invalid("line_items is required in payment and subscription mode.", "line_items")
        if mode == "subscription" and not any(item["price"]["recurring"] for item in items):
            raise _Invalid("You must provide at least one recurring price in `subscription` mode.", "line_items")
        session_id = f"cs_test_{secrets.token_hex(12)}"
        fixed = all(item["price"]["unit_amount"] is not None for item in items)
        total = sum(item["price"]["unit_amount"] * item["quantity"] for item in items) if fixed else None
        now = int(time.time())
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": mode,
            "status": "open",
            "payment_status": "unpaid",
            "customer": customer,
            "client_reference_id": params.get("client_reference_id"),
            "success_url": params.get("success_url"),
            "cancel_url": params.get("cancel_url"),
            "metadata": dict(params.get("metadata") or {}),
            "currency": "usd",
            "amount_subtotal": total,
            "amount_total": total,
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "payment_intent": None,
            "subscription": None,
            "invoice": None,
            "created": now,
            "expires_at": now + 24 * 3600,
            "livemode": False,
            "url": f"{self.url}/pay/{session_id}",
            "_line_items": items,
            "_subscription_data": params.get("subscription_data") or {},
        }
        self.billing.sessions[session_id] = session
        return _Answer(200, _public(session))

    def _line_item(self, index: int, item: dict[str, Any], mode: str) -> dict[str, Any]:
        where = f"line_items[{index}]"
        if ("price" in item) == ("price_data" in item):
            raise _Invalid(f"{where}: give exactly one of price and price_data.", where)
        price = (
            self.billing.prices.get(item.get("price", ""))
            if "price" in item
            else _inline_price(where, item["price_data"])
        )
        if price is None:
            raise _Invalid(f"No such price: '{item['price']}'", f"{where}[price]", code="resource_missing")
        if price["recurring"] and mode == "payment":
            raise _Invalid("You specified `payment` mode but passed a recurring price.", f"{where}[price]")
        quantity = _int_param(item.get("quantity", "1"), f"{where}[quantity]")
        adjustable = item.get("adjustable_quantity")
        bounds = None
        if adjustable is not None:
            if adjustable.get("enabled") != "true" or price["custom_unit_amount"] is not None:
                raise _Invalid(f"{where}[adjustable_quantity] needs enabled=true and a fixed unit amount.", where)
            bounds = (
                _int_param(adjustable.get("minimum", "0"), f"{where}[adjustable_quantity][minimum]"),
                _int_param(adjustable.get("maximum", "99"), f"{where}[adjustable_quantity][maximum]"),
            )
            if not 0 <= bounds[0] < bounds[1] <= 999_999 or not bounds[0] <= quantity <= bounds[1]:
                raise _Invalid(
                    f"{where}: need 0 <= minimum <= quantity <= maximum <= 999999, minimum < maximum.", where
                )
        if price["custom_unit_amount"] is not None and quantity != 1:
            raise _Invalid(f"{where}: a price the customer chooses is bought with quantity 1.", f"{where}[quantity]")
        return {"price": price, "quantity": quantity, "bounds": bounds}

    def _list_sessions(self, _: str, params: dict[str, Any]) -> _Answer:
        _check(params, {"customer": "str", "status": "str", "limit": "int", "starting_after": "str"})
        found = [
            _public(s)
            for s in reversed(self.billing.sessions.values())
            if s["customer"] == params.get("customer", s["customer"])
            and s["status"] == params.get("status", s["status"])
        ]
        return _Answer(200, _list("/v1/checkout/sessions", found, int(params.get("limit", 10))))

    def _create_portal_session(self, _: str, params: dict[str, Any]) -> _Answer:
        _check(params, {"customer": "str", "return_url": "str", "configuration": "str", "locale": "str"})
        if params.get("customer") not in self.customers:
            raise _Invalid(f"No such customer: '{params.get('customer')}'", "customer", code="resource_missing")
        if "return_url" in params and not _is_url(params["return_url"]):
            raise _Invalid("Not a valid URL: return_url", "return_url", code="url_invalid")
        portal_id = f"bps_{secrets.token_hex(12)}"
        portal = {
            "id": portal_id,
            "object": "billing_portal.session",
            "customer": params["customer"],
            "return_url": params.get("return_url"),
            "configuration": params.get("configuration", "bpc_default"),
            "created": int(time.time()),
            "livemode": False,
            "url": f"{self.url}/portal/{portal_id}",
        }
        self.billing.portal_sessions[portal_id] = portal
        return _Answer(200, portal)

    def _get_subscription(self, subscription_id: str, params: dict[str, Any]) -> _Answer:
        _check(params, {"expand": ("list", "str")})
        subscription = self.billing.subscriptions.get(subscription_id)
        if subscription is None:
            return _error(
                404,
                "invalid_request_error",
                f"No such subscription: '{subscription_id}'",
                code="resource_missing",
                param="id",
            )
        return _Answer(200, copy.deepcopy(subscription))

    def _update_subscription(self, subscription_id: str, params: dict[str, Any]) -> _Answer:
        _check(
            params, {"items": ("list", {"id": "str", "price": "str"}), "proration_behavior": "str", "metadata": "meta"}
        )
        subscription = self.billing.subscriptions.get(subscription_id)
        if subscription is None:
            return _error(
                404,
                "invalid_request_error",
                f"No such subscription: '{subscription_id}'",
                code="resource_missing",
                param="id",
            )
        if subscription["status"] == "canceled":
            raise _Invalid("A canceled subscription can only update its cancellation_details and metadata.", "items")
        if params.get("proration_behavior", "create_prorations") not in ("create_prorations", "none", "always_invoice"):
            raise _Invalid("Invalid proration_behavior.", "proration_behavior")
        previous: dict[str, Any] = {}
        for change in params.get("items") or []:
            item = next((i for i in subscription["items"]["data"] if i["id"] == change.get("id")), None)
            price = self.billing.prices.get(change.get("price", ""))
            if item is None or price is None or not price["recurring"]:
                raise _Invalid("items need the id of one of the subscription's items and a recurring price.", "items")
            previous.setdefault("items", copy.deepcopy(subscription["items"]))
            item["price"] = copy.deepcopy(price)
        if "metadata" in params:
            previous["metadata"] = dict(subscription["metadata"])
            subscription["metadata"].update(params["metadata"])
        self._event("customer.subscription.updated", subscription, previous)
        return _Answer(200, copy.deepcopy(subscription))

    def _list_subscriptions(self, _: str, params: dict[str, Any]) -> _Answer:
        _check(params, {"customer": "str", "status": "str", "limit": "int", "starting_after": "str"})
        status = params.get("status")
        found = [
            copy.deepcopy(s)
            for s in reversed(self.billing.subscriptions.values())
            if s["customer"] == params.get("customer", s["customer"])
            and (status == "all" or s["status"] == status or (status is None and s["status"] != "canceled"))
        ]
        return _Answer(200, _list("/v1/subscriptions", found, int(params.get("limit", 10))))

    def _hosted_page(self, call: Call) -> _Answer:
        """The customer's browser on Stripe's pages: GET shows the session, POST (on /pay/) pays it."""
        kind, object_id = call.path.strip("/").split("/", 1)
        store = self.billing.sessions if kind == "pay" else self.billing.portal_sessions
        if object_id not in store:
            return _error(404, "invalid_request_error", "This page does not exist.")
        if call.method == "GET":
            return _Answer(200, _public(store[object_id]))
        if kind != "pay":
            return _error(405, "invalid_request_error", "The portal page takes no POST in the fake.")
        quantity, amount = call.params.get("quantity"), call.params.get("amount")
        return self._complete_session(
            object_id, None if quantity is None else int(quantity), None if amount is None else int(amount), False
        )

    def _complete_session(self, session_id: str, quantity: int | None, amount: int | None, delayed: bool) -> _Answer:
        session = self.billing.sessions[session_id]
        if session["status"] != "open":
            return _error(400, "invalid_request_error", "This Checkout Session is no longer open.")
        item = session["_line_items"][0]
        price, chosen = item["price"], item["quantity"] if quantity is None else quantity
        if quantity is not None and (item["bounds"] is None or not item["bounds"][0] <= quantity <= item["bounds"][1]):
            return _error(400, "invalid_request_error", f"The quantity must be within {item['bounds']}.")
        custom = price["custom_unit_amount"]
        if custom is not None and (amount is None or not custom["minimum"] <= amount <= custom["maximum"]):
            return _error(400, "invalid_request_error", f"Choose an amount within {custom}.")
        total = amount if custom is not None else price["unit_amount"] * chosen
        session.update(status="complete", amount_subtotal=total, amount_total=total)
        session["payment_status"] = "unpaid" if delayed else "paid"
        events = []
        if session["mode"] == "payment":
            session["payment_intent"] = f"pi_{secrets.token_hex(12)}"
        else:
            events += self._start_subscription(session, price)
        events.append(self._event("checkout.session.completed", _public(session)))
        return _Answer(200, {**_public(session), "events": events})

    def _start_subscription(self, session: dict[str, Any], price: dict[str, Any]) -> list[dict[str, Any]]:
        customer = self.customers[session["customer"]]
        card = f"pm_{secrets.token_hex(8)}"
        customer.payment_methods.append(card)  # attached; the customer's default stays as it was, as in Stripe
        now = int(time.time())
        subscription = {
            "id": f"sub_{secrets.token_hex(10)}",
            "object": "subscription",
            "customer": customer.id,
            "status": "active",
            "created": now,
            "start_date": now,
            "canceled_at": None,
            "ended_at": None,
            "default_payment_method": card,
            "metadata": dict((session["_subscription_data"] or {}).get("metadata") or {}),
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_{secrets.token_hex(8)}",
                        "object": "subscription_item",
                        "price": copy.deepcopy(price),
                        "quantity": 1,
                        "current_period_start": now,
                        "current_period_end": now + 30 * 24 * 3600,
                    }
                ],
            },
            "livemode": False,
        }
        self.billing.subscriptions[subscription["id"]] = subscription
        session["subscription"] = subscription["id"]
        invoice = self._invoice(subscription, paid=True)
        session["invoice"] = invoice["id"]
        return [self._event("customer.subscription.created", subscription), self._event("invoice.paid", invoice)]

    def _invoice(self, subscription: dict[str, Any], *, paid: bool) -> dict[str, Any]:
        amount = subscription["items"]["data"][0]["price"]["unit_amount"]
        invoice = {
            "id": f"in_{secrets.token_hex(10)}",
            "object": "invoice",
            "customer": subscription["customer"],
            "subscription": subscription["id"],
            "status": "paid" if paid else "open",
            "paid": paid,
            "amount_due": amount,
            "amount_paid": amount if paid else 0,
            "amount_remaining": 0 if paid else amount,
            "attempt_count": 1,
            "currency": "usd",
            "created": int(time.time()),
            "livemode": False,
            "parent": {
                "type": "subscription_details",
                "subscription_details": {
                    "subscription": subscription["id"],
                    "metadata": dict(subscription["metadata"]),
                },
            },
        }
        self.billing.invoices[invoice["id"]] = invoice
        return invoice

    def _event(self, kind: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        event = {
            "id": f"evt_{secrets.token_hex(12)}",
            "object": "event",
            "api_version": "2025-03-31.basil",
            "created": int(time.time()),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
        self.billing.events.append(event)
        self.billing.outbox.append(event)
        return event

    def _list_transactions(self, customer_id: str, params: dict[str, str]) -> _Answer:
        customer = self.customers.get(customer_id)
        if customer is None:
            return _no_such_customer(customer_id)
        unknown = sorted(set(params) - _LIST_PARAMS)
        if unknown:
            return _error(400, "invalid_request_error", f"Received unknown parameter: {unknown[0]}", param=unknown[0])
        cursors = ("starting_after", "ending_before")
        bad = next((k for k in params if k not in cursors and not params[k].isdigit()), None)
        if bad is not None:
            return _error(400, "invalid_request_error", f"Invalid integer: {params[bad]}", param=bad)
        limit = int(params.get("limit", "10"))
        if not 1 <= limit <= 100:
            return _error(400, "invalid_request_error", "Limit must be between 1 and 100.", param="limit")
        if "starting_after" in params and "ending_before" in params:
            return _error(400, "invalid_request_error", "Use starting_after or ending_before, not both.")
        newest_first = [t for t in reversed(customer.transactions) if _created_matches(t["created"], params)]
        return _page(customer_id, newest_first, params, limit)


def _created_matches(created: int, params: dict[str, str]) -> bool:
    checks = {"gt": created.__gt__, "gte": created.__ge__, "lt": created.__lt__, "lte": created.__le__}
    return all(check(int(params[f"created[{op}]"])) for op, check in checks.items() if f"created[{op}]" in params)


def _page(customer_id: str, items: list[dict[str, Any]], params: dict[str, str], limit: int) -> _Answer:
    """One page of a newest-first list, as Stripe cuts it at a cursor."""
    ids = [t["id"] for t in items]
    cursor = params.get("starting_after") or params.get("ending_before")
    if cursor is not None and cursor not in ids:
        return _error(
            400, "invalid_request_error", f"No such customer balance transaction: '{cursor}'", code="resource_missing"
        )
    if "ending_before" in params:
        end = ids.index(cursor)
        data, has_more = items[max(0, end - limit) : end], end - limit > 0
    else:
        start = ids.index(cursor) + 1 if cursor is not None else 0
        data, has_more = items[start : start + limit], len(items) > start + limit
    url = f"/v1/customers/{customer_id}/balance_transactions"
    return _Answer(200, {"object": "list", "url": url, "has_more": has_more, "data": data})


def _customer_body(customer: Customer) -> _Answer:
    return _Answer(
        200,
        {
            "id": customer.id,
            "object": "customer",
            "balance": customer.balance,
            "currency": "usd",
            "created": 1700000000,
            "default_source": None,
            "deleted": None,
            "email": customer.email,
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": customer.default_payment_method,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": dict(customer.metadata),
            "name": customer.name,
        },
    )


def _no_such_customer(customer_id: str) -> _Answer:
    return _error(
        404, "invalid_request_error", f"No such customer: '{customer_id}'", code="resource_missing", param="id"
    )


def _error(
    status: int,
    kind: str,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> _Answer:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return _Answer(status, {"error": error}, headers or {})


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # handler threads are joined by server_close()
    fake: FakeStripe


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: no idle sockets left in clients

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        answer = self.server.fake.handle(method, url.path, self.headers, body, url.query)
        if answer.hang:
            self.server.fake.release_event.wait(30)
        if answer.drop:
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        payload = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        for name, value in {
            "Content-Type": "application/json",
            "Request-Id": f"req_{secrets.token_hex(7)}",
            **answer.headers,
        }.items():
            self.send_header(name, value)
        if self.headers.get("Idempotency-Key"):
            self.send_header("Idempotency-Key", self.headers["Idempotency-Key"])
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the calls are recorded instead."""


# --- billing: helpers of the fake's Checkout, portal and subscriptions (issue 13) -----------------

_HOSTED = re.compile(r"/(pay|portal)/[A-Za-z0-9_]+")
_BILLING_ROUTES = (
    ("customers", re.compile(r"/v1/customers")),
    ("customer", re.compile(r"/v1/customers/cus_[A-Za-z0-9]+")),
    ("checkout_sessions", re.compile(r"/v1/checkout/sessions")),
    ("portal_sessions", re.compile(r"/v1/billing_portal/sessions")),
    ("subscriptions", re.compile(r"/v1/subscriptions")),
    ("subscription", re.compile(r"/v1/subscriptions/sub_[A-Za-z0-9]+")),
)
_META = "meta"
_SESSION_PARAMS: dict[str, Any] = {
    "mode": "str",
    "customer": "str",
    "client_reference_id": "str",
    "success_url": "str",
    "cancel_url": "str",
    "metadata": _META,
    "line_items": (
        "list",
        {
            "price": "str",
            "quantity": "int",
            "price_data": {
                "currency": "str",
                "unit_amount": "int",
                "product": "str",
                "product_data": {"name": "str", "description": "str", "metadata": _META},
                "recurring": {"interval": "str", "interval_count": "int"},
            },
            "adjustable_quantity": {"enabled": "bool", "minimum": "int", "maximum": "int"},
        },
    ),
    "payment_intent_data": {"metadata": _META, "description": "str", "setup_future_usage": "str"},
    "subscription_data": {"metadata": _META, "description": "str"},
}


@dataclass
class _Billing:
    """The fake's billing objects, and the events not yet delivered."""

    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    portal_sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    webhook_url: str | None = None
    webhook_secret: str | None = None


class _Invalid(Exception):
    """A 400 invalid_request_error, as Stripe words them."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _billing_route(path: str) -> str | None:
    return next((name for name, pattern in _BILLING_ROUTES if pattern.fullmatch(path)), None)


def _nest(params: dict[str, str]) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0][c]=v`) back into objects and lists."""
    root: dict[str, Any] = {}
    for flat, value in params.items():
        keys = [flat.split("[", 1)[0], *re.findall(r"\[([^\]]*)\]", flat)]
        node = root
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise _Invalid(f"Invalid parameter: {flat}", flat)
        node[keys[-1]] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


def _check(params: Any, spec: Any, where: str = "") -> None:
    """Refuse unknown parameters and values of the wrong kind, naming the parameter as Stripe does."""
    if isinstance(spec, dict):
        if not isinstance(params, dict):
            raise _Invalid(f"Invalid object: {where}", where)
        for key, value in params.items():
            name = f"{where}[{key}]" if where else key
            if key not in spec:
                raise _Invalid(f"Received unknown parameter: {name}", name)
            _check(value, spec[key], name)
    elif isinstance(spec, tuple):
        if not isinstance(params, list):
            raise _Invalid(f"Invalid array: {where}", where)
        for i, value in enumerate(params):
            _check(value, spec[1], f"{where}[{i}]")
    elif spec == _META:
        if (
            not isinstance(params, dict)
            or len(params) > 50
            or any(len(k) > 40 or len(v) > 500 for k, v in params.items())
        ):
            raise _Invalid(f"Invalid metadata: {where}", where)
    elif spec == "int":
        _int_param(params, where)
    elif spec == "bool" and params not in ("true", "false"):
        raise _Invalid(f"Invalid boolean: {params}", where)
    elif not isinstance(params, str):
        raise _Invalid(f"Invalid string: {where}", where)


def _int_param(value: Any, where: str) -> int:
    if not isinstance(value, str) or not _INTEGER.fullmatch(value):
        raise _Invalid(f"Invalid integer: {value}", where)
    return int(value)


def _inline_price(where: str, data: dict[str, Any]) -> dict[str, Any]:
    if data.get("currency") != "usd":
        raise _Invalid("currency must be usd for this account (the fake).", f"{where}[price_data][currency]")
    if "product" not in data and "name" not in (data.get("product_data") or {}):
        raise _Invalid("price_data needs product or product_data[name].", f"{where}[price_data]")
    unit_amount = _int_param(data.get("unit_amount"), f"{where}[price_data][unit_amount]")
    if unit_amount < 0:
        raise _Invalid("unit_amount must be >= 0.", f"{where}[price_data][unit_amount]")
    return {
        "id": f"price_{secrets.token_hex(8)}",
        "object": "price",
        "currency": "usd",
        "unit_amount": unit_amount,
        "custom_unit_amount": None,
        "recurring": data.get("recurring"),
        "type": "recurring" if data.get("recurring") else "one_time",
    }


def _is_url(value: Any) -> bool:
    parts = urlsplit(value) if isinstance(value, str) else None
    return parts is not None and parts.scheme in ("http", "https") and bool(parts.netloc) and len(value) <= 5000


def _public(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as Stripe shows it (the fake's own bookkeeping keys left out)."""
    return {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}


def _list(url: str, data: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    return {"object": "list", "data": data[:limit], "has_more": len(data) > limit, "url": url}
