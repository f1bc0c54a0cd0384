"""Connector ingestion and credits: /api/connect, /api/credits, /api/billing/state (docs/protocol.md §7)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..services import credits, ingest
from ..streaming.sockets import client_gone_check
from .common import json_body, runtime
from .guard import data_plane_user, guard
from .registry import Answer, Header, operation
from .types.base import JobId
from .types.examples import BILLING_EXAMPLE
from .types.money import Balance, BillingState, Connect, Job

bp = Blueprint("connect", __name__, url_prefix="/api")
bp.before_request(guard)


@bp.post("/connect")
@operation(
    "connect",
    "Connect",
    "Ingest records from the scraper into a store; answers when the job has ended",
    ok=Answer(
        status=204,
        description="The job has ended; X-Connect-Job names it",
        headers=(Header("X-Connect-Job", JobId),),
    ),
    errors=(402, 429, 502, 503),
    body=Connect,
    body_example={"repository": "contacts", "path": "/get-leads", "params": {"credits": 20}},
)
def connect() -> tuple[str, int, dict[str, str]]:
    """Stream records from the scraper into a store; 204 when the job has ended (see X-Connect-Job)."""
    rt, user = runtime(), data_plane_user()
    req = ingest.parse_request(rt, json_body())
    job_id = ingest.connect(rt, user, req, client_gone_check(request.environ))
    return "", 204, {"X-Connect-Job": job_id}


@bp.get("/connect/jobs/<job_id>")
@operation(
    "get_connect_job",
    "Connect",
    "An ingestion job's summary",
    ok=Answer(type=Job),
    errors=(404,),
    path={"job_id": JobId},
)
def job(job_id: str) -> Response:
    """The summary of one of the caller's ingestion jobs."""
    return jsonify(ingest.job_summary(runtime(), data_plane_user()["id"], job_id))


@bp.get("/credits")
@operation(
    "get_credits",
    "Billing",
    "Prepaid balance in minor units",
    ok=Answer(type=Balance, example={"amount": 875, "currency": "usd"}),
    errors=(402, 503),
)
def get_credits() -> Response:
    """The caller's prepaid balance in minor units."""
    return jsonify(credits.credits_document(runtime(), data_plane_user()))


@bp.get("/billing/state")
@operation(
    "get_billing_state",
    "Billing",
    "Plan, this month's usage, card on file, balance, a failed payment",
    ok=Answer(type=BillingState, example=BILLING_EXAMPLE),
    errors=(402, 503),
)
def billing_state() -> Response:
    """Plan, this month's usage, card on file, balance."""
    return jsonify(credits.billing_state(runtime(), data_plane_user()))
