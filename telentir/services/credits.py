"""Lead credits: plans, the append-only ledger, reservations and settlement.

Balances are computed from ledger rows, never stored as a mutable number. Money is in
minor units (cents), bounded as `telentir.money` says. A lead job takes leads from the
plan's monthly allowance first, then buys the rest from the prepaid balance at the plan's
overage price: that paid part is reserved before the scraper is called and settled when
the job ends (used leads charged, the rest refunded). In Stripe mode the prepaid balance
is the customer's Stripe credit.

A grant (allowance and balance) is computed and recorded in one write transaction that
first locks the user's row (`lock_user`), so grants for one user are serialised across
every process: two jobs never spend the same allowance or the same credit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..components.stripe_gateway import StripeGateway, StripeUnavailable
from ..errors import BadRequest, NotFound
from ..ids import now_iso
from ..money import CURRENCY, AmountOutOfRange, check_balance, check_grant
from ..runtime import Runtime
from ..storage.db import Transaction
from ..storage.rows import UserRow


def month_of(moment: datetime | None = None) -> str:
    """The calendar month (UTC) an allowance counts against, as YYYY-MM."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m")


def plan_of(rt: Runtime, user: UserRow) -> dict[str, Any] | None:
    """The user's plan from the catalog, with its key; None if the plan left the catalog."""
    plan = rt.config.plans.get(user["plan"])
    return None if plan is None else {"key": user["plan"], **plan}


def plan_document(rt: Runtime, key: str) -> dict[str, Any] | None:
    """The plan as the SDK types it (`BillingPlan`, in its order); None if the key left the catalog."""
    plan = rt.config.plans.get(key)
    if plan is None:
        return None
    # The call-related fields belong to the hosted service's voice product, which this server
    # does not run: always 0 here.
    return {
        "key": key,
        "name": plan["name"],
        "monthlyPriceUsd": plan.get("monthlyPriceUsd") or 0,
        "includedMinutes": 0,
        "overageUsdPerMinute": 0,
        "includedLeads": plan["includedLeads"],
        "includedOutboundCalls": 0,
        "includedInboundCalls": 0,
        "outboundFixedUsd": 0,
        "inboundFixedUsd": 0,
        "leadOverageUsdPerLead": plan["leadOverageUsdPerLead"],
    }


def price_cents(plan: dict[str, Any] | None) -> int:
    """Overage price of one lead in minor units."""
    return 0 if plan is None else round(plan["leadOverageUsdPerLead"] * 100)


def allowance_used(rt: Runtime, user_id: str, month: str | None = None) -> int:
    """Leads taken from this month's allowance (reservations net of releases).

    Like every read here, inside `rt.db.atomic()` it reads within that transaction (the
    thread's one connection).
    """
    return int(
        rt.db.query_value(
            "SELECT COALESCE(SUM(leads), 0) FROM ledger WHERE user_id = ? AND month = ?", (user_id, month or month_of())
        )
    )


def local_balance(rt: Runtime, user_id: str) -> int:
    """The prepaid balance kept in the local ledger."""
    return int(
        rt.db.query_value(
            "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE user_id = ? AND source = 'local'", (user_id,)
        )
    )


def gateway(rt: Runtime) -> StripeGateway | None:
    """The Stripe gateway, when Stripe mode is configured."""
    return rt.stripe


def require_gateway(rt: Runtime) -> StripeGateway:
    """The Stripe gateway; StripeUnavailable when Stripe is not configured."""
    if rt.stripe is None:
        raise StripeUnavailable("Stripe is not configured on this server.")
    return rt.stripe


def stripe_customer(rt: Runtime, user: UserRow) -> str | None:
    """The user's Stripe customer when Stripe mode applies (Stripe configured, the user has one), else None."""
    customer = user["stripe_customer_id"]
    return customer if customer and gateway(rt) is not None else None


def uses_stripe(rt: Runtime, user: UserRow) -> bool:
    """Stripe mode applies when configured and the user has a Stripe customer."""
    return stripe_customer(rt, user) is not None


def balance(rt: Runtime, user: UserRow) -> int:
    """The prepaid balance: the Stripe credit in Stripe mode, else the local ledger's."""
    customer = stripe_customer(rt, user)
    if customer is not None:
        return require_gateway(rt).credit_balance(customer)
    return local_balance(rt, user["id"])


@dataclass(frozen=True)
class Grant:
    """What a lead job may spend: leads from the allowance, leads bought, at what price."""

    requested: int
    allowance_part: int
    paid_part: int
    price: int

    @property
    def granted(self) -> int:
        """Leads the scraper is asked for."""
        return self.allowance_part + self.paid_part

    @property
    def reserved(self) -> int:
        """Minor units reserved from the prepaid balance."""
        return self.paid_part * self.price


def compute_grant(rt: Runtime, user: UserRow, requested: int, prepaid: int) -> Grant:
    """Clamp `requested` to the remaining allowance plus what `prepaid` buys."""
    plan = plan_of(rt, user)
    remaining = max(0, (plan["includedLeads"] if plan else 0) - allowance_used(rt, user["id"]))
    allowance_part = min(requested, remaining)
    price = price_cents(plan)
    affordable = prepaid // price if price > 0 and prepaid > 0 else 0
    return Grant(requested, allowance_part, min(requested - allowance_part, affordable), price)


def lock_user(tx: Transaction, user_id: str) -> None:
    """Serialise this transaction with every other grant for the user, in any process.

    SQLite's `BEGIN IMMEDIATE` already holds the database's one write lock; on a database
    with row locks (PostgreSQL) this no-op UPDATE holds the user's row until commit.
    """
    tx.execute("UPDATE users SET plan = plan WHERE id = ?", (user_id,))


