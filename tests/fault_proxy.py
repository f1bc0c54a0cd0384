"""A TCP proxy in front of one engine (PostgreSQL, Redis, S3) that a test can cut and restore.

Cut: every open connection is reset and each new one is closed as soon as it is accepted,
which is what a client sees while a server restarts or a network link is down. Restored:
new connections reach the engine again (open ones stay gone, as after a real restart).
"""

from __future__ import annotations

import socket
import struct
import threading

from .cluster import _close_listener, _pipe
from .support import free_port


class FaultProxy:
    """Listens on a free loopback port and pipes each connection to `host:port` unless cut."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)

    def start(self) -> FaultProxy:
        """Start accepting."""
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), name="fault-proxy-pipe", daemon=True).start()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until `restore`."""
        self._cut.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _reset(sock)

    def restore(self) -> None:
        """Let new connections through again."""
        self._cut.clear()

    def stop(self) -> None:
        """Stop accepting and cut everything."""
        self._stopped.set()
        self.cut()
        _close_listener(self._listener)
        self._thread.join(timeout=5)


def _reset(sock: socket.socket) -> None:
    """Hang up at once (SO_LINGER 0: nothing queued is delivered), waking the pipe thread blocked on it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
