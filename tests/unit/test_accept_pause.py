"""The gthread worker's pause after each accept (telentir/workers/gthread.py), in process.

With sibling workers it pauses accepting for 2 ms after a connection, so a burst of
requests spreads over the workers; but not while it already waits on many request heads (a
flood of slow or silent clients): pausing then only kept the requests queued behind the
flood, `/healthz` among them, waiting 2 ms per connection ahead of them.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker

from telentir.workers import gthread
from telentir.workers.gthread import ThreadWorker


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A ThreadWorker with two workers configured, whose accept adds a connection still sending its head."""
    self = ThreadWorker.__new__(ThreadWorker)
    self.cfg = SimpleNamespace(workers=2)
    self.heads, self._accept_resumes, self.enabled = {}, 0.0, []
    monkeypatch.setattr(GunicornThreadWorker, "accept", lambda w, _listener: w.heads.setdefault(object(), None))
    monkeypatch.setattr(GunicornThreadWorker, "set_accept_enabled", lambda w, on: w.enabled.append(on))
    return self


def test_with_sibling_workers_each_accept_pauses_accepting(worker: Any) -> None:
    worker.accept(None)
    assert worker.enabled == [False] and worker._accept_resumes > 0


def test_a_worker_waiting_on_a_flood_of_heads_accepts_without_pausing(worker: Any) -> None:
    for _ in range(gthread.ACCEPT_FLOOD_HEADS - 2):
        worker.heads[object()] = None
    worker.accept(None)  # waiting on ACCEPT_FLOOD_HEADS - 1 heads, the one just accepted included: a pause
    assert worker.enabled == [False]
    worker.enabled.clear()
    worker._accept_resumes = 0.0
    worker.accept(None)  # ACCEPT_FLOOD_HEADS: none
    assert worker.enabled == [] and worker._accept_resumes == 0.0


def test_a_single_worker_never_pauses(worker: Any) -> None:
    worker.cfg.workers = 1
    worker.accept(None)
    assert worker.enabled == [] and worker._accept_resumes == 0.0
