"""A WebSocket client for tests of the /api/ws/events mirror, and helpers to read and close it."""

from __future__ import annotations

import json
from typing import Any

import simple_websocket


class WsClient(simple_websocket.Client):  # type: ignore[misc]
    """simple_websocket's client, keeping messages that arrive in the same read as the `101`.

    Its handshake reads once and takes only the first event; a message the server sent
    right behind the `101` (a replay does) would wait in wsproto's buffer until more bytes
    came. Handling the pending events before the reader thread starts delivers them.
    """

    def handshake(self) -> None:
        super().handshake()
        self._handle_events()


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
