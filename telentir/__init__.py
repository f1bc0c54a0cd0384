"""Telentir server: an open, self-hostable server for the Telentir encrypted data plane.

`create_app(config)` builds everything; importing this package opens no file and starts
no thread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from .config import Config, load_config

__all__ = ["__version__", "close_app", "create_app"]
__version__ = "0.2.0"


def create_app(config: Config | Mapping[str, Any] | None = None) -> Flask:
    """Build the WSGI app: settings, storage, keys, broker, blueprints, error handlers."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    from .api import register_blueprints
    from .api.errors import register_error_handlers
    from .api.inputs import check_query_and_headers
    from .wiring import build_runtime, start_background

    if not isinstance(config, Config):
        config = load_config(config)
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = Flask(__name__, static_folder=None)
    # WebSocket pings at the heartbeat interval keep idle mirrors alive behind proxies, as
    # keep-alive comments do for SSE.
    app.config.update(
        MAX_CONTENT_LENGTH=config.max_body_bytes,
        JSON_SORT_KEYS=False,
        SOCK_SERVER_OPTIONS={"ping_interval": config.sse_heartbeat_seconds},
    )
    # `//` in a path (an id like "../") must be a JSON 404, not Werkzeug's HTML redirect.
    app.url_map.merge_slashes = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    if config.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxy_hops, x_proto=config.proxy_hops)  # type: ignore
    rt = app.extensions["telentir"] = build_runtime(config)
    start_background(rt)
    register_error_handlers(app)
    app.before_request(check_query_and_headers)  # before every blueprint's own hooks (the guard)
    register_blueprints(app)
    app.teardown_appcontext(lambda exc: rt.db.park_connection())
    return app


def close_app(app: Flask) -> None:
    """Release the app's database connections, broker and workers."""
    app.extensions["telentir"].close()
