"""The event WebSocket bounds what a client sends (issue 20): big or inflating messages close it with 1009.

Each test writes its frames itself on a raw socket (masked with a zero key, so the payload
goes out as given), compressed with permessage-deflate when it says so, against the real
server on both worker classes, and reads the worker's memory from /proc.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Ping, Request, TextMessage
from wsproto.extensions import PerMessageDeflate

from ..events_support import Account
from ..support import ServerProcess, running_server

LIMIT = 64 * 1024
MB = 1024 * 1024
RSS_MARGIN = 30 * MB  # a worker may grow by this much at most, whatever the client sent
METRICS_TOKEN = "ws-limits-metrics-token"


@pytest.fixture(scope="module", params=["gthread", "gevent"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One worker (so its memory is the one measured), metrics on.

    The heartbeat (the server's ping interval) is long: a test busy writing does not read,
    and a ping left unanswered for an interval closes the socket.
    """
    with running_server(
        tmp_path_factory,
        f"wslimits-{request.param}",
        workers=1,
        worker_class=request.param,
        TELENTIR_METRICS_TOKEN=METRICS_TOKEN,
        TELENTIR_SSE_HEARTBEAT_SECONDS="60",
    ) as srv:
        yield srv


# --- a WebSocket client writing its own frames ----------------------------------------------


