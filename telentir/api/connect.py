"""Connector ingestion and credits: /api/connect, /api/credits, /api/billing/state (docs/protocol.md §7)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..services import credits, ingest
from ..streaming.sockets import client_gone_check
from .common import json_body, runtime
from .guard import data_plane_user, guard

bp = Blueprint("connect", __name__, url_prefix="/api")
bp.before_request(guard)


@bp.post("/connect")
def connect() -> tuple[str, int, dict[str, str]]:
    """Stream records from the scraper into a store; 204 when the job has ended (see X-Connect-Job)."""
    rt, user = runtime(), data_plane_user()
    req = ingest.parse_request(rt, json_body())
    job_id = ingest.connect(rt, user, req, client_gone_check(request.environ))
    return "", 204, {"X-Connect-Job": job_id}


@bp.get("/connect/jobs/<job_id>")
def job(job_id: str) -> Response:
    """The summary of one of the caller's ingestion jobs."""
    return jsonify(ingest.job_summary(runtime(), data_plane_user()["id"], job_id))


@bp.get("/credits")
def get_credits() -> Response:
    """The caller's prepaid balance in minor units."""
    return jsonify(credits.credits_document(runtime(), data_plane_user()))


@bp.get("/billing/state")
def billing_state() -> Response:
    """Plan, this month's usage, card on file, balance."""
    return jsonify(credits.billing_state(runtime(), data_plane_user()))
