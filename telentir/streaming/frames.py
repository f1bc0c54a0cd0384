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


# One round's encoded rows for streams of one (type, user, pattern, cursor, rung): the bytes,
# the new cursor, and where each credential revoked among them cuts the bytes off.
Batch = tuple[bytes, int, dict[str, int]]


def encode_batch(items: list[Item], last: int) -> Batch:
    """The SSE bytes of `items`, the cursor, and for each revocation record the length of the bytes before it."""
    frames, cuts, size = [], dict[str, int](), 0
    for item in items:
        if item.kind == "revoked":
            cuts.setdefault(str(item.data), size)
            continue
        frame = sse_frame(item).encode()
        frames.append(frame)
        size += len(frame)
    return b"".join(frames), last, cuts


def retry_frame(milliseconds: int) -> str:
    """The frame telling EventSource how long to wait before reconnecting."""
    return f"retry: {milliseconds}\n\n"