def ledger_watermark(rt: Runtime) -> int:
    """The newest ledger row id: taken before reading a Stripe balance (see `unconfirmed_reservations`)."""
    return int(rt.db.query_value("SELECT COALESCE(MAX(id), 0) FROM ledger"))


def unconfirmed_reservations(rt: Runtime, user_id: str, watermark: int) -> int:
    """Stripe reservations a balance read after `watermark` was taken may not reflect yet.

    A reservation is recorded locally (the job row, status `reserving`) before its Stripe
    call, and its ledger row is written only after Stripe confirmed it. A ledger row at or
    below the watermark was therefore confirmed before the balance was read, and the read
    includes it. Everything else may be missing from the read and is subtracted: the
    reservations in flight, those of unknown fate, and those confirmed since. When one of
    them was in fact included, the grant is smaller than it could be, never larger.
    """
    in_flight = rt.db.query_value(
        "SELECT COALESCE(SUM(reserved), 0) FROM jobs WHERE user_id = ? AND billing = 'stripe' "
        "AND (status = 'reserving' OR settlement = 'reserve_unknown')",
        (user_id,),
    )
    confirmed_since = rt.db.query_value(
        "SELECT COALESCE(-SUM(amount), 0) FROM ledger WHERE user_id = ? AND kind = 'reserve' AND source = 'stripe' "
        "AND id > ?",
        (user_id, watermark),
    )
    return int(in_flight) + int(confirmed_since)


def ledger_row(
    tx: Transaction,
    user_id: str,
    job_id: str | None,
    kind: str,
    *,
    amount: int = 0,
    leads: int = 0,
    charged: int = 0,
    month: str | None = None,
    source: str = "local",
    external_id: str | None = None,
    note: str | None = None,
) -> None:
    """Append one ledger row (a job's step at most once: a repeat is ignored)."""
    tx.execute(
        "INSERT INTO ledger (user_id, job_id, kind, amount, leads, charged, month, source, external_id, "
        "note, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (user_id, job_id, kind, amount, leads, charged, month or month_of(), source, external_id, note, now_iso()),
    )


def grant_credits(rt: Runtime, user_id: str, amount: int, note: str = "granted by an operator") -> int:
    """Add prepaid credit to the local ledger (CLI); returns the new local balance.

    BadRequest, writing nothing, for an amount outside 1..MAX_GRANT or one that would take
    the balance past MAX_BALANCE.
    """
    try:
        check_grant(amount)
        with rt.db.atomic() as tx:
            lock_user(tx, user_id)
            balance = check_balance(local_balance(rt, user_id) + amount)
            ledger_row(tx, user_id, None, "grant", amount=amount, note=note)
    except AmountOutOfRange as exc:
        raise BadRequest(f"Nothing was granted: {exc}.", code="amount_out_of_range") from None
    return balance


def credits_document(rt: Runtime, user: UserRow) -> dict[str, Any]:
    """`GET /api/credits`."""
    return {"amount": balance(rt, user), "currency": CURRENCY}


def billing_state(rt: Runtime, user: UserRow) -> dict[str, Any]:
    """`GET /api/billing/state`: plan, this month's usage, card, balance, a failed subscription payment."""
    customer = stripe_customer(rt, user)
    has_card = require_gateway(rt).has_card(customer) if customer is not None else False
    leads = int(
        rt.db.query_value(
            "SELECT COALESCE(SUM(used), 0) FROM jobs WHERE user_id = ? AND substr(created_at, 1, 7) = ?",
            (user["id"], month_of()),
        )
    )
    return {
        "plan": plan_document(rt, user["plan"]),
        "usage": {"leads": leads, "seconds_inbound": 0, "seconds_outbound": 0, "calls_inbound": 0, "calls_outbound": 0},
        "hasCard": has_card,
        "balance": {"currency": CURRENCY, "amount": balance(rt, user)},
        "paymentFailure": payment_failure(rt, user["id"]),
    }


def payment_failure(rt: Runtime, user_id: str) -> dict[str, Any] | None:
    """The user's newest subscription invoice (from Stripe's webhooks), if its payment failed."""
    row = rt.db.query_one(
        "SELECT id, status, amount_due, currency, stamp FROM stripe_invoices WHERE user_id = ? "
        "ORDER BY stamp DESC, updated_at DESC LIMIT 1",
        (user_id,),
    )
    if row is None or row["status"] != "failed":
        return None
    at = datetime.fromtimestamp(row["stamp"], UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"invoice": row["id"], "amountDue": row["amount_due"], "currency": row["currency"], "at": at}


def set_plan(rt: Runtime, user_id: str, plan: str) -> None:
    """Move a user to another plan of the catalog."""
    if plan not in rt.config.plans:
        raise NotFound(f"No plan {plan!r}; the catalog has {', '.join(rt.config.plans)}.")
    with rt.db.atomic() as tx:
        tx.execute("UPDATE users SET plan = ? WHERE id = ?", (plan, user_id))


def set_stripe_customer(rt: Runtime, user_id: str, customer_id: str | None) -> None:
    """Link a user to a Stripe customer (None unlinks)."""
    if customer_id is not None and not customer_id.startswith("cus_"):
        raise BadRequest("A Stripe customer id starts with cus_.")
    with rt.db.atomic() as tx:
        tx.execute("UPDATE users SET stripe_customer_id = ? WHERE id = ?", (customer_id, user_id))
