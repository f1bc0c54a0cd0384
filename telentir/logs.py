"""One log format for the whole server: the app, gunicorn's master and workers, the CLI.

Every line carries the same timestamp (ISO 8601 UTC with milliseconds, as the database
writes them) and, during a request, its request id. Lines are JSON objects when the log is
not a terminal (a file, journald, a container log collector) and readable text when it is;
`TELENTIR_LOG_FORMAT` picks one explicitly.

Nothing here logs a credential: the request line (`telentir.request_log`) is built from the
route template, never the path or query string, and never from headers or bodies.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, TextIO

# The request being served in this thread or greenlet (set by the request-log middleware).
# A ContextVar, not a global: each request thread sees only its own id.
current_request_id: ContextVar[str | None] = ContextVar("telentir_request_id", default=None)

# LogRecord attributes that are not "extra" fields given by the caller.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def iso_time(created: float) -> str:
    """`2026-11-29T07:31:56.123Z` for a `time.time()` value (the database's format)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class LogFormatter(logging.Formatter):
    """JSON (one object per line) or text, with the house timestamp and the request id."""

    def __init__(self, json_lines: bool) -> None:
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line (a traceback follows on further lines in text mode)."""
        fields = _extra_fields(record)
        request_id = fields.pop("request_id", None) or current_request_id.get()
        if self.json_lines:
            return self._json(record, request_id, fields)
        return self._text(record, request_id, fields)

    def _json(self, record: logging.LogRecord, request_id: str | None, fields: dict[str, Any]) -> str:
        line: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if request_id:
            line["request_id"] = request_id
        line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, separators=(",", ":"))

    def _text(self, record: logging.LogRecord, request_id: str | None, fields: dict[str, Any]) -> str:
        parts = [
            iso_time(record.created),
            record.levelname,
            f"[{record.process}]",
            record.name + ":",
            record.getMessage(),
        ]
        if request_id and record.name != REQUEST_LOGGER:
            parts.append(f"request_id={request_id}")
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD and not key.startswith("_")}


REQUEST_LOGGER = "telentir.request_log"


def use_json(log_format: str, stream: TextIO) -> bool:
    """Whether `auto` means JSON here: yes unless the stream is a terminal."""
    if log_format == "auto":
        return not stream.isatty()
    return log_format == "json"


def make_handler(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) with the house formatter."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogFormatter(use_json(log_format, stream)))
    return handler


def configure(level: str, log_format: str) -> None:
    """Route the root logger to stderr in the house format, once per process (later calls adjust it).

    Handlers others installed (pytest's capture) are left alone; ours is marked so that
    several apps in one process share one handler instead of printing each line twice.
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in root.handlers:
        if getattr(handler, "_telentir", False):
            handler.setFormatter(LogFormatter(use_json(log_format, getattr(handler, "stream", sys.stderr))))
            return
    handler = make_handler(log_format)
    handler._telentir = True  # type: ignore[attr-defined]
    root.addHandler(handler)
