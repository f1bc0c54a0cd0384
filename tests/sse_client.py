"""A small Server-Sent Events client for tests, over a raw socket.

A raw socket (not `requests`) so a test controls the connection exactly: it can ask
`/healthz` on the same keep-alive connection first (to learn which worker holds the
stream), see the bytes as they arrive, and hang up abruptly. Frames are parsed as the
WHATWG EventSource parser does: lines end in `\\r\\n`, `\\n` or `\\r`; `:` starts a comment;
`data` lines join with `\\n`; one space after the colon is dropped. Unlike EventSource, every
block is reported (a `retry:`-only block and a comment-only heartbeat too), because those
are what tests check.
"""

from __future__ import annotations

import codecs
import json
import queue
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from .support import wait_until


class StreamEnded(Exception):
    """The server closed the stream."""


@dataclass
class Frame:
    """One block of lines up to a blank line."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    received_at: float = 0.0

    @property
    def is_heartbeat(self) -> bool:
        """Only comments: a keep-alive."""
        return bool(self.comments) and self.data is None and self.event is None and self.retry is None

    @property
    def is_event(self) -> bool:
        """A frame carrying data (an event or a resync notice)."""
        return self.data is not None

    def json(self) -> Any:
        """The data as JSON."""
        assert self.data is not None, self
        return json.loads(self.data)


class SSEParser:
    """Incremental parser: feed bytes, get the frames completed so far."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""
        self._frame = Frame()
        self._lines_in_frame = 0

    def feed(self, data: bytes, final: bool = False) -> list[Frame]:
        """Parse more bytes; `final` when the stream ended (an unfinished block is dropped)."""
        self._buffer += self._decoder.decode(data, final)
        frames: list[Frame] = []
        for line in self._complete_lines(final):
            frame = self._line(line)
            if frame is not None:
                frames.append(frame)
        return frames

    def _complete_lines(self, final: bool) -> Iterator[str]:
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return
            end, width = cut
            # A trailing "\r" may be the first half of "\r\n": wait for the next byte.
            if width == 1 and self._buffer[end] == "\r" and end + 1 == len(self._buffer) and not final:
                return
            if self._buffer[end : end + 2] == "\r\n":
                width = 2
            line, self._buffer = self._buffer[:end], self._buffer[end + width :]
            yield line

    def _line(self, line: str) -> Frame | None:
        if line == "":
            frame, self._frame = self._frame, Frame()
            had_lines, self._lines_in_frame = self._lines_in_frame, 0
            if not had_lines:
                return None
            frame.received_at = time.monotonic()
            return frame
        self._lines_in_frame += 1
        if line.startswith(":"):
            self._frame.comments.append(line[1:].lstrip(" "))
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._frame.data = value if self._frame.data is None else self._frame.data + "\n" + value
        elif name == "event":
            self._frame.event = value
        elif name == "id":
            self._frame.id = value
        elif name == "retry" and value.isdigit():
            self._frame.retry = int(value)
        return None


def _line_end(text: str) -> tuple[int, int] | None:
    positions = [i for i in (text.find("\r"), text.find("\n")) if i >= 0]
    return (min(positions), 1) if positions else None


