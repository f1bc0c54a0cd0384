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
"""

from __future__ import annotations

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
        encoded = body.decode() if method == "POST" else query
        params = dict(parse_qsl(encoded, keep_blank_values=True)) if encoded else {}
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
            "email": None,
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": customer.default_payment_method,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": {},
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
