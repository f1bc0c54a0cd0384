"""Telentir server: an open, self-hostable server for the Telentir encrypted data plane.

`create_app(config)` builds everything; importing this package opens no file and starts
no thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, request

from .config import Config, load_config
from .version import __version__

__all__ = ["__version__", "close_app", "create_app"]


def create_app(config: Config | Mapping[str, Any] | None = None) -> Flask:
    """Build the WSGI app: settings, storage, keys, broker, blueprints, error handlers."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    from . import logs
    from .api import register_blueprints
    from .api.errors import register_error_handlers
    from .body import CompleteBodies
    from .request_log import RequestLog
    from .wiring import build_runtime, start_background

    if not isinstance(config, Config):
        config = load_config(config)
    logs.configure(config.log_level, config.log_format)
    from .api.answers import AnswerJSONProvider

    app = Flask(__name__, static_folder=None)
    app.json = AnswerJSONProvider(app)
    # WebSocket pings at the heartbeat interval keep idle mirrors alive behind proxies, as
    # keep-alive comments do for SSE.
    app.config.update(
        MAX_CONTENT_LENGTH=config.max_body_bytes,
        JSON_SORT_KEYS=False,
        SOCK_SERVER_OPTIONS={"ping_interval": config.sse_heartbeat_seconds},
    )
    # `//` in a path (an id like "../") must be a JSON 404, not Werkzeug's HTML redirect.
    app.url_map.merge_slashes = False
    if config.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxy_hops, x_proto=config.proxy_hops)  # type: ignore
    rt = app.extensions["telentir"] = build_runtime(config)
    # A body that ends before its Content-Length is a 400, never a shorter body (telentir/body.py).
    app.wsgi_app = CompleteBodies(app.wsgi_app)  # type: ignore[method-assign]
    # Outermost, so the request id and the log line cover every answer, errors included; a
    # client's X-Request-ID is taken only from a trusted proxy.
    app.wsgi_app = RequestLog(app.wsgi_app, rt.metrics, trust_request_id=config.proxy_hops > 0)  # type: ignore
    start_background(rt)
    register_error_handlers(app)
    app.before_request(_first_look)  # before every blueprint's own hooks (the guard)
    register_blueprints(app)
    app.teardown_appcontext(lambda exc: rt.db.park_connection())
    return app


def _first_look() -> None:
    """Before every request: tell the request log the matched rule, then refuse non-text input.

    One hook for both, resolving the request once: it runs on every request.
    """
    from .api.inputs import check_query_and_headers
    from .request_log import ROUTE_KEY

    req = request._get_current_object()  # type: ignore[attr-defined]
    if req.url_rule is not None:  # the rule's template, never the path itself
        req.environ[ROUTE_KEY] = req.url_rule.rule
    check_query_and_headers(req.environ)


def close_app(app: Flask) -> None:
    """Release the app's database connections, broker and workers."""
    app.extensions["telentir"].close()
