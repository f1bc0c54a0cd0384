"""The bytes of an event stream: SSE frames and WebSocket messages (pinned by tests)."""

from __future__ import annotations

import json

from .feed import Item


def sse_frame(item: Item) -> str:
    """One Server-Sent Events frame (pinned byte for byte by a test)."""
    if item.kind == "heartbeat":
        return ": keep-alive\n\n"
    data = item.data_json
    if item.kind == "resync":
        return f"event: resync\ndata: {data}\n\n"
    return f"id: {item.event_id}\nevent: {item.event}\ndata: {data}\n\n"


def socket_message(item: Item) -> str:
    """One WebSocket text message {id, event, data} (data is the shared, already encoded JSON)."""
    event_id = "null" if item.kind == "resync" else str(item.event_id)
    return f'{{"id":{event_id},"event":{json.dumps(item.event)},"data":{item.data_json}}}'


def retry_frame(milliseconds: int) -> str:
    """The frame telling EventSource how long to wait before reconnecting."""
    return f"retry: {milliseconds}\n\n"
