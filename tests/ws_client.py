"""A WebSocket client for tests of the /api/ws/events mirror, and helpers to read and close it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from typing import Any

import simple_websocket
from wsproto import ConnectionType


class WsClient(simple_websocket.Client):  # type: ignore[misc]
    """simple_websocket's client, keeping messages that arrive in the same read as the `101`.

    Its handshake reads once and takes only the first event; a message the server sent
    right behind the `101` (a replay does) would wait in wsproto's buffer until more bytes
    came. Handling the pending events before the reader thread starts delivers them.
    """

    def handshake(self) -> None:
        super().handshake()
        self._handle_events()


class WsOnSocket(WsClient):
    """A WebSocket opened on a connection the test already holds (so on the worker holding it).

    simple_websocket's client always dials a new connection; this sets what its `__init__`
    would from the URL and hands the base class the given socket instead.
    """

    def __init__(self, sock: socket.socket, host: str, port: int, path: str, headers: Mapping[str, str]) -> None:
        self.host, self.port, self.path = host, port, path
        self.subprotocols: list[str] = []
        self.extra_headeers = list(headers.items())  # sic: simple_websocket's attribute name
        sock.settimeout(None)
        simple_websocket.ws.Base.__init__(self, sock, connection_type=ConnectionType.CLIENT)


def ws_url(base_url: str, event_type: str, query: str = "") -> str:
    """ws:// URL of the WebSocket mirror of an event type."""
    return base_url.replace("http://", "ws://") + f"/api/ws/events/{event_type}" + (f"?{query}" if query else "")


def close_ws(ws: WsClient) -> None:
    """Close a client whichever side closed first, and join its reader thread."""
    try:
        ws.close()
    except simple_websocket.ConnectionClosed:
        pass
    finally:
        ws.sock.close()
        ws.thread.join(timeout=10)
    assert not ws.thread.is_alive()


def receive_json(ws: WsClient, timeout: float = 5.0) -> dict[str, Any]:
    """The next text message, parsed; fails on timeout."""
    message = ws.receive(timeout=timeout)
    assert message is not None, f"no WebSocket message within {timeout} s"
    assert isinstance(message, str), message  # a text message, not binary
    return dict(json.loads(message))


def messages_until_closed(ws: WsClient, timeout: float) -> tuple[list[dict[str, Any]], float]:
    """Every message until the server closes the WebSocket, and the monotonic time it closed; fails after `timeout`."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            message = ws.receive(timeout=max(0.0, deadline - time.monotonic()))
        except simple_websocket.ConnectionClosed:
            return messages, time.monotonic()
        assert message is not None, f"the WebSocket was not closed within {timeout} s"
        messages.append(dict(json.loads(message)))
