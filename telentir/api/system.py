"""Health, readiness and the platform's public keys."""

from __future__ import annotations

import hmac
import logging
import os
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ..errors import ENGINE_TITLES, ApiError, NotFound, Unauthorized
from ..metrics import CONTENT_TYPE
from ..runtime import Runtime
from ..services import platform, usage
from ..storage.health import DISK
from .common import runtime, verified_user
from .registry import Answer, operation
from .types.data import PlatformServers
from .types.system import Health, Ready

bp = Blueprint("system", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
@operation(
    "get_health",
    "System",
    "The process is alive",
    ok=Answer(type=Health, example={"status": "ok", "pid": 12345}),
    auth=None,
)
def healthz() -> Response:
    """The process is alive (`pid` tells which worker answered, for operators and tests)."""
    return jsonify({"status": "ok", "pid": os.getpid()})


@bp.get("/readyz")
@operation(
    "get_readiness",
    "System",
    "Database writable, blob store and broker reachable, disk not full (503 names what is not)",
    ok=Answer(
        type=Ready, example={"status": "ok", "checks": dict.fromkeys(("database", "blobs", "broker", "disk"), True)}
    ),
    errors=(503,),
    auth=None,
)
def readyz() -> tuple[Response, int]:
    """Ready to serve: the database writable, the blob store and the broker reachable, the disk not full.

    503 otherwise, naming what is away (`unavailable`: the engines, or `disk`), so a load
    balancer stops sending traffic and an operator reads the cause from one answer.
    """
    rt = runtime()
    checks = {
        "database": _database_writable(rt),
        "blobs": _blobs_reachable(rt),
        "broker": _broker_reachable(rt),
        "disk": not rt.space.full(),
    }
    ready = all(checks.values())
    body: dict[str, Any] = {"status": "ok" if ready else "unavailable", "checks": checks}
    if not ready:
        away = [_engine_of(rt, check) for check, ok in checks.items() if not ok]
        body.update(
            unavailable=away,
            error="insufficient_storage" if away == ["disk"] else "service_unavailable",
            message=f"Not ready: {', '.join(_describe(rt, name) for name in away)}; see checks.",
        )
    return jsonify(body), 200 if ready else 503


def _engine_of(rt: Runtime, check: str) -> str:
    """The engine (or `disk`) behind a readiness check, as `unavailable` names it."""
    if check == "database":
        return "postgresql" if rt.config.uses_postgres else "sqlite"
    if check == "blobs":
        return "s3" if rt.config.uses_s3 else "files"
    if check == "broker":
        return "redis"
    return DISK


def _describe(rt: Runtime, name: str) -> str:
    if name == DISK:
        return f"the disk is full ({rt.space.free_bytes():,} bytes free)"
    if name == "files":
        return f"the ciphertext folder {rt.blobs.describe()} is not writable"
    return f"{ENGINE_TITLES.get(name, name)} is unavailable"


def _database_writable(rt: Runtime) -> bool:
    try:
        with rt.db.atomic() as tx:
            # A write that changes nothing still needs the write lock and a writable file.
            tx.execute("UPDATE platform_servers SET name = name WHERE 1 = 0")
        return True
    except ApiError:
        return False  # the storage layer logged it, once per outage
    except Exception:
        log.exception("readiness: database check failed")
        return False


def _blobs_reachable(rt: Runtime) -> bool:
    try:
        rt.blobs.ping()
        return True
    except ApiError:
        return False
    except Exception:
        log.exception("readiness: blob store check failed")
        return False


def _broker_reachable(rt: Runtime) -> bool:
    broker = rt.broker
    try:
        reachable = broker is None or bool(broker.ping())
    except Exception as exc:
        log.debug("readiness: broker check failed", exc_info=True)
        reachable, cause = False, str(exc)
    else:
        cause = "PING got no answer"
    if reachable:
        rt.health.ok("redis")
    elif not broker.in_process:
        rt.health.failed("redis", cause)
    return reachable


@bp.get("/api/server")
@operation(
    "get_platform_servers",
    "Servers",
    "Platform server name and public keys (SPKI + JWK)",
    ok=Answer(type=PlatformServers, example={"current": "telentir", "keys": {}}),
)
def server() -> Response:
    """The platform's current server name and public keys (SPKI + JWK)."""
    verified_user()
    return jsonify(platform.server_document(runtime()))


@bp.get("/metrics")
@operation(
    "get_metrics",
    "System",
    "Prometheus metrics: needs Authorization: Bearer <TELENTIR_METRICS_TOKEN>; 404 while that is unset",
    ok=Answer(
        type=str,
        description="Prometheus text format",
        media="text/plain",
        example='telentir_http_requests_total{method="GET",route="/healthz",status="200"} 3.0\n',
    ),
    errors=(401, 404),
    auth=None,
)
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
