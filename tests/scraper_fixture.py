"""A configurable scraper service for the ingestion tests: a real HTTP server on 127.0.0.1.

`POST <any path>` with a JSON body streams Server-Sent Events (chunked) according to the
body, which is the `params` the Telentir server forwards:
- `mode`: `normal` (send `n` records), `too_many` (`n` + `extra`), `garbage` (`n` records
  mixed with frames that are not JSON objects, plus comments, `id:`/`retry:` fields and a
  multi-line record), `error` (`after` records, then `event: error`, then records that must
  be ignored), `stall` (`after` records, then silence), `drop` (`after` records and half a
  frame, then the connection is cut without ending the chunked body), `slow` (`n` records,
  `delay_ms` apart), `http_error` (a 500 answer), `huge` (`after` records, then one frame of
  `size` bytes), `redirect` (a 307 to this scraper's /stats, which must not be followed);
- `n` defaults to `credits` (for /get-leads) or `count`; `tag` is copied into every record.
Every stream request is counted; `GET /stats` shows the count, paths and records sent.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from .local_server import BackgroundServer

GARBAGE_FRAMES = (
    "data: not json at all\n\n",
    "data: [1, 2, 3]\n\n",
    'data: "a string"\n\n',
    "data: 42\n\n",
    "data: null\n\n",
    "data: {broken\n\n",
    'event: progress\ndata: {"done": 1}\n\n',
    "data: " + "[" * 5000 + "\n\n",
)
STALL_SECONDS = 30.0


def record(n: int, tag: Any) -> dict[str, Any]:
    """The record number `n` of a stream."""
    return {"n": n, "name": f"Lead {n}", "email": f"lead{n}@example.com", "tag": tag}


def _data(obj: Any) -> str:
    return f"data: {json.dumps(obj)}\n\n"


class TestScraper(BackgroundServer):
    """The scraper server, run on a background thread; `stop()` ends stalls and joins every thread."""

    __test__ = False  # not a test class, despite the name
    owner_attr, thread_name = "scraper", "test-scraper"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def _new_server(self) -> ThreadingHTTPServer:
        return _Server(("127.0.0.1", 0), _Handler)

    def _before_stop(self) -> None:
        self.stopping.set()  # stalled streams end, so their handler threads can be joined

    def stats(self) -> dict[str, Any]:
        """`GET /stats` over HTTP: what the scraper process saw."""
        with requests.get(self.url + "/stats", timeout=5) as resp:
            resp.raise_for_status()
            return resp.json()

    def request_count(self) -> int:
        """Stream requests received so far (through /stats)."""
        return int(self.stats()["requests"])

    def note(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Record a stream request (called by the handler)."""
        with self._lock:
            self.requests.append(entry)
        return entry

    def snapshot(self) -> dict[str, Any]:
        """The /stats document."""
        with self._lock:
            return {
                "requests": len(self.requests),
                "paths": [r["path"] for r in self.requests],
                "sent": [r["sent"] for r in self.requests],
            }


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # joined by server_close()
    scraper: TestScraper

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-stream is expected here, not an error to print."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        if self.path != "/stats":
            self._plain(404, b"not found")
            return
        self._plain(200, json.dumps(self.server.scraper.snapshot()).encode(), "application/json")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            params = json.loads(body) if body else {}
        except ValueError:
            params = {"unparsable": body.decode(errors="replace")}
        entry = self.server.scraper.note(
            {
                "path": self.path,
                "params": params,
                "sent": 0,
                "accept": self.headers.get("Accept"),
                "content_type": self.headers.get("Content-Type"),
            }
        )
        if params.get("mode") == "http_error":
            self._plain(500, b'{"error": "scraper is broken"}', "application/json")
            return
        if params.get("mode") == "redirect":
            self._plain(307, b"", headers={"Location": f"http://127.0.0.1:{self.server.server_address[1]}/elsewhere"})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self._stream(params, entry)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the Telentir server stopped reading (limit reached, killed, timed out)

    def _stream(self, params: dict[str, Any], entry: dict[str, Any]) -> None:
        mode = params.get("mode", "normal")
        if mode == "drop":
            for frame in self._records(params, _int(params, "after", 0)):
                self._chunk(frame, entry)
            self._chunk('data: {"partial": tr', entry, count=False)
            self.connection.shutdown(socket.SHUT_RDWR)  # no terminating chunk: the body is cut
            return
        for frame in self._frames(mode, params):
            if frame is None:  # a stall
                self.server.scraper.stopping.wait(STALL_SECONDS)
                continue
            self._chunk(frame, entry, count='"n": ' in frame)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _frames(self, mode: str, params: dict[str, Any]) -> Iterator[str | None]:
        n, after, tag = _count(params), _int(params, "after", 0), params.get("tag")
        if mode == "normal":
            yield ": test scraper\n\n"
            yield from self._records(params, n)
        elif mode == "too_many":
            yield from self._records(params, n + _int(params, "extra", 5))
        elif mode == "garbage":
            yield from _garbage(n, tag)
        elif mode == "error":
            yield from self._records(params, after)
            yield "event: error\ndata: scraper exploded\ndata: second line\n\n"
            yield from (_data(record(after + i, tag)) for i in range(3))
        elif mode == "stall":
            yield from self._records(params, after)
            yield None
        elif mode == "slow":
            for i in range(n):
                if self.server.scraper.stopping.wait(_int(params, "delay_ms", 50) / 1000):
                    return
                yield _data(record(i, tag))
        elif mode == "huge":
            yield from self._records(params, after)
            yield _data({"n": after, "tag": tag, "padding": "x" * _int(params, "size", 100_000)})
        else:
            raise ValueError(f"unknown mode {mode!r}")

    @staticmethod
    def _records(params: dict[str, Any], count: int) -> Iterator[str]:
        return (_data(record(i, params.get("tag"))) for i in range(count))

    def _chunk(self, text: str, entry: dict[str, Any], count: bool = True) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()
        if count:
            entry["sent"] += 1

    def _plain(
        self, status: int, payload: bytes, content_type: str = "text/plain", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True


def _garbage(n: int, tag: Any) -> Iterator[str]:
    """`n` good records (one of them spread over two data lines, in \\r\\n) among bad frames."""
    bad = list(GARBAGE_FRAMES)
    yield "retry: 1000\n: a comment\nid: 1\n\n"  # no data: not a frame at all
    for i in range(n):
        if i == 1:
            head, rest = json.dumps(record(i, tag)).split(", ", 1)
            yield f"id: 7\r\ndata: {head},\r\ndata: {rest}\r\n\r\n"
        else:
            yield _data(record(i, tag))
        if bad:
            yield bad.pop(0)
    yield from bad


def _int(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _count(params: dict[str, Any]) -> int:
    return _int(params, "n", _int(params, "credits", _int(params, "count", 0)))
