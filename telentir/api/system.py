"""Health, readiness and the platform's public keys."""

from __future__ import annotations

import logging
import os

from flask import Blueprint, Response, jsonify

from ..services import platform
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
            tx.execute("UPDATE platform_servers SET name = name WHERE 1 = 0")
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
