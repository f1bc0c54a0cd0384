"""The default worker: gunicorn's thread worker with JSON error answers, taking a request only once it is in.

gunicorn's gthread worker hands a connection to a thread as soon as it is readable, and
the thread then blocks reading the rest of the request: a few hundred clients sending
their headers slowly took every thread, and `/healthz` timed out. Here the worker's main
loop (its selector, which waits on every connection at once) reads each connection's
request head without blocking, up to the blank line that ends it, and then the beginning
of its body (up to BODY_READ_FIRST of its Content-Length: a small body whole); only then
does a thread take the connection, the bytes read put back in front of its parser. So a
slow or silent client holds a socket and a buffer, never a thread:

- a request not in within TELENTIR_HEADER_TIMEOUT_SECONDS (from the connection's accept,
  or from the first byte of a kept-alive connection's next request) is answered 408
  `request_timeout` and the connection closed;
- a head longer than gunicorn would ever parse is answered 431 at once;
- a client that leaves before its head is complete is forgotten; one that half-closes
  inside its body is handed on, and its short body answered 400 (telentir/body.py).

A refused connection is half-closed and read (dropped) for a moment before it is closed,
so the answer reaches a client that is still sending instead of being lost to a reset.
With TLS terminated by gunicorn itself (or HTTP/2 prior knowledge) the bytes cannot be
read ahead: gunicorn's own handling applies; TLS belongs in the proxy (docs/deploy.md).
"""

from __future__ import annotations

import re
import selectors
import socket
import time
from functools import cached_property, partial
from typing import Any

from gunicorn.http.errors import LimitRequestHeaders
from gunicorn.http.message import DEFAULT_MAX_HEADERFIELD_SIZE, MAX_HEADERS, MAX_REQUEST_LINE
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER
from gunicorn.workers.gthread import ThreadWorker as GunicornThreadWorker

from . import HeaderTimeout, JsonErrorPages, StopsJobs, count_header_timeout, header_timeout, send_error

HEAD_READ = 64 * 1024  # bytes read from a connection per readiness
ACCEPT_PAUSE_SECONDS = 0.002  # after each accept, with several workers (see ThreadWorker.accept)
# ... unless the worker already waits on this many request heads: a flood of connections that
# hold no thread, accepted at once so that the requests queued behind it are reached.
ACCEPT_FLOOD_HEADS = 32
REFUSED_LINGER_SECONDS = 2.0  # how long a refused connection's input is read and dropped (gunicorn's own linger)
_HEAD_END = b"\r\n\r\n"
_BARE_LF = re.compile(rb"(?<!\r)\n")  # gunicorn refuses a head with one at once: no need to wait for more
_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*([0-9]{1,18})[ \t]*\r$", re.I | re.M)
_TRANSFER_ENCODING_OR_EXPECT = re.compile(rb"^(?:transfer-encoding|expect)[ \t]*:", re.I | re.M)
# A body is read this far by the main loop too (a small one whole): a client that stops
# sending its body holds no thread either. A larger body is read on by its thread.
BODY_READ_FIRST = 64 * 1024


class _Head:
    """A connection's request while it arrives: the bytes so far, when they are enough, and the deadline."""

    __slots__ = ("conn", "data", "deadline", "wanted")

    def __init__(self, conn: Any, data: bytes, deadline: float) -> None:
        self.conn, self.data, self.deadline = conn, bytearray(data), deadline
        self.wanted = 0  # once the head is in: the bytes to hold before a thread takes the request


def body_to_read_first(head: bytes) -> int:
    """How much of the body to read before a thread takes the request: up to BODY_READ_FIRST of its Content-Length.

    Nothing for a chunked body, an `Expect` (the client waits for `100 Continue` before
    sending its body) or a Content-Length that is missing, repeated or not a number
    (gunicorn answers those itself).
    """
    if _TRANSFER_ENCODING_OR_EXPECT.search(head):
        return 0
    lengths = _CONTENT_LENGTH.findall(head)
    if len(lengths) != 1:
        return 0
    return min(int(lengths[0]), BODY_READ_FIRST)


