"""Event fan-out: many SSE subscribers on raw sockets in one process, writes at a fixed rate."""

from __future__ import annotations

import re
import selectors
import socket
import statistics
import threading
import time
from datetime import datetime
from typing import Any

import requests

_CREATED = re.compile(rb'data: \{[^\n]*?"created_at":"([0-9T:.\-]+)Z"')


def open_stream(port: int, api_key: str) -> socket.socket:
    """Open one SSE stream and return its socket once the headers arrived."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        f"GET /api/events/object_created HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api_key}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("stream closed during headers")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head[:200].decode(errors="replace"))
    sock.setblocking(False)
    return sock


class Receiver:
    """Reads every stream, timing each object_created frame against its created_at."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        self.selector = selectors.DefaultSelector()
        self.buffers: dict[socket.socket, bytes] = {}
        for sock in sockets:
            self.selector.register(sock, selectors.EVENT_READ)
            self.buffers[sock] = b""
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                self._read(key.fileobj)  # type: ignore[arg-type]

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        now = time.time()
        buffer = self.buffers[sock] + data
        cut = buffer.rfind(b"\n\n")
        if cut >= 0:
            for match in _CREATED.finditer(buffer, 0, cut):
                sent = datetime.fromisoformat(match.group(1).decode() + "+00:00").timestamp()
                self.latencies.append(now - sent)
            buffer = buffer[cut + 2 :]
        self.buffers[sock] = buffer

    def stop(self) -> None:
        """Stop reading and close every socket."""
        self._stop.set()
        self.thread.join()
        for sock in self.buffers:
            self.selector.unregister(sock)
            sock.close()
        self.selector.close()


def write_at_rate(base_url: str, writers: list[tuple[str, str]], rate: float, seconds: float) -> int:
    """PUT small objects at `rate` per second, round-robin over (api_key, key_id) pairs."""
    sessions = [requests.Session() for _ in writers]
    sent, start = 0, time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            index = sent % len(writers)
            api_key, key_id = writers[index]
            sessions[index].put(
                base_url + "/api/objects",
                json={"keyId": key_id, "content": "00" * 64, "authTag": "11" * 16},
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=30,
            ).raise_for_status()
            sent += 1
            time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    finally:
        for session in sessions:
            session.close()
    return sent


def summarize(latencies: list[float], expected: int) -> dict[str, Any]:
    """p50/p99 delivery latency in ms and how many deliveries arrived."""
    if len(latencies) < 2:
        return {"delivered": len(latencies), "expected": expected, "p50_ms": None, "p99_ms": None}
    q = statistics.quantiles(latencies, n=100)
    return {
        "delivered": len(latencies),
        "expected": expected,
        "p50_ms": round(q[49] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
    }
