"""A round-robin TCP proxy for tests: each new client connection goes to the next backend in turn."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from .support import free_port


class RoundRobinProxy:
    """Listens on a free loopback port and pipes each accepted connection to the next of `backends()`.

    `backends` is called per connection, so a test can restart a node on a new port.
    """

    def __init__(self, backends: Callable[[], list[int]]) -> None:
        self.backends = backends
        self.port = free_port()
        self.served: list[int] = []  # the backend port of each connection, in order
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="test-proxy", daemon=True)

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RoundRobinProxy:
        """Start accepting."""
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                ports = self.backends()
                port = ports[len(self.served) % len(ports)]
                self.served.append(port)
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                client.close()  # a dead node: the client sees a reset, as behind a real balancer
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), name="test-proxy-pipe", daemon=True).start()

    def stop(self) -> None:
        """Stop accepting and cut every connection."""
        self._stopped.set()
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._thread.join(timeout=5)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
