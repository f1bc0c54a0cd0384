"""The default worker: gunicorn's thread worker with JSON error answers."""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker

from . import JsonErrorPages, StopsJobs


class ThreadWorker(StopsJobs, JsonErrorPages, GunicornThreadWorker):
    """gthread: a pool of threads per worker process."""