class ThreadWorker(StopsJobs, JsonErrorPages, GunicornThreadWorker):
    """gthread: a pool of threads per worker process, fed only connections whose request head is complete."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Both in deadline order: every entry's deadline is its insertion time plus one constant.
        self.heads: dict[Any, _Head] = {}  # connection → its head so far
        self.refused: dict[Any, float] = {}  # connection answered by the worker → when to close it
        self._stop_capped = False
        self._accept_resumes = 0.0  # monotonic time an accept pause ends

    @cached_property
    def header_timeout(self) -> float:
        """TELENTIR_HEADER_TIMEOUT_SECONDS (read once the app is loaded)."""
        return header_timeout(self)

    @cached_property
    def head_limit(self) -> int:
        """The longest head gunicorn's parser accepts (request line plus header fields): past it, 431."""
        cfg = self.cfg
        line = 1024 * 1024 if cfg.limit_request_line == 0 else min(max(cfg.limit_request_line, 0), MAX_REQUEST_LINE)
        fields = cfg.limit_request_fields if 0 < cfg.limit_request_fields <= MAX_HEADERS else MAX_HEADERS
        field_size = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else DEFAULT_MAX_HEADERFIELD_SIZE
        return int(line + fields * (field_size + 2) + 4)

    def accept(self, listener: Any) -> None:
        """gunicorn's accept; with several workers, then a short pause in accepting (not in serving).

        Accepting costs this loop next to nothing now (no thread is woken), so without the
        pause one worker would take a whole burst of connections before the others woke up.
        gunicorn's gevent worker accepts one connection at a time with several workers, for
        the same reason. Meanwhile the loop goes on serving its connections.

        No pause while the worker waits on ACCEPT_FLOOD_HEADS request heads or more: that is
        a flood of connections (slow or silent clients), which holds no thread, so spreading
        it gains nothing, while pausing would keep every request queued behind it (a
        `/healthz` among them) waiting 2 ms per connection ahead of it: 600 took 0.6 to 1.7 s.
        Real requests complete their heads at once and never pile up here.
        """
        super().accept(listener)
        if self.cfg.workers > 1 and len(self.heads) < ACCEPT_FLOOD_HEADS:
            self._accept_resumes = time.monotonic() + ACCEPT_PAUSE_SECONDS
            self.set_accept_enabled(False)

    def set_accept_enabled(self, enabled: bool) -> None:
        """gunicorn's switch (its loop turns accepting back on at each turn), held off during a pause."""
        super().set_accept_enabled(enabled and time.monotonic() >= self._accept_resumes)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        """gunicorn's wait, cut short to end an accept pause on time."""
        pause_left = self._accept_resumes - time.monotonic()
        if pause_left > 0:
            timeout = min(timeout, pause_left)
        super().wait_for_and_dispatch_events(timeout)

    # --- handing connections to threads ---------------------------------------------------

    def enqueue_req(self, conn: Any) -> None:
        """gunicorn's way to a thread (new, kept-alive and read-ahead connections): wait for the head first."""
        if getattr(conn, "telentir_head", None) is not None or not self._reads_heads(conn):
            super().enqueue_req(conn)
            return
        buffered = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        head = _Head(conn, buffered, time.monotonic() + self.header_timeout)
        if not self._head_done(head, 0):
            conn.sock.setblocking(False)
            self.heads[conn] = head
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_bytes, head))

    def _reads_heads(self, conn: Any) -> bool:
        # TLS bytes are encrypted, and a prior-knowledge HTTP/2 preface is read by gunicorn itself.
        return not (self.cfg.is_ssl or conn.is_http2 or negotiation.prior_knowledge_allowed(self.cfg, conn.client))

    def _on_head_bytes(self, head: _Head, _sock: Any) -> None:
        """The connection is readable: take what arrived, and act once the head is complete."""
        conn = head.conn
        try:
            chunk = conn.sock.recv(HEAD_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            if head.wanted:  # the body ended early (a half-close): the app answers 400 to what came
                head.wanted = len(head.data)
                self._head_done(head, len(head.data))
                return
            self._forget_head(conn)  # the client left before finishing its request head
            self.nr_conns -= 1
            conn.close()
            return
        seen = len(head.data)
        head.data += chunk
        self._head_done(head, seen)

    def _head_done(self, head: _Head, seen: int) -> bool:
        """Hand the connection to a thread once its request is in, refuse it if its head is too long; False to wait on.

        "In" is the head and the beginning of the body (`body_to_read_first`). `seen` is how
        much of the buffer was searched before: only the new bytes (and the three before
        them, where a terminator may start) are searched again.
        """
        data = head.data
        if not head.wanted:
            end = data.find(_HEAD_END, max(0, seen - 3))
            if end >= 0:
                head.wanted = end + len(_HEAD_END) + body_to_read_first(bytes(data[: end + 2]))
            elif _BARE_LF.search(data, max(0, seen - 1)):
                head.wanted = len(data)  # malformed: gunicorn's parser refuses it at once
            elif len(data) > self.head_limit:
                self._forget_head(head.conn)
                exc = LimitRequestHeaders("max buffer headers")
                self._refuse(head.conn, 431, "Request Header Fields Too Large", exc)
                return True
        if not head.wanted or len(data) < head.wanted:
            return False
        self._forget_head(head.conn)
        head.conn.telentir_head = bytes(data)
        head.conn.data_ready = True  # gunicorn's thread must not wait for more before parsing
        super().enqueue_req(head.conn)
        return True

    def _forget_head(self, conn: Any) -> None:
        if self.heads.pop(conn, None) is not None:
            self._unregister(conn)

    def handle(self, conn: Any) -> Any:
        """In the thread: put the head read by the main loop back in front of the parser, then gunicorn's handling."""
        head = getattr(conn, "telentir_head", None)
        if head is not None:
            conn.telentir_head = None
            conn.sock.setblocking(True)
            conn.init()  # the parser, on the first request of the connection
            conn.parser.unreader.unread(head)
        return super().handle(conn)

    # --- deadlines ---------------------------------------------------------------------------

    def murder_pending(self) -> None:
        """gunicorn's timeouts, then ours (the main loop calls this at least once a second)."""
        super().murder_pending()
        now = time.monotonic()
        if not self.alive and not self._stop_capped:
            # A stopping worker waits for no head longer than for a kept-alive connection.
            self._stop_capped = True
            for head in self.heads.values():
                head.deadline = min(head.deadline, now + STOP_KEEPALIVE_LINGER)
        # Oldest first, stopping at the first still in time: the loop runs this often.
        while self.heads:
            conn, head = next(iter(self.heads.items()))
            if head.deadline > now:
                break
            self._forget_head(conn)
            count_header_timeout(self)
            self._refuse(conn, 408, "Request Timeout", HeaderTimeout(self.header_timeout))
        while self.refused:
            conn, deadline = next(iter(self.refused.items()))
            if deadline > now:
                break
            self._close(conn)

    # --- answering without a thread -------------------------------------------------------------

    def _refuse(self, conn: Any, status: int, reason: str, exc: BaseException) -> None:
        """Answer `status` from the main loop, half-close, and read what the client still sends for a moment."""
        send_error(conn.sock, status, reason, exc)
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_refused_bytes, conn))
        except (OSError, ValueError, KeyError):
            self.nr_conns -= 1
            conn.close()
            return
        self.refused[conn] = time.monotonic() + REFUSED_LINGER_SECONDS

    def _on_refused_bytes(self, conn: Any, _sock: Any) -> None:
        """Drop what a refused client sends; close once it has closed too."""
        try:
            if conn.sock.recv(HEAD_READ):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close(conn)

    def _close(self, conn: Any) -> None:
        if self.refused.pop(conn, None) is not None:
            self._unregister(conn)
            self.nr_conns -= 1
            conn.close()

    def _unregister(self, conn: Any) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass  # not registered (a head complete on arrival), or closed
