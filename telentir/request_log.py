"""Per request: a request id in and out, one structured log line, and the request metrics.

A WSGI middleware around the whole app, so every answer gets `X-Request-ID` (errors, 404s
of unknown routes and 500s included) and is counted once. The line is written when the
response ends (for a stream, when it closes); the latency metric is taken when the
headers go out. The route is the URL rule (`/api/objects/<object_id>`), never the path or
its query string, and no header or body is ever read here: nothing secret reaches the log.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .logs import REQUEST_LOGGER, current_request_id
from .metrics import Metrics

log = logging.getLogger(REQUEST_LOGGER)

ROUTE_KEY = "telentir.route"
USER_KEY = "telentir.user_id"
REQUEST_ID_KEY = "telentir.request_id"
UNMATCHED = "unmatched"
# What a proxy may pass as a request id: short, printable, no separators a log parser trips on.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _Exchange:
    """What one request has shown so far."""

    def __init__(self, environ: dict[str, Any], request_id: str) -> None:
        self.environ, self.request_id = environ, request_id
        self.started = time.perf_counter()
        self.status = 0
        self.sent = 0
        self.finished = False

    @property
    def method(self) -> str:
        return str(self.environ.get("REQUEST_METHOD", ""))[:16]

    @property
    def route(self) -> str:
        return str(self.environ.get(ROUTE_KEY) or UNMATCHED)


class RequestLog:
    """The middleware: wrap the app, `trust_request_id` when a trusted proxy sets X-Request-ID."""

    def __init__(self, app: WSGIApp, metrics: Metrics, trust_request_id: bool) -> None:
        self.app, self.metrics, self.trust_request_id = app, metrics, trust_request_id
        # Ids are this process's random prefix and a counter: unique, and cheaper than
        # reading the system's randomness on every request (each worker builds its own app).
        self._id_prefix, self._id_counter = secrets.token_hex(8), itertools.count()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request."""
        exchange = _Exchange(environ, self._request_id(environ))
        environ[REQUEST_ID_KEY] = exchange.request_id
        current_request_id.set(exchange.request_id)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = [(k, v) for k, v in headers if k.lower() != "x-request-id"]
            headers.append(("X-Request-ID", exchange.request_id))
            if not exchange.status:
                exchange.status = int(status[:3])
                self.metrics.request_answered(
                    exchange.method, exchange.route, exchange.status, time.perf_counter() - exchange.started
                )
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        try:
            body = self.app(environ, start)
        except StopIteration:
            # The event WebSocket under gunicorn (api/events.py): it has run and ended after its `101`.
            self._finish(exchange, 101)
            raise
        except BaseException:
            self._finish(exchange, 500)
            raise
        return _Body(body, exchange, self._finish)

    def _request_id(self, environ: dict[str, Any]) -> str:
        given = environ.get("HTTP_X_REQUEST_ID", "")
        if self.trust_request_id and _REQUEST_ID.fullmatch(given):
            return str(given)
        return f"{self._id_prefix}{next(self._id_counter) & 0xFFFFFFFF:08x}"

    def _finish(self, exchange: _Exchange, status: int | None = None) -> None:
        """Write the request's line (once) and forget its id."""
        if exchange.finished:
            return
        exchange.finished = True
        if not exchange.status:
            exchange.status = status or 500
            self.metrics.request_answered(
                exchange.method, exchange.route, exchange.status, time.perf_counter() - exchange.started
            )
        if log.isEnabledFor(logging.INFO):
            log.handle(self._record(exchange))
        current_request_id.set(None)

    @staticmethod
    def _record(exchange: _Exchange) -> logging.LogRecord:
        """The request's line, built directly: `log.info` would also walk the stack for a caller we know."""
        duration_ms = round((time.perf_counter() - exchange.started) * 1000, 1)
        fields = {
            "request_id": exchange.request_id,
            "method": exchange.method,
            "route": exchange.route,
            "status": exchange.status,
            "duration_ms": duration_ms,
            "bytes": exchange.sent,
            "user_id": exchange.environ.get(USER_KEY),
            "client": exchange.environ.get("REMOTE_ADDR"),
        }
        shown = (fields["method"], fields["route"], fields["status"], duration_ms, exchange.sent)
        return log.makeRecord(log.name, logging.INFO, __file__, 0, "%s %s %d %.1fms %dB", shown, None, extra=fields)


class _Body:
    """The response body, counted as it goes; its `close` ends the request."""

    def __init__(self, body: Iterable[bytes], exchange: _Exchange, finish: Callable[[_Exchange], None]) -> None:
        self.body, self.exchange, self.finish = body, exchange, finish

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            self.exchange.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        """Close the app's body, then log the request."""
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.finish(self.exchange)
