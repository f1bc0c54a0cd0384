"""gunicorn workers whose own error answers are the JSON error shape, not HTML pages.

gunicorn answers a request it cannot parse (a malformed request line, too many or too
large headers, a bad Content-Length or Transfer-Encoding, an unmet `Expect`) before the
app is called, and answers 500 when a response fails before its headers are sent. It
renders those answers as HTML pages. These workers keep gunicorn's decision (the status,
its log line and access-log entry) and replace only the page with `{"error", "message"}`
(docs/protocol.md §1.3).

    gthread → telentir.workers.gthread.ThreadWorker   (the default)
    gevent  → telentir.workers.ggevent.GeventWorker   (`serve --worker-class gevent`)

Both also bound a slow client: a connection that has not sent its whole request head
within TELENTIR_HEADER_TIMEOUT_SECONDS is answered 408 (`request_timeout`) and closed, and
under gthread it holds no thread meanwhile (see gthread.py).

Each lives in its own module so that the thread worker never imports gevent.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any

from ..config import Config
from ..errors import error_body

log = logging.getLogger(__name__)

# `serve --worker-class NAME` → the class gunicorn loads.
WORKER_CLASSES = {
    "gthread": "telentir.workers.gthread.ThreadWorker",
    "gevent": "telentir.workers.ggevent.GeventWorker",
}
MAX_DETAIL = 200  # characters of gunicorn's description kept in the message (it may quote the request)

# status → (error code, message); `{detail}` is gunicorn's description of what it refused.
_ANSWERS = {
    400: ("invalid_request", "The HTTP request is malformed: {detail}."),
    403: ("forbidden", "The request is forbidden."),
    408: ("request_timeout", "The request did not arrive in full within {detail} seconds."),
    414: ("uri_too_long", "The request line is too long."),
    417: ("expectation_failed", "The Expect header cannot be met: {detail}."),
    431: ("request_header_fields_too_large", "The request has too many headers, or one is too large."),
    501: ("not_implemented", "The request uses a transfer coding this server does not support: {detail}."),
}
_INTERNAL = ("internal_error", "Something went wrong on our side; try again later.")


HEADER_TIMEOUT_LIMIT = "header_timeout_seconds"  # the `limit` label of telentir_limit_refusals_total


class HeaderTimeout(Exception):
    """A client did not finish its request head in time (its str is the timeout, in seconds)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"{seconds:g}")


def app_runtime(worker: Any) -> Any:
    """The Telentir runtime of the app a worker serves (None before it is loaded, or for another app)."""
    return getattr(getattr(worker, "wsgi", None), "extensions", {}).get("telentir")


def header_timeout(worker: Any) -> float:
    """TELENTIR_HEADER_TIMEOUT_SECONDS, as the worker's app read it."""
    runtime = app_runtime(worker)
    return float(runtime.config.header_timeout_seconds if runtime is not None else Config.header_timeout_seconds)


def count_header_timeout(worker: Any) -> None:
    """One connection refused with 408: telentir_limit_refusals_total{limit="header_timeout_seconds"}."""
    runtime = app_runtime(worker)
    if runtime is not None:
        runtime.metrics.limit_refused(HEADER_TIMEOUT_LIMIT)


class _PageCatcher:
    """Stands in for the client socket while gunicorn writes its HTML page: keeps the bytes, sends nothing."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.written = bytearray()

    def gettimeout(self) -> float:
        """Non-blocking, so gunicorn writes straight away without changing the real socket."""
        return 0.0

    def sendall(self, data: bytes) -> None:
        """Keep what gunicorn would have sent."""
        self.written += data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class StopsJobs:
    """On SIGTERM (a graceful stop), tell the app's running ingestion jobs to end now.

    gunicorn lets a stopping worker finish its requests for `graceful_timeout` seconds and then
    kills it; a `/api/connect` request lasts as long as its job. So the job is told at once: it
    ends at its next record, settles (charging what it wrote, refunding the rest) and its
    request answers, well inside the timeout.
    """

    def handle_exit(self, sig: Any, frame: Any) -> None:
        """gunicorn's handling, then the jobs' stop flag (an Event: safe to set from a signal handler)."""
        super().handle_exit(sig, frame)  # type: ignore[misc]
        runtime = app_runtime(self)
        if runtime is not None:
            runtime.job_runner.stopping.set()


class JsonErrorPages:
    """Mixin for a gunicorn worker: its error answers carry the JSON error body."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Let gunicorn classify and log the failure, then answer its status with a JSON body."""
        catcher = _PageCatcher(client)
        super().handle_error(req, catcher, addr, exc)  # type: ignore[misc]
        status, reason = _status_line(bytes(catcher.written))
        send_error(client, status, reason, exc)


def _status_line(page: bytes) -> tuple[int, str]:
    """The status gunicorn chose, read from the page it wrote (500 if it wrote nothing readable)."""
    match = re.match(rb"HTTP/1\.[01] ([0-9]{3}) ([^\r\n]*)\r\n", page)
    return (int(match[1]), match[2].decode("latin-1")) if match else (500, "Internal Server Error")


def error_response(status: int, reason: str, exc: BaseException) -> bytes:
    """A complete HTTP/1.1 answer: the status, `Connection: close` and the JSON error body."""
    code, message = _ANSWERS.get(status, _INTERNAL)
    detail = str(exc)[:MAX_DETAIL] if status < 500 else ""
    body = json.dumps(error_body(code, message.format(detail=detail)), separators=(",", ":")).encode()
    # A request gunicorn could not parse never reached the app's request log: its id is made here.
    request_id = secrets.token_hex(12)
    log.info("refused HTTP with %d before the app (request id %s)", status, request_id)
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"X-Request-ID: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def send_error(sock: Any, status: int, reason: str, exc: BaseException) -> None:
    """Answer a request the worker refuses itself, without blocking on a client that does not read."""
    try:
        _send(sock, error_response(status, reason, exc))
    except OSError:
        log.debug("could not send the error answer: the client is gone")


def _send(sock: Any, data: bytes) -> None:
    # As gunicorn sends its own page: without blocking on a client that does not read.
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.sendall(data)
    finally:
        sock.settimeout(timeout)
