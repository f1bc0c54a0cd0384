"""gunicorn settings for running gunicorn yourself: `gunicorn -c gunicorn.conf.py app:app`.

They are the package's own (telentir/gunicorn_settings.py), which `telentir serve` uses too.
"""

from telentir.gunicorn_settings import (  # noqa: F401 - gunicorn reads these names from this module
    bind,
    child_exit,
    control_socket_disable,
    graceful_timeout,
    keepalive,
    limit_request_line,
    logger_class,
    loglevel,
    on_exit,
    on_starting,
    threads,
    timeout,
    when_ready,
    worker_class,
    worker_connections,
    worker_exit,
    workers,
)

wsgi_app = "app:app"
