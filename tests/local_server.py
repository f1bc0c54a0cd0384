"""A local HTTP server on a free loopback port, served from a background thread (test fakes build on it)."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from typing import Any


class BackgroundServer:
    """Lifecycle shared by the test fakes: start on a free port, stop and join, context manager.

    A subclass says how to build its server (`_new_server`) and what to wake before stopping
    (`_before_stop`); the server reaches its owner through the attribute `owner_attr`.
    """

    owner_attr = "owner"
    thread_name = "test-server"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:41234."""
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _new_server(self) -> ThreadingHTTPServer:
        raise NotImplementedError

    def _before_stop(self) -> None:
        """Wake anything a handler may be waiting on, so stop() can join it."""

    def start(self) -> Any:
        """Listen on a free port in a background thread."""
        self._server = self._new_server()
        setattr(self._server, self.owner_attr, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and wait for the serving thread."""
        self._before_stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
