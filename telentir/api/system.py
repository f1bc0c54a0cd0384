"""Health, readiness and the platform's public keys."""

from __future__ import annotations

import hmac
import logging
import os

from flask import Blueprint, Response, jsonify, request

from ..errors import NotFound, Unauthorized
from ..metrics import CONTENT_TYPE
from ..services import platform, usage
from .common import runtime, verified_user

bp = Blueprint("system", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is alive (`pid` tells which worker answered, for operators and tests)."""
    return jsonify({"status": "ok", "pid": os.getpid()})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """The database is writable and the broker answers."""
    checks = {"database": _database_writable(), "broker": _broker_reachable()}
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    if not ready:
        body.update(error="service_unavailable", message="A dependency is not ready: see checks.")
    return jsonify(body), 200 if ready else 503


def _database_writable() -> bool:
    try:
        with runtime().db.atomic() as tx:
            # A write that changes nothing still needs the write lock and a writable file.
            tx.execute("UPDATE platform_servers SET name = name WHERE 0")
        return True
    except Exception:
        log.exception("readiness: database check failed")
        return False


def _broker_reachable() -> bool:
    broker = runtime().broker
    try:
        return broker is None or bool(broker.ping())
    except Exception:
        log.exception("readiness: broker check failed")
        return False


@bp.get("/api/server")
def server() -> Response:
    """The platform's current server name and public keys (SPKI + JWK)."""
    verified_user()
    return jsonify(platform.server_document(runtime()))


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics: 404 unless TELENTIR_METRICS_TOKEN is set, then only for that bearer token."""
    rt = runtime()
    token = rt.config.metrics_token
    if token is None:
        raise NotFound()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Only the metrics token: an API key or a session must not open the server's internals.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("GET /metrics needs Authorization: Bearer <TELENTIR_METRICS_TOKEN>.")
    return Response(rt.metrics.exposition(lambda: usage.scrape_gauges(rt)), content_type=CONTENT_TYPE)
