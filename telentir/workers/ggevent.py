"""The event-loop worker (`serve --worker-class gevent`): gunicorn's gevent worker with JSON error answers."""

from __future__ import annotations

from gunicorn.workers.ggevent import GeventWorker as GunicornGeventWorker

from . import JsonErrorPages, StopsJobs


class GeventWorker(StopsJobs, JsonErrorPages, GunicornGeventWorker):
    """gevent: one event loop per worker process, a greenlet per connection."""
