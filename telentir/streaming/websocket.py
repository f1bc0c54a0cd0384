"""The event WebSocket's connection: simple-websocket, bounded so a client can make it hold nothing.

The mirror only sends. What a client sends is read as it arrives and dropped, a piece at a
time, so nothing accumulates however much it sends (simple-websocket alone queues every
message for a `receive()` the mirror never calls). A message longer than
MAX_CLIENT_MESSAGE_BYTES closes the socket with 1009 (message too big) as soon as its
length passes the limit, compressed or not: permessage-deflate is inflated with a ceiling
(`BoundedDeflate`), so a small compressed message that would inflate to gigabytes is cut
after the limit's worth of output, never inflated whole.
"""

from __future__ import annotations

import socket
import time
import zlib
from collections.abc import Callable
from typing import Any

from simple_websocket import Server
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

MAX_CLIENT_MESSAGE_BYTES = 64 * 1024  # docs/protocol.md: the mirror reads at most a small message
TOO_BIG_MESSAGE = "Message is too big"  # the reason of every 1009 close, plain or compressed
LIMIT_NAME = "websocket_message_bytes"  # the `limit` label of telentir_limit_refusals_total
RECEIVE_BYTES = 16 * 1024  # one read from the socket (simple-websocket's default is 4 KiB)
# After refusing a message, the rest of it is read and dropped for this long (or until the
# client closes), so the close frame reaches a client still sending instead of a reset.
LINGER_SECONDS = 5.0


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that inflates a client's message to at most `limit` bytes.

    wsproto inflates each piece of a frame whole: one 16 KiB read of a deflate bomb would
    become 16 MB in memory at once. Here every piece is inflated with `max_length`, and a
    message whose output passes the limit is refused (wsproto turns the returned reason
    into a close with that code) with at most `limit + 1` bytes ever produced.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.inflated = 0  # bytes of the current message inflated so far
        self.refused = False  # a message was refused for its inflated size

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        """A piece of a frame's payload: inflated within the message's remaining room."""
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        """The end of a frame: at a message's end, the deflate tail, within the same room."""
        if not fin:
            return None
        if not self._inbound_is_compressible or not self._inbound_compressed:
            self._inbound_compressed = None
            return None
        tail = self._inflate(b"\x00\x00\xff\xff")  # RFC 7692 §7.2.2: the stripped sync-flush marker
        if isinstance(tail, CloseReason):
            return tail
        no_context_takeover = self.server_no_context_takeover if proto.client else self.client_no_context_takeover
        if no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        self.inflated = 0
        return tail

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        assert self._decompressor is not None
        room = self.limit - self.inflated  # never negative: a message past the limit ends the socket
        try:
            out = self._decompressor.decompress(data, room + 1)  # one byte more says "too big"
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self.inflated += len(out)
        if self.inflated > self.limit or self._decompressor.unconsumed_tail:
            self.refused = True
            return CloseReason.MESSAGE_TOO_BIG
        return out


class EventSocket(Server):
    """The server side of one event WebSocket: sends events, reads and drops what the client sends.

    `on_refused` is called once when a message is refused for its size (the metric).
    """

    def __init__(
        self,
        environ: dict[str, Any],
        ping_interval: float | None,
        on_refused: Callable[[], None],
        max_message_bytes: int = MAX_CLIENT_MESSAGE_BYTES,
    ) -> None:
        # Set before the base class runs: its constructor performs the handshake.
        self.max_message_bytes = max_message_bytes
        self.on_refused = on_refused
        self.deflate = BoundedDeflate(max_message_bytes)
        self.message_bytes = 0  # bytes of the client's current message read so far
        self.refused = False
        super().__init__(environ, receive_bytes=RECEIVE_BYTES, ping_interval=ping_interval)

    def receive(self, timeout: float | None = None) -> None:
        """Nothing is ever kept to receive: the mirror drops what the client sends."""
        raise NotImplementedError("the event WebSocket drops what the client sends")

    def _handle_events(self) -> bool:
        """Answer the protocol's events from one read; False once the connection is closing.

        simple-websocket's own version, less the message queue: a message is counted and
        dropped, and closes the socket with 1009 once it passes the limit.
        """
        out = b""
        keep_going = True
        for event in self.ws.events():
            try:
                reply, keep_going = self._answer(event)
            except LocalProtocolError:  # the connection is closing already: nothing more to send
                out, reply, keep_going = b"", b"", False
            out += reply
            if not keep_going:
                break
        if out:
            self.sock.sendall(out)
        if not keep_going:
            self.connected = False
            self.event.set()
            if self.refused:
                self._linger()
        return keep_going

    def _answer(self, event: Any) -> tuple[bytes, bool]:
        """What to send for one event, and whether the connection stays open."""
        if isinstance(event, Request):
            self.subprotocol = self.choose_subprotocol(event)
            return self.ws.send(AcceptConnection(subprotocol=self.subprotocol, extensions=[self.deflate])), True
        if isinstance(event, CloseConnection):
            # The client's close, or one wsproto made of a frame it could not take (an
            # inflation past the limit among them): answered with the same code.
            self.close_reason, self.close_message = event.code, event.reason
            if self.deflate.refused:
                self._refused()
                # wsproto names its own close "error in extension": say what it was, as for a plain message.
                return self.ws.send(CloseConnection(CloseReason.MESSAGE_TOO_BIG, TOO_BIG_MESSAGE)), False
            return self.ws.send(event.response()), False
        if isinstance(event, Ping):
            return self.ws.send(event.response()), True
        if isinstance(event, Pong):
            self.pong_received = True
        elif isinstance(event, (TextMessage, BytesMessage)) and not self._count(event):
            self.close_reason = CloseReason.MESSAGE_TOO_BIG
            self._refused()
            return self.ws.send(CloseConnection(CloseReason.MESSAGE_TOO_BIG, TOO_BIG_MESSAGE)), False
        return b"", True

    def _count(self, event: TextMessage | BytesMessage) -> bool:
        """Count a piece of a message (and forget it); False if the message is now too big."""
        data = event.data
        self.message_bytes += len(data.encode()) if isinstance(data, str) else len(data)
        if self.message_bytes > self.max_message_bytes:
            return False
        if event.message_finished:
            self.message_bytes = 0
        return True

    def _refused(self) -> None:
        if not self.refused:
            self.refused = True
            self.on_refused()

    def _linger(self) -> None:
        """After a refusal: read and drop the rest for a while, so the client reads our close, not a reset.

        Closing a socket with unread bytes makes the kernel send a reset, which can destroy
        the close frame before the client reads it.
        """
        deadline = time.monotonic() + LINGER_SECONDS
        try:
            self.sock.shutdown(socket.SHUT_WR)
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                if not self.sock.recv(RECEIVE_BYTES):
                    return
        except OSError:  # timed out, or the client reset first: either way, done
            return


def wait_closed(ws: EventSocket, timeout: float = LINGER_SECONDS + 5) -> None:
    """Wait for the socket's reader (so a refusal's linger ends before the server closes the connection)."""
    ws.thread.join(timeout)
