"""The event-loop worker (`serve --worker-class gevent`): gunicorn's gevent worker with JSON error answers.

A connection waiting for its request head costs a greenlet here, not a thread, so slow
clients cannot starve the others. The head of a connection's first request must still
arrive within TELENTIR_HEADER_TIMEOUT_SECONDS, else 408 `request_timeout` and the
connection closes; a kept-alive connection's later requests keep gunicorn's `keepalive`
window (an idle connection is closed after it).
"""

from __future__ import annotations

from typing import Any

import gevent
from gevent.local import local
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker as GunicornGeventWorker

from . import HeaderTimeout, JsonErrorPages, StopsJobs, count_header_timeout, header_timeout, send_error


class GeventWorker(StopsJobs, JsonErrorPages, GunicornGeventWorker):
    """gevent: one event loop per worker process, a greenlet per connection."""

    def init_process(self) -> None:
        """Per-connection state lives in the connection's greenlet."""
        self._connection = local()
        super().init_process()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """Serve one connection (in its own greenlet); its first head is waited for under the header timeout."""
        self._connection.first_head = True
        super().handle(listener, client, addr)

    def timeout_ctx(self) -> Any:
        """The bound on reading a request head: the header timeout for the first, gunicorn's keepalive after."""
        if getattr(self._connection, "first_head", False):
            self._connection.first_head = False
            seconds = header_timeout(self)
            return gevent.Timeout(seconds, HeaderTimeout(seconds))
        return super().timeout_ctx()

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """A head that timed out gets 408 and a graceful close; anything else, the JSON answer of gunicorn's status."""
        if not isinstance(exc, HeaderTimeout):
            super().handle_error(req, client, addr, exc)
            return
        count_header_timeout(self)
        send_error(client, 408, "Request Timeout", exc)
        util.close_graceful(client)  # read what the client still sends for a moment: no reset eats the answer