class HttpConnection:
    """One HTTP/1.1 connection on a raw socket: plain requests (keep-alive), then maybe a stream."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        self._pending = b""

    @property
    def local_port(self) -> int:
        """Our side's port (the server sees it as the peer port)."""
        return int(self.sock.getsockname()[1])

    def send_request(self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b"") -> None:
        """Write one request."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("PUT", "POST", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def read_head(self) -> tuple[int, dict[str, str]]:
        """Read the status line and headers (names lowercased)."""
        while b"\r\n\r\n" not in self._pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise StreamEnded("connection closed before the response head")
            self._pending += chunk
        head, self._pending = self._pending.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def read_body(self, headers: Mapping[str, str]) -> bytes:
        """Read a whole body (Content-Length or chunked)."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return b"".join(self.iter_chunked())
        length = int(headers.get("content-length", "0"))
        while len(self._pending) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise StreamEnded("connection closed mid-body")
            self._pending += chunk
        body, self._pending = self._pending[:length], self._pending[length:]
        return body

    def request(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        """A whole request/response exchange on this connection."""
        self.send_request(method, path, headers, body)
        status, response_headers = self.read_head()
        return status, response_headers, self.read_body(response_headers)

    def iter_chunked(self) -> Iterator[bytes]:
        """The chunks of a chunked body as they arrive; ends after the last chunk."""
        while True:
            size_line = self._read_line()
            size = int(size_line.split(b";")[0], 16)
            data = self._read_exact(size + 2)[:-2]
            if size == 0:
                return
            yield data

    def iter_raw(self, headers: Mapping[str, str]) -> Iterator[bytes]:
        """Body bytes as they arrive, until the body (or the connection) ends."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            yield from self.iter_chunked()
            return
        if self._pending:
            data, self._pending = self._pending, b""
            yield data
        while chunk := self.sock.recv(65536):
            yield chunk

    def _read_line(self) -> bytes:
        while b"\r\n" not in self._pending:
            self._fill()
        line, self._pending = self._pending.split(b"\r\n", 1)
        return line

    def _read_exact(self, size: int) -> bytes:
        while len(self._pending) < size:
            self._fill()
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise StreamEnded("connection closed mid-chunk")
        self._pending += chunk

    def shutdown(self) -> None:
        """Hang up both directions (wakes a thread blocked reading this socket)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Close the socket."""
        self.shutdown()
        self.sock.close()


_END = object()


class SSEStream:
    """An open event stream: a reader thread parses frames into a queue."""

    def __init__(self, conn: HttpConnection, status: int, headers: dict[str, str]) -> None:
        self.conn, self.status, self.headers = conn, status, headers
        self.raw = bytearray()  # every body byte received, for byte-exact checks
        self.ended_cleanly = False  # the server finished the chunked body properly
        self._frames: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._read, name="sse-client-reader", daemon=True)
        self._closed = False
        self._thread.start()

    def _read(self) -> None:
        parser = SSEParser()
        try:
            for chunk in self.conn.iter_raw(self.headers):
                self.raw += chunk
                for frame in parser.feed(chunk):
                    self._frames.put(frame)
            self.ended_cleanly = True
        except (OSError, StreamEnded):
            pass
        finally:
            self._frames.put(_END)

    def next_frame(self, timeout: float = 5.0) -> Frame:
        """The next frame (heartbeats included); StreamEnded at the end; AssertionError on timeout."""
        try:
            item = self._frames.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no SSE frame within {timeout} s") from None
        if item is _END:
            self._frames.put(_END)  # stay ended for later calls
            raise StreamEnded("the server closed the stream")
        return item  # type: ignore[no-any-return]

    def next_event(self, timeout: float = 5.0) -> Frame:
        """The next frame carrying data, skipping heartbeats and `retry:` blocks."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.next_frame(max(0.0, deadline - time.monotonic()))
            if frame.is_event:
                return frame

    def events_before_heartbeats(self, since: float, beats: int = 2, timeout: float = 10.0) -> list[Frame]:
        """Data frames read until `beats` heartbeats received after `since` (a monotonic time).

        Two, not one: the first heartbeat after `since` may have been written just before
        an event reached the server's stream thread; the second one cannot have been.
        """
        events: list[Frame] = []
        deadline = time.monotonic() + timeout
        while beats > 0:
            frame = self.next_frame(max(0.0, deadline - time.monotonic()))
            if frame.is_heartbeat and frame.received_at > since:
                beats -= 1
            elif frame.is_event:
                events.append(frame)
        return events

    def frames_until_end(self, timeout: float) -> tuple[list[Frame], float]:
        """Every frame until the server ends the stream, and the monotonic time it ended; fails after `timeout`."""
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self._frames.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the stream did not end within {timeout} s") from None
            if item is _END:
                self._frames.put(_END)
                return frames, time.monotonic()
            frames.append(item)

    def close(self) -> None:
        """Hang up and wait for the reader thread."""
        if self._closed:
            return
        self._closed = True
        self.conn.shutdown()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "SSE reader thread did not stop"
        self.conn.close()

    def __enter__(self) -> SSEStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Refused:
    """A stream request answered with an error instead of a stream."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def open_stream(
    base_url: str,
    event_type: str,
    credential: str | None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    conn: HttpConnection | None = None,
    timeout: float = 10.0,
) -> SSEStream | Refused:
    """GET /api/events/<type>: an SSEStream on 200, else a Refused with the whole answer.

    `conn` reuses a keep-alive connection of the caller's (one `worker_pid` asked: the
    stream is then held by that worker).
    """
    conn = conn or HttpConnection(base_url, timeout=timeout)
    try:
        all_headers = {"Accept": "text/event-stream", **(headers or {})}
        if credential is not None:
            all_headers["Authorization"] = f"Bearer {credential}"
        query = f"?{urlencode(params)}" if params else ""
        conn.send_request("GET", f"/api/events/{event_type}{query}", all_headers)
        status, response_headers = conn.read_head()
        if status != 200:
            refused = Refused(status, response_headers, conn.read_body(response_headers))
            conn.close()
            return refused
    except BaseException:
        conn.close()
        raise
    conn.sock.settimeout(None)  # the reader blocks until data or close(); close() wakes it
    return SSEStream(conn, status, response_headers)


def open_when_free(base_url: str, event_type: str, credential: str, timeout: float) -> SSEStream:
    """Open a stream, trying again while the server has no slot for it (429, 503); fail after `timeout` seconds."""

    def opened() -> SSEStream | None:
        result = open_stream(base_url, event_type, credential)
        if isinstance(result, SSEStream):
            return result
        assert result.status in (429, 503), (result.status, result.body[:300])
        return None

    return wait_until(opened, timeout=timeout, message="a free stream slot")


def worker_pid(conn: HttpConnection) -> int:
    """Which worker process holds this keep-alive connection (asks /healthz on it)."""
    status, _, body = conn.request("GET", "/healthz")
    assert status == 200, body
    return int(json.loads(body)["pid"])


def assert_refused(refused: Refused, status: int, code: str) -> dict[str, Any]:
    """The stream request was answered with the JSON error shape."""
    assert refused.status == status, (refused.status, refused.body[:300])
    assert refused.headers["content-type"].startswith("application/json"), refused.headers
    body = refused.json()
    assert body["error"] == code and isinstance(body["message"], str) and body["message"], body
    return dict(body)


def connections_by_worker(base_url: str, each: int, timeout: float = 60.0) -> dict[int, list[HttpConnection]]:
    """Keep-alive connections grouped by the pid of the worker holding them: two workers, `each` apiece.

    One worker may win every accept when connections arrive one by one, so they are opened in
    a burst (the accept queue then fills and both workers take from it). A worker that was just
    started or replaced is still importing the app (gunicorn does not preload) and accepts
    nothing until it is done, so bursts are retried until `timeout`, not a fixed number of times.
    """
    deadline = time.monotonic() + timeout
    while True:
        burst = [HttpConnection(base_url) for _ in range(32)]  # all connect before any is served
        grouped: dict[int, list[HttpConnection]] = defaultdict(list)
        for conn in burst:
            grouped[worker_pid(conn)].append(conn)
        enough = {pid: conns for pid, conns in grouped.items() if len(conns) >= each}
        if len(enough) >= 2:
            for pid, conns in grouped.items():
                for conn in conns[each:] if pid in enough else conns:
                    conn.close()
            return {pid: conns[:each] for pid, conns in enough.items()}
        for conn in burst:
            conn.close()
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    raise AssertionError(f"no burst of connections in {timeout} s reached two workers {each} times each")


def must_open(base_url: str, event_type: str, credential: str | None, **kwargs: Any) -> SSEStream:
    """open_stream that must succeed."""
    result = open_stream(base_url, event_type, credential, **kwargs)
    assert isinstance(result, SSEStream), (result.status, result.body[:300])
    return result


class Writes:
    """Data-plane writes that each make one event, each on a fresh TCP connection (a separate client)."""

    def __init__(self, base_url: str, credential: str) -> None:
        self.base_url, self.credential = base_url, credential

    def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        """One request to /api + path; asserts the status, returns the JSON answer (or None)."""
        headers = {"Authorization": f"Bearer {self.credential}", "Connection": "close"}
        resp = requests.request(method, self.base_url + "/api" + path, json=body, headers=headers, timeout=30)
        try:
            assert resp.status_code == expect, (method, path, resp.status_code, resp.text[:300])
            return resp.json() if resp.content else None
        finally:
            resp.close()

    def key(self) -> str:
        """PUT /keys → key_created; the new key id."""
        return str(self.call("PUT", "/keys", {"server": "default"}, expect=201))

    def delete_key(self, key_id: str) -> None:
        """DELETE /keys/{id} → key_deleted."""
        self.call("DELETE", f"/keys/{key_id}", expect=204)

    def object(self, key_id: str, related: str | None = None, content: str = "00ff") -> dict[str, Any]:
        """PUT /objects → object_created; the record."""
        body = {"keyId": key_id, "content": content, "authTag": "ab" * 16}
        if related is not None:
            body["relatedId"] = related
        return dict(self.call("PUT", "/objects", body, expect=201))

    def update(self, object_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
        """PATCH /objects/{id} → object_updated; the record."""
        return dict(self.call("PATCH", f"/objects/{object_id}", {"metadata": metadata}))

    def delete(self, object_id: str) -> None:
        """DELETE /objects/{id} → object_deleted."""
        self.call("DELETE", f"/objects/{object_id}", expect=204)

    def publish(self, pub_type: str, related: str, object_id: str) -> dict[str, Any]:
        """PUT /objects/publish/{type}/{related} → publish."""
        return dict(self.call("PUT", f"/objects/publish/{pub_type}/{related}", {"objectId": object_id}))

    def unpublish(self, pub_type: str, related: str) -> None:
        """DELETE /objects/publish/{type}/{related} → unpublish."""
        self.call("DELETE", f"/objects/publish/{pub_type}/{related}", expect=204)


class KeyWriter:
    """Creates store keys (each a `key_created` event) in a thread until stopped, noting when each write began."""

    def __init__(self, writes: Writes, pause: float = 0.02) -> None:
        self.writes, self.pause = writes, pause
        self.started: list[tuple[float, str]] = []  # (monotonic time the request began, key id)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="key-writer", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> KeyWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the key writer did not stop"

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                key_id = self.writes.key()
                with self._lock:
                    self.started.append((began, key_id))
                self._stop.wait(self.pause)
        except BaseException as exc:  # reported by the test through `error`
            self.error = exc

    def begun_after(self, moment: float) -> set[str]:
        """Ids of the keys whose write request began after `moment` (a monotonic time)."""
        with self._lock:
            return {key_id for began, key_id in self.started if began > moment}

    def wait_for_writes_after(self, moment: float, count: int, timeout: float = 10.0) -> set[str]:
        """Wait until `count` writes began after `moment` have been answered; their key ids."""
        deadline = time.monotonic() + timeout
        while len(written := self.begun_after(moment)) < count:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, f"fewer than {count} writes in {timeout} s"
            time.sleep(0.02)
        return written
