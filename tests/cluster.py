"""Several server nodes for tests: two `serve` processes on shared engines behind a round-robin TCP proxy."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

from .support import ServerProcess, free_port


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
        _close_listener(self._listener)
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._thread.join(timeout=5)


def _close_listener(listener: socket.socket) -> None:
    """Close a listening socket and wake the thread blocked in its accept(), which close() alone does not on Linux."""
    try:
        listener.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes until `source` ends; if `sink` goes away first, keep reading `source` and drop what comes.

    Draining is what a real balancer does when a server answers early and closes (a 413 before
    the body is read): the client finishes sending, then reads the answer, instead of being
    reset mid-send.
    """
    sink_open = True
    try:
        while data := source.recv(65536):
            if sink_open:
                try:
                    sink.sendall(data)
                except OSError:
                    sink_open = False
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Cluster:
    """Node A and node B (two workers each) with separate folders on the engines `env` names, behind a proxy.

    `url` is the proxy's and `data_dir` node A's, so a cluster stands in wherever one server does.
    """

    def __init__(self, root: Path, env: dict[str, str], workers: int = 2) -> None:
        self.env = env
        for name in ("a", "b"):
            (root / name).mkdir(parents=True)
        self.nodes = {name: ServerProcess(root / name / "data", env, workers=workers) for name in ("a", "b")}
        self.proxy = RoundRobinProxy(lambda: [node.port for node in self.nodes.values() if node.port])

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return self.proxy.url

    @property
    def port(self) -> int:
        """The proxy's port."""
        return self.proxy.port

    @property
    def data_dir(self) -> Path:
        """Node A's data folder (a runtime over it reaches the shared engines)."""
        return self.nodes["a"].data_dir

    def log(self) -> str:
        """What both nodes printed so far."""
        return "".join(node.log() for node in self.nodes.values())

    def start(self) -> Cluster:
        """Start both nodes at once (the first to create the schema and platform key wins), then the proxy."""
        errors: list[BaseException] = []

        def start(node: ServerProcess) -> None:
            try:
                node.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(node,)) for node in self.nodes.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], errors
        self.proxy.start()
        return self

    def stop(self) -> None:
        """Stop the proxy and discard the nodes (the cluster's tests are done with it)."""
        self.proxy.stop()
        for node in self.nodes.values():
            node.discard()
