"""gunicorn's settings and hooks for the Telentir server.

`telentir serve` loads this module (so an installed package needs no file of the checkout);
the top-level `gunicorn.conf.py` re-exports it for people who run gunicorn themselves
(`gunicorn -c gunicorn.conf.py app:app`). Command-line options of `serve` override it.

One worker process per CPU core by default (TELENTIR_WORKERS or `serve --workers N` choose
another count), each with many threads. The workers of one box share the event log without
Redis (doorbells cross processes through sockets, see telentir/pubsub/peers.py); several
machines need TELENTIR_BROKER_URL=redis://….
"""

from __future__ import annotations

import os
from typing import Any

from telentir.config import ConfigError, default_workers, load_config

bind = "127.0.0.1:8000"
# gunicorn's gthread worker, answering what it refuses with the JSON error shape, not HTML
# (telentir/workers). `telentir.workers.ggevent.GeventWorker` is the gevent one.
worker_class = "telentir.workers.gthread.ThreadWorker"


def _workers() -> int:
    try:
        return load_config().worker_count
    except ConfigError:
        return default_workers()  # on_starting stops the server with the setting's error


workers = _workers()
# Each open event stream holds a thread: enough threads for the stream cap plus requests.
threads = 256
# gthread serves keep-alive connections only while worker_connections exceeds threads;
# keep it well above any --threads a deployment picks for many event streams.
worker_connections = 10000
timeout = 60
graceful_timeout = 10
keepalive = 5
# Long (hostile) ids must reach the app and get its JSON 404, not gunicorn's HTML 414;
# 0 lets gunicorn 27 apply its own 1 MiB ceiling.
limit_request_line = 0
# The runtime control socket (gunicornc) is not used; one shared path would clash between servers.
control_socket_disable = True
# One log format for gunicorn and the app (telentir/logs.py); each request is logged once, by
# the app. gunicorn's own lines follow the server's log level.
logger_class = "telentir.serving.GunicornLogger"
loglevel = os.environ.get("TELENTIR_LOG_LEVEL", "info").strip().lower() or "info"


def on_starting(server: Any) -> None:
    """Before binding: refuse a bad configuration, take the data folder's lock (or refuse a live folder)."""
    from telentir.serving import on_starting as take_folder

    take_folder(server)


def when_ready(server: Any) -> None:
    """Port bound, before workers fork: repair storage once (migrations, interrupted jobs, stray files)."""
    from telentir.serving import when_ready as prepare

    prepare(server)


def child_exit(server: Any, worker: Any) -> None:
    """In the master, once a worker is gone: drop its live gauges from the shared metrics folder."""
    from telentir.serving import worker_gone

    worker_gone(worker.pid)


def on_exit(server: Any) -> None:
    """The master stops: remove the metrics folder it made."""
    from telentir.serving import stop_multiprocess_metrics

    stop_multiprocess_metrics()


def worker_exit(server: Any, worker: Any) -> None:
    """Close the worker's app cleanly (database connections, broker, job pool)."""
    from telentir import close_app

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        close_app(app)
