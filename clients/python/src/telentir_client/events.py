"""Event streams (`GET /events/{type}`, Server-Sent Events) as a Python iterator that survives dropped connections.

The stream is opened when `listen()` returns, so every event after that moment is seen. If the
connection drops (or the server ends the stream), the iterator reconnects with the id of the
last event it received in `Last-Event-ID`: the server replays what was missed, with no gap and
no duplicate. If the server cannot continue from that id (events were pruned, or the server's
data was restored from an older backup), it says `resync`: the iterator yields that event
(`event.type == "resync"`, payload `{"since": n}`) so the program can reload what it shows,
and carries on from there.
"""

from __future__ import annotations

import codecs
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests

from .errors import NETWORK, TelentirError
from .stores import item_of

if TYPE_CHECKING:
    from types import TracebackType

    from .keyring import Keyring
    from .transport import Transport

EVENT_TYPES = (
    "key_created",
    "key_deleted",
    "object_created",
    "object_updated",
    "object_deleted",
    "publish",
    "unpublish",
)
RESYNC = "resync"
# A stream sends a keep-alive every 15 s: a minute of silence means the connection is dead.
READ_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0
MAX_BACKOFF = 30.0
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
_LINE_END = re.compile(r"\r\n|\r|\n")


class Event(dict[str, Any]):
    """One event's payload, a dict; for `object_created`, the decrypted object with `"id"` added.

    Attributes: `type` (the event type, or `"resync"`), `event_id` (the stream's cursor, None
    for a resync), `record` (the payload as the server sent it) and `decrypted` (whether the
    dict is the decrypted object; False when the event carries none, or it could not be
    decrypted: `error` then says why, and the dict is the payload as sent).
    """

    def __init__(
        self,
        type: str,
        event_id: int | None,
        record: Mapping[str, Any],
        value: Mapping[str, Any] | None = None,
        error: TelentirError | None = None,
    ) -> None:
        super().__init__(value if value is not None else record)
        self.type = type
        self.event_id = event_id
        self.record = dict(record)
        self.decrypted = value is not None
        self.error = error

    def __repr__(self) -> str:
        return f"Event({self.type!r}, {self.event_id!r}, {dict.__repr__(self)})"


@dataclass
class _Frame:
    """The fields of one SSE block, as the WHATWG EventSource parser collects them."""

    event: str = ""
    data: list[str] = field(default_factory=list)
    id: str | None = None


class SSEParser:
    """Incremental Server-Sent Events parser: feed text, get the completed (id, event, data) blocks."""

    def __init__(self) -> None:
        self._buffer = ""
        self._frame = _Frame()
        self.retry_ms: int | None = None

    def feed(self, text: str) -> list[_Frame]:
        """Parse more text; the blocks it completed (a block with no `data` line is no event)."""
        text = self._buffer + text
        # A trailing `\r` may be half of a `\r\n`: it is kept back with the unfinished last line.
        held = "\r" if text.endswith("\r") else ""
        lines = _LINE_END.split(text[: len(text) - len(held)])
        self._buffer = lines.pop() + held
        done: list[_Frame] = []
        for line in lines:
            frame = self._line(line)
            if frame is not None:
                done.append(frame)
        return done

    def _line(self, line: str) -> _Frame | None:
        if line == "":
            frame, self._frame = self._frame, _Frame()
            return frame if frame.data else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._frame.data.append(value)
        elif name == "event":
            self._frame.event = value
        elif name == "id" and "\0" not in value:
            self._frame.id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


class EventStream(Iterator[Event]):
    """An open event stream: iterate it for events; `close()` it (or use `with`) when done."""

    def __init__(
        self,
        transport: Transport,
        keyring: Keyring,
        type: str,
        filter: Mapping[str, str] | None = None,
        last_event_id: int | str | None = None,
        reconnect: bool = True,
    ) -> None:
        if type not in EVENT_TYPES:
            raise ValueError(f"{type!r} is not an event type; one of {', '.join(EVENT_TYPES)}")
        self.transport = transport
        self.keyring = keyring
        self.type = type
        self.params = {name: str(value) for name, value in (filter or {}).items() if value is not None}
        self.last_event_id: str | None = None if last_event_id is None else str(last_event_id)
        self.reconnect = reconnect
        self.retry_seconds = 3.0
        self.closed = False
        self._response: requests.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._parser = SSEParser()
        self._pending: list[_Frame] = []
        self._open()  # now: the stream sees every event after listen() returns

    # --- the iterator --------------------------------------------------------------------------

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> Event:
        while not self.closed:
            if self._pending:
                event = self._event(self._pending.pop(0))
                if event is not None:
                    return event
                continue
            self._read()
        raise StopIteration

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the stream and release its connection."""
        self.closed = True
        self._drop()

    # --- connection ----------------------------------------------------------------------------

    def _open(self) -> None:
        """Open the stream, resuming after `last_event_id` if there is one. TelentirError if refused."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        response = self.transport.request(
            "GET",
            f"/events/{self.type}",
            params=self.params,
            headers=headers,
            stream=True,
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
        )
        self._response = response
        self._chunks = response.iter_content(chunk_size=None)
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._parser = SSEParser()

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
        self._response, self._chunks = None, None

    def _read(self) -> None:
        """Read what arrives next; reconnect (with Last-Event-ID) when the connection is gone."""
        try:
            if self._chunks is None:
                raise ConnectionError("not connected")
            chunk = next(self._chunks)
        except (StopIteration, requests.RequestException, ConnectionError, OSError, AttributeError):
            # AttributeError: urllib3 reading a response that close() has just released.
            self._drop()
            if self.closed:
                return
            if not self.reconnect:
                self.closed = True
                return
            self._resume()
            return
        self._pending.extend(self._parser.feed(self._decoder.decode(chunk)))
        if self._parser.retry_ms is not None:
            self.retry_seconds = self._parser.retry_ms / 1000

    def _resume(self) -> None:
        """Reconnect after the server's `retry` delay, backing off while it fails for a reason that passes."""
        delay = self.retry_seconds
        while not self.closed:
            time.sleep(delay)
            try:
                self._open()
                return
            except TelentirError as exc:
                if exc.status not in RETRYABLE_STATUSES and exc.code != NETWORK:
                    self.closed = True
                    raise
                delay = min(MAX_BACKOFF, max(delay * 2, exc.retry_after or 0.0, 0.5))

    # --- frames to events ----------------------------------------------------------------------

    def _event(self, frame: _Frame) -> Event | None:
        try:
            payload = json.loads("\n".join(frame.data))
        except ValueError:
            return None  # not this protocol's frame: skipped, as a browser's EventSource would pass it on raw
        if not isinstance(payload, dict):
            return None
        if frame.event == RESYNC:
            since = payload.get("since")
            if isinstance(since, int) and since > 0:
                self.last_event_id = str(since - 1)  # resumes without another resync (docs/protocol.md §6)
            return Event(RESYNC, None, payload)
        if frame.id is not None:
            self.last_event_id = frame.id
        event_id = int(frame.id) if frame.id is not None and frame.id.isdigit() else None
        kind = frame.event or self.type
        if kind == "object_created" and "content" in payload:
            try:
                value = self.keyring.open_object(payload)
            except TelentirError as exc:
                return Event(kind, event_id, payload, error=exc)
            return Event(kind, event_id, payload, item_of(payload["id"], value))
        return Event(kind, event_id, payload)
