"""Ingestion jobs, credits, billing and Stripe's webhook (docs/protocol.md §7)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from msgspec import UNSET, Meta, UnsetType

from ...money import MAX_LEADS_PER_JOB
from ...services.roots import STORES
from ...wire import MAX_PATH_CHARS
from .base import ASCII_PATTERN, Count, JobId, Schema, Text, Timestamp, text

Store = Annotated[str, Meta(extra_json_schema={"enum": list(STORES)})]
Credits = Annotated[int, Meta(ge=0, le=MAX_LEADS_PER_JOB, description="leads to buy for /get-leads")]


class ConnectParams(Schema):
    """Forwarded to the scraper as JSON; /get-leads needs `credits`."""

    credits: Credits | UnsetType = UNSET


class Connect(Schema):
    """POST /connect: ingest records from the scraper into a store."""

    repository: Store
    path: Annotated[
        str,
        Meta(
            pattern="^(/[A-Za-z0-9_-]+)+$",
            min_length=2,
            max_length=MAX_PATH_CHARS,
            description="a plain path on SCRAPER_HOSTNAME: segments of A-Z a-z 0-9 - _ joined by single / (§7)",
        ),
    ]
    params: ConnectParams | UnsetType = UNSET
    # The billed path needs params.credits (the server's billed paths are its settings: /get-leads by default).
    extra_schema: ClassVar[dict[str, Any]] = {
        "if": {"properties": {"path": {"pattern": "^/[Gg][Ee][Tt]-[Ll][Ee][Aa][Dd][Ss]$"}}},
        "then": {"required": ["params"], "properties": {"params": {"required": ["credits"]}}},
    }


class JobCredits(Schema):
    """What a job reserved, used and charged, in leads."""

    requested: Count
    granted: Count
    allowance_used: Count
    reserved: Count
    used: Count
    charged: Count
    refunded: Count
    settlement: Literal["open", "settled", "refund_pending", "reserve_unknown"]


class Job(Schema):
    """An ingestion job's summary."""

    id: JobId
    status: Literal["reserving", "running", "succeeded", "failed", "cancelled", "interrupted"]
    repository: Store
    path: Annotated[str, Meta(min_length=1, max_length=MAX_PATH_CHARS, pattern="^/")]
    created: Count
    skipped: Count
    credits: JobCredits
    error: str | None
    started_at: Timestamp | None
    finished_at: Timestamp | None


class Balance(Schema):
    """Prepaid balance in minor units."""

    amount: Annotated[int, Meta(description="minor units")]
    currency: Literal["usd"]


class BillingPlan(Schema):
    """The SDK's BillingPlan; call-related fields are 0 here."""

    key: str
    name: str
    monthlyPriceUsd: float
    includedMinutes: float
    overageUsdPerMinute: float
    includedLeads: int
    includedOutboundCalls: float
    includedInboundCalls: float
    outboundFixedUsd: float
    inboundFixedUsd: float
    leadOverageUsdPerLead: float


class MonthUsage(Schema):
    """This month's usage."""

    leads: int
    seconds_inbound: int
    seconds_outbound: int
    calls_inbound: int
    calls_outbound: int


class PaymentFailure(Schema):
    """The newest subscription invoice, when its payment failed."""

    invoice: Annotated[str, Meta(min_length=1)]
    amountDue: int
    currency: Annotated[str, Meta(min_length=1)]
    at: str


class BillingState(Schema):
    """Plan, this month's usage, card on file, balance, a failed payment."""

    plan: BillingPlan | None
    usage: MonthUsage
    hasCard: bool
    balance: Balance
    paymentFailure: PaymentFailure | None


class StripeUrl(Schema):
    """A Stripe-hosted page (or returnTo after an upgrade)."""

    url: Annotated[str, Meta(min_length=1)]


class PlanChoice(Schema):
    """POST /billing/plan."""

    plan: Annotated[Text, Meta(min_length=1, description="a key of the plan catalog")]
    mode: Literal["upgrade"] | UnsetType = UNSET


class ReturnTo(Schema):
    """Where Stripe sends the customer back; its origin must be in TELENTIR_RETURN_ORIGINS."""

    returnTo: Annotated[str, text(1, 2048)] | UnsetType = UNSET


class StripeEvent(Schema):
    """A Stripe event, exactly as Stripe sent it."""


class WebhookReceived(Schema):
    """A Stripe event applied (or ignored, or a replay)."""

    received: Annotated[bool, Meta(description="always true")]
    id: Annotated[str, Meta(min_length=1)]
    status: Literal["applied", "ignored", "replayed"]


StripeSignature = Annotated[
    str,
    Meta(
        pattern=ASCII_PATTERN,
        min_length=1,
        description="t=<unix time>,v1=<HMAC-SHA256 of `t.body` under STRIPE_WEBHOOK_SECRET>",
    ),
]