class RawSocket:
    """A WebSocket client on a plain socket: wsproto does the handshake and reads; the test writes frames."""

    def __init__(self, base_url: str, credential: str, deflate: bool = True) -> None:
        url = urlsplit(base_url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        self.sock = socket.create_connection((host, port), timeout=30)
        self.conn = WSConnection(ConnectionType.CLIENT)
        handshake = Request(
            host=f"{host}:{port}",
            target="/api/ws/events/object_created",
            extensions=[PerMessageDeflate()] if deflate else [],
            extra_headers=[(b"authorization", f"Bearer {credential}".encode())],
        )
        self.sock.sendall(self.conn.send(handshake))
        accepted = self.next_event()
        assert isinstance(accepted, AcceptConnection), accepted
        self.deflate = any(isinstance(ext, PerMessageDeflate) for ext in accepted.extensions)
        self.pending: list[Event] = []

    def next_event(self, timeout: float = 30.0) -> Event:
        """The next protocol event from the server but pings (answered); fails on end of stream or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.conn.events():
                if not isinstance(event, Ping):
                    return event
                self.sock.sendall(self.conn.send(event.response()))
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            assert data, "the server closed the connection without a close frame"
            self.conn.receive_data(data)

    def send_frame(self, payload: bytes, opcode: int = 0x2, fin: bool = True, compressed: bool = False) -> None:
        """One masked frame (mask key zero: the payload is sent as is)."""
        first = (0x80 if fin else 0) | (0x40 if compressed else 0) | opcode
        size = len(payload)
        if size < 126:
            head = bytes([first, 0x80 | size])
        elif size < 1 << 16:
            head = bytes([first, 0x80 | 126]) + size.to_bytes(2, "big")
        else:
            head = bytes([first, 0x80 | 127]) + size.to_bytes(8, "big")
        self.sock.sendall(head + b"\0\0\0\0" + payload)

    def close_code(self, timeout: float = 30.0) -> int:
        """The code of the server's close frame, skipping any message before it."""
        return self.close_frame(timeout)[0]

    def close_frame(self, timeout: float = 30.0) -> tuple[int, str]:
        """The code and reason of the server's close frame, skipping any message before it."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(0.1, deadline - time.monotonic()))
            if isinstance(event, CloseConnection):
                return int(event.code), str(event.reason)

    def close(self) -> None:
        self.sock.close()


def sending(action: Callable[[], None]) -> threading.Thread:
    """Run `action` (a large send) in the background: the server answers while the client still writes."""

    def run() -> None:
        try:
            action()
        except OSError:
            pass  # the server closed first: what the test checks is its close frame

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@cache
def deflated_zeros(size: int) -> bytes:
    """`size` zero bytes as one permessage-deflate payload (raw deflate, sync-flushed, tail stripped)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(MB)
    parts = [compressor.compress(block[: min(MB, size - done)]) for done in range(0, size, MB)]
    data = b"".join(parts) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


# --- the worker's memory and the metric --------------------------------------------------------


def worker(server: ServerProcess) -> int:
    (pid,) = server.worker_pids()
    return pid


def memory(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the peak so far) of a process, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {name: int(re.search(rf"^{name}:\s+(\d+) kB", status, re.M)[1]) * 1024 for name in ("VmRSS", "VmHWM")}  # type: ignore[index]


def refusals(server: ServerProcess) -> float:
    """telentir_limit_refusals_total{limit="websocket_message_bytes"} as /metrics shows it."""
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    text = requests.get(server.url + "/metrics", headers=headers, timeout=10).text
    match = re.search(r'^telentir_limit_refusals_total\{limit="websocket_message_bytes"\} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


def assert_flat(server: ServerProcess, before: dict[str, int]) -> dict[str, int]:
    """Neither the worker's memory now nor its peak grew by RSS_MARGIN or more; the figures, for the record."""
    after = memory(worker(server))
    grown = {name: after[name] - before[name] for name in after}
    print(f"worker memory before {before}, after {after}, grown {grown}")
    assert grown["VmRSS"] < RSS_MARGIN and grown["VmHWM"] < RSS_MARGIN, grown
    return grown


# --- the tests ------------------------------------------------------------------------------------


def test_permessage_deflate_is_negotiated(server: ServerProcess, new_account: Callable[[], Account]) -> None:
    """The bomb tests below mean something only if the server accepts compressed messages."""
    ws = RawSocket(server.url, new_account().key)
    try:
        assert ws.deflate
    finally:
        ws.close()


@pytest.mark.parametrize("pieces", [1, 256], ids=["one-frame", "fragmented"])
def test_a_4_mib_message_closes_the_socket_with_1009_and_the_worker_stays_flat(
    server: ServerProcess, new_account: Callable[[], Account], pieces: int
) -> None:
    ws = RawSocket(server.url, new_account().key)
    counted = refusals(server)
    before = memory(worker(server))
    piece = bytes(4 * MB // pieces)

    def send() -> None:
        for i in range(pieces):
            ws.send_frame(piece, opcode=0x2 if i == 0 else 0x0, fin=i == pieces - 1)

    writer = sending(send)
    try:
        assert ws.close_code() == 1009
    finally:
        writer.join(timeout=30)
        ws.close()
    assert_flat(server, before)
    assert refusals(server) == counted + 1


def test_a_deflate_bomb_is_cut_while_inflating(server: ServerProcess, new_account: Callable[[], Account]) -> None:
    """~250 KB that would inflate to 256 MiB: refused after 64 KiB of output, the worker's peak memory flat."""
    bomb = deflated_zeros(256 * MB)
    assert len(bomb) < 300_000
    ws = RawSocket(server.url, new_account().key)
    counted = refusals(server)
    before = memory(worker(server))
    writer = sending(lambda: ws.send_frame(bomb, compressed=True))
    try:
        assert ws.close_frame() == (1009, "Message is too big")  # the same reason as a plain message's
    finally:
        writer.join(timeout=30)
        ws.close()
    assert_flat(server, before)
    assert refusals(server) == counted + 1


def test_a_message_of_exactly_the_limit_is_read_and_dropped(
    server: ServerProcess, new_account: Callable[[], Account]
) -> None:
    """The limit itself is allowed, plain or compressed; one byte more is not."""
    alice = new_account()
    ws = RawSocket(server.url, alice.key)
    try:
        ws.send_frame(bytes(LIMIT))
        ws.send_frame(deflated_zeros(LIMIT), compressed=True)
        alice.writes.object(alice.writes.key(), content="c0ffee")
        assert isinstance(ws.next_event(), TextMessage)  # still open: the event arrives
        ws.send_frame(deflated_zeros(LIMIT + 1), compressed=True)
        assert ws.close_code() == 1009
    finally:
        ws.close()


def test_many_small_messages_keep_the_socket_open_and_the_worker_flat(
    server: ServerProcess, new_account: Callable[[], Account]
) -> None:
    """64 MiB of plain messages and 30 MiB of compressed ones, each under the limit: nothing is kept."""
    alice = new_account()
    ws = RawSocket(server.url, alice.key)
    before = memory(worker(server))
    small = deflated_zeros(60 * 1024)
    try:
        for _ in range(2048):
            ws.send_frame(bytes(32 * 1024))
        for _ in range(512):  # one inflater for the whole connection: each message starts its count again
            ws.send_frame(small, compressed=True)
        alice.writes.object(alice.writes.key(), content="c0ffee")
        event = ws.next_event()
        assert isinstance(event, TextMessage) and '"object_created"' in event.data
    finally:
        ws.close()
    assert_flat(server, before)
