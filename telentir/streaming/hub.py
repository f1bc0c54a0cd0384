"""One pair of threads per process that serves every live SSE stream, instead of a thread each.

A stream is opened, checked and replayed by its request thread as before; then it is handed
to the hub and its thread parks until the stream ends. The hub's broker thread holds one
subscription for the whole process (`*`) and notes which (type, user) each doorbell rang;
its writer thread reads the new rows once per (type, user) (streams.RecentReads), and writes
each stream's frames straight to its socket without blocking, one write per stream per
round. A thousand streams of one user then cost one read and a thousand `send` calls per
event, not a thousand thread wake-ups queueing for the GIL (bench/RESULTS.md).

Nothing changes on the wire: gunicorn has sent the headers and the replay, and the hub
frames its bytes as gunicorn would (chunked for HTTP/1.1). When the stream ends the parked
thread returns and gunicorn finishes the response. A slow client's bytes wait in a bounded
backlog; past it the stream ends and the client resumes with Last-Event-ID.

A stream ends with its credential (feed.StreamGuard): a revocation record read with a
round's rows cuts the streams it names right before it, a revocation's doorbell rings every
stream of its user, expiries are timers of the writer thread, and a heartbeat asks the
database once per credential.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import EngineUnavailable
from ..pubsub import BrokerError, BrokerUnavailable, PubSub
from ..runtime import Runtime
from ..services import credentials
from ..services.events import EVENT_TYPES, REVOKED
from ..storage import health as engine_health
from . import feed as streams
from .feed import BROKER_ENGINE, close_quietly
from .frames import Batch, encode_batch, sse_frame
from .sockets import drain, event_loop_worker, peek_hangup

_OK_AFTER_CONFIRMED = engine_health.QUIET_SECONDS + 1  # seconds an empty read still counts as an answer

log = logging.getLogger(__name__)
MAX_BACKLOG_BYTES = 4 * 2**20
SUBSCRIBE_SECONDS = 5.0
RESUBSCRIBE_PAUSE_SECONDS = 0.5
# With no stream for this long the hub gives its subscription to the in-process broker up (and
# takes it again for the next stream): a worker with nothing subscribed is not rung by the
# box's other workers (pubsub/peers.py). On Redis it keeps it (a subscription there costs the
# worker every doorbell of the deployment; giving it up too is left for a later change).
IDLE_RELEASE_SECONDS = 30.0


class HubStream:
    """One stream the hub serves: its request, credential guard, cursor, socket and unsent bytes."""

    def __init__(
        self,
        req: streams.FeedRequest,
        guard: streams.StreamGuard,
        sock: socket.socket,
        chunked: bool,
        last: int,
        heartbeat: float,
    ) -> None:
        self.req, self.guard, self.sock, self.chunked, self.last = req, guard, sock, chunked, last
        self.key = (req.event_type, req.user_id)
        self.pending: int | None = sys.maxsize  # read the table once attached: nothing is missed
        self.next_beat = time.monotonic() + heartbeat
        self.expires = time.monotonic() + guard.seconds_left()  # inf for an API key
        self.backlog = bytearray()
        self.watch_reads = True
        self.done = threading.Event()


class SSEHub:
    """The process's stream hub; `attach` hands it a replayed stream and waits for its end."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.heartbeat = rt.config.sse_heartbeat_seconds
        self.ready = threading.Event()  # set while the broker subscription is confirmed
        self._closed = threading.Event()
        self._wanted = threading.Event()  # set while the hub should hold a subscription
        self._wanted.set()
        self._release = threading.Event()  # the writer found the hub idle: the broker thread unsubscribes
        self._attaching = 0  # handoffs that found the hub ready and have not queued their stream yet
        self._idle_since = time.monotonic()
        self._lock = threading.Lock()
        self._rung: dict[tuple[str, str], int] = {}
        self._rung_all = False
        self._lost = False
        self._incoming: queue.SimpleQueue[HubStream] = queue.SimpleQueue()
        self._streams: dict[tuple[str, str], set[HubStream]] = {}
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._threads = [
            threading.Thread(target=self._broker_loop, name="telentir-sse-hub-broker", daemon=True),
            threading.Thread(target=self._writer_loop, name="telentir-sse-hub-writer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # --- request threads --------------------------------------------------------------

    def reserve(self) -> bool:
        """Whether the hub can take a stream now (then `attach` it); if not, it subscribes for the next try."""
        with self._lock:
            if self.ready.is_set():
                self._attaching += 1  # the hub keeps its subscription until this stream is queued
                return True
            self._wanted.set()
            return False

    def attach(
        self, req: streams.FeedRequest, guard: streams.StreamGuard, sock: socket.socket, chunked: bool, last: int
    ) -> None:
        """Serve a stream `reserve` made room for; returns once it ended (client gone, credential over, hub closed)."""
        stream = HubStream(req, guard, sock, chunked, last, self.heartbeat)
        with self._lock:
            self._incoming.put(stream)
            self._attaching -= 1
        self._wake()
        while not stream.done.wait(timeout=1.0):
            if not self._threads[1].is_alive():
                return  # the writer stopped before taking it: end the response, the client resumes

    @property
    def alive(self) -> bool:
        """Whether the writer thread still serves streams."""
        return self._threads[1].is_alive() and not self._closed.is_set()

    def close(self) -> None:
        """End every stream and stop both threads (once; later calls do nothing)."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
        self._wanted.set()  # the broker thread may be waiting to be wanted: let it see the close
        self._wake()
        for thread in self._threads:
            thread.join(timeout=5)
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is already pending) or closed

    # --- broker thread ------------------------------------------------------------------

    def _broker_loop(self) -> None:
        while not self._closed.is_set():
            self._wanted.wait()
            if self._closed.is_set():
                return
            # A release asked for while the last subscription broke instead is void: this one is new
            # (and `ready` is clear, so the writer asks for no other until it is confirmed).
            self._release.clear()
            pubsub: PubSub | None = None
            released = False
            try:
                pubsub = self.rt.broker.pubsub()
                released = self._follow_broker(pubsub)
            except BrokerError as exc:
                closing = self._closed.is_set()
                if not closing and self.rt.broker.in_process:
                    # No outage (this broker cannot be away): it dropped a subscriber that fell behind.
                    log.warning("stream hub lost its subscription (%s); its streams end and clients resume", exc)
                elif not closing:
                    # The health record logs the outage once and its end once, and counts every try.
                    self.rt.health.failed(BROKER_ENGINE, str(exc))
            finally:
                self.ready.clear()
                if pubsub is not None:
                    close_quietly(pubsub)
            if not released and not self._closed.is_set():
                # Streams attached meanwhile would miss doorbells: end them all, as a stream
                # served by its own thread ends when its subscription breaks.
                with self._lock:
                    self._lost = True
                self._wake()
                self._closed.wait(RESUBSCRIBE_PAUSE_SECONDS)

    def _follow_broker(self, pubsub: PubSub) -> bool:
        """Note every doorbell until the hub closes (False) or, idle, gives its subscription up (True)."""
        pubsub.psubscribe("*")
        deadline, confirmed_at = time.monotonic() + SUBSCRIBE_SECONDS, float("-inf")
        while not self._closed.is_set():
            if self._release.is_set():
                return True
            message = pubsub.get_message(timeout=0.5)
            if message is None:
                if not self.ready.is_set() and time.monotonic() > deadline:
                    raise BrokerUnavailable(f"no subscription confirmation within {SUBSCRIBE_SECONDS:g} s")
            elif message["type"] == "psubscribe":
                # Confirmed (again, after redis-py reconnected): doorbells may have been missed.
                with self._lock:
                    if not self._release.is_set():  # not while giving the subscription up
                        self.ready.set()
                confirmed_at = time.monotonic()
                self._ring_all()
            elif message["type"] == "pmessage":
                self._note(message["channel"], message["data"])
            if self.ready.is_set() and (message is not None or time.monotonic() - confirmed_at < _OK_AFTER_CONFIRMED):
                # The broker answers: it sent something, or confirmed the subscription lately. Said
                # for a while after the confirmation too, as an outage's record ends only at a
                # success QUIET_SECONDS after its last failure. Not at every empty read: a
                # half-open connection reads empty for minutes while others find Redis away.
                self.rt.health.ok(BROKER_ENGINE)
        return False

    def _note(self, channel: str, data: str) -> None:
        event_type, _, rest = channel.partition(":")
        user_id = rest.partition(":")[0]
        try:
            event_id = int(json.loads(data)["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("stream hub ignored a message on %s that is not a doorbell", channel)
            return
        with self._lock:
            key = (event_type, user_id)
            self._rung[key] = max(self._rung.get(key, 0), event_id)
        self._wake()

    def _ring_all(self) -> None:
        with self._lock:
            self._rung_all = True
        self._wake()

    # --- writer thread ------------------------------------------------------------------

    def _writer_loop(self) -> None:
        try:
            while not self._closed.is_set():
                for key, mask in self._selector.select(timeout=self._until_next_beat()):
                    if key.fileobj == self._wake_r:
                        drain(self._wake_r)
                    else:
                        self._on_socket(key.data, mask)
                self._round()
        except Exception:
            log.exception("stream hub failed; its streams end and clients resume")
        finally:
            for group in list(self._streams.values()):
                for stream in list(group):
                    self._end(stream)
            while not self._incoming.empty():
                self._incoming.get().done.set()

    def _until_next_beat(self) -> float:
        """Seconds until the next heartbeat or credential expiry is due (at most 1)."""
        due = [min(s.next_beat, s.expires) for group in self._streams.values() for s in group]
        return max(0.0, min([1.0, *(moment - time.monotonic() for moment in due)]))

    def _round(self) -> None:
        """Take new streams, end all if the broker was lost, deliver what rang, send heartbeats."""
        while not self._incoming.empty():
            self._add(self._incoming.get())
        self._release_if_idle()
        with self._lock:
            rung, self._rung = self._rung, {}
            rung_all, self._rung_all = self._rung_all, False
            lost, self._lost = self._lost, False
        if lost:
            for group in list(self._streams.values()):
                for stream in list(group):
                    self._end(stream)
            return
        for key, event_id in rung.items():
            for stream in self._rung_streams(key):
                stream.pending = max(stream.pending or 0, event_id)
        now, batches, checked = time.monotonic(), dict[Any, Batch](), dict[str, str | None]()
        for group in list(self._streams.values()):
            for stream in list(group):
                if rung_all:
                    stream.pending = sys.maxsize
                try:
                    if now >= stream.expires:
                        self._end_ended(stream, "token_expired")
                    elif stream.pending is not None:
                        self._deliver(stream, stream.pending, batches)
                    elif now >= stream.next_beat and self._still_valid(stream, checked):
                        self._deliver(stream, None, {}, heartbeat=True)
                except EngineUnavailable as exc:
                    # The database is away (logged once by the storage layer): the stream ends and
                    # its client resumes from Last-Event-ID once it is back.
                    log.info("event stream of %s ended: %s", stream.req.user_id, exc.message)
                    self._end(stream)
                except Exception:
                    # One stream's failure (a read error) ends that stream, not the hub.
                    log.exception("event stream of %s failed; it ends and the client resumes", stream.req.user_id)
                    self._end(stream)

    def _release_if_idle(self) -> None:
        """With no stream for IDLE_RELEASE_SECONDS, have the broker thread give the subscription up."""
        if self._streams or not self.rt.broker.in_process:
            self._idle_since = time.monotonic()
            return
        if not self.ready.is_set() or time.monotonic() - self._idle_since < IDLE_RELEASE_SECONDS:
            return
        with self._lock:
            # A stream reserved meanwhile keeps the subscription; from here no handoff finds the hub ready.
            if self._attaching or not self._incoming.empty():
                return
            self.ready.clear()
            self._wanted.clear()
            self._release.set()

    def _rung_streams(self, key: tuple[str, str]) -> list[HubStream]:
        """The streams a doorbell on (type, user) concerns: a revocation's concerns every stream of the user."""
        event_type, user_id = key
        types = EVENT_TYPES if event_type == REVOKED else (event_type,)
        return [stream for t in types for stream in self._streams.get((t, user_id), ())]

    def _still_valid(self, stream: HubStream, checked: dict[str, str | None]) -> bool:
        """Ask the database after the stream's credential, once per credential a round; end the stream if it ended."""
        credential = stream.guard.credential
        if credential.id not in checked:
            checked[credential.id] = credentials.why_ended(self.rt, credential)
        if (reason := checked[credential.id]) is None:
            return True
        self._end_ended(stream, reason)
        return False

    def _end_ended(self, stream: HubStream, reason: str) -> None:
        """End a stream whose credential was revoked or expired."""
        stream.guard.ended = reason
        log.info("event stream of %s ended: %s", stream.req.user_id, reason)
        self._end(stream)

    def _add(self, stream: HubStream) -> None:
        try:
            self._selector.register(stream.sock, selectors.EVENT_READ, stream)
        except (ValueError, OSError):  # the socket is already closed
            stream.done.set()
            return
        self._streams.setdefault(stream.key, set()).add(stream)

    def _deliver(self, stream: HubStream, rung: int | None, batches: dict[Any, Batch], heartbeat: bool = False) -> None:
        """Send the stream what it has not had up to `rung` (None: read the table afresh)."""
        stream.pending = None
        # Streams of one user on one cursor and filter get the very same bytes: encode once a round.
        batch_key = (stream.key, stream.req.pattern, stream.last, rung)
        if (batch := batches.get(batch_key)) is None:
            batch = batches[batch_key] = encode_batch(*streams.events_after(self.rt, stream.req, stream.last, rung))
        data, stream.last, cuts = batch
        if (cut := cuts.get(stream.guard.credential.id)) is not None:
            # Its credential was revoked: what was committed before goes out, then the stream ends.
            if cut:
                self._send(stream, data[:cut])
            self._end_ended(stream, "credential_revoked")
            return
        if heartbeat:
            data += sse_frame(streams.Item("heartbeat")).encode()
            stream.next_beat = time.monotonic() + self.heartbeat
        if data:
            self._send(stream, data)

    def _send(self, stream: HubStream, data: bytes) -> None:
        if stream.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        if stream.backlog:
            stream.backlog += data  # behind already: keep the order, flush when writable
        else:
            if (sent := self._write(stream, data)) is None:
                return
            stream.backlog += data[sent:]
        if len(stream.backlog) > MAX_BACKLOG_BYTES:
            log.info(
                "event stream of %s ended: the client fell %d bytes behind", stream.req.user_id, len(stream.backlog)
            )
            self.rt.metrics.hub_backlog_cut()
            self._end(stream, cut=True)
        elif stream.backlog:
            self._watch(stream)

    def _on_socket(self, stream: HubStream, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            hung_up = peek_hangup(stream.sock)
            if hung_up:
                self._end(stream)
                return
            if hung_up is None:
                stream.watch_reads = False  # an SSE client has nothing to say; a send failure will tell
        if mask & selectors.EVENT_WRITE and stream.backlog:
            if (sent := self._write(stream, stream.backlog)) is None:
                return
            del stream.backlog[:sent]
        self._watch(stream)

    def _write(self, stream: HubStream, data: bytes | bytearray) -> int | None:
        """What the socket takes now without waiting (0 when full); None once a broken stream is ended."""
        try:
            return stream.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        except OSError:
            self._end(stream)
            return None

    def _watch(self, stream: HubStream) -> None:
        """Watch the socket for a hang-up (unless the client talks) and, with a backlog, for room."""
        mask = (selectors.EVENT_READ if stream.watch_reads else 0) | (selectors.EVENT_WRITE if stream.backlog else 0)
        try:
            if stream.sock in self._selector.get_map():
                if mask:
                    self._selector.modify(stream.sock, mask, stream)
                else:
                    self._selector.unregister(stream.sock)
            elif mask:
                self._selector.register(stream.sock, mask, stream)
        except (KeyError, ValueError, OSError):
            pass  # the socket closed meanwhile: the next write ends the stream

    def _end(self, stream: HubStream, cut: bool = False) -> None:
        """Stop serving `stream` and let its request thread finish the response."""
        group = self._streams.get(stream.key)
        if group is not None:
            group.discard(stream)
            if not group:
                del self._streams[stream.key]
        try:
            self._selector.unregister(stream.sock)
        except (KeyError, ValueError, OSError):
            pass
        if cut or stream.backlog:
            # Unsent bytes would sit between our frames and gunicorn's last chunk: cut the
            # connection instead, so the client reconnects and resumes from its Last-Event-ID.
            try:
                stream.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        stream.done.set()


def hub_for(rt: Runtime) -> SSEHub:
    """The process's hub, started on first use (and again if it stopped)."""
    with rt.hub_lock:
        hub = rt.sse_hub
        if hub is None or not hub.alive:
            if hub is not None:
                hub.close()
            hub = rt.sse_hub = SSEHub(rt)
            rt.closers.append(hub.close)
        return hub


def handoff_for(rt: Runtime, environ: dict[str, Any]) -> streams.Handoff | None:
    """How a replayed SSE stream is handed to the hub, or None to follow it in its own thread.

    The hub needs the connection itself, which gunicorn passes as `gunicorn.socket`; the Flask
    test client and development server have none. gunicorn frames a response chunked when
    the client speaks HTTP/1.1 and the answer has no length, as a stream never has.
    """
    sock = environ.get("gunicorn.socket")
    # Under gevent a waiting stream is a cheap greenlet already, and the hub's non-blocking
    # socket calls would wait on gevent's sockets: it serves gthread workers only.
    if sock is None or not rt.config.sse_hub or event_loop_worker() or environ.get("REQUEST_METHOD") != "GET":
        return None
    chunked = environ.get("SERVER_PROTOCOL") == "HTTP/1.1"

    def handoff(req: streams.FeedRequest, guard: streams.StreamGuard, last: int, release: Callable[[], None]) -> bool:
        hub = hub_for(rt)
        if not hub.reserve():
            # No broker subscription yet (a process's first stream, the first after an idle
            # spell, a broker away): the stream follows in its own thread meanwhile,
            # heartbeats included, and asks again.
            return False
        release()  # the hub's subscription covers this stream from here on
        hub.attach(req, guard, sock, chunked, last)
        return True

    return handoff
