"""Event streams: Server-Sent Events at /api/events/{type}, a WebSocket mirror at /api/ws/events/{type}."""
from __future__ import annotations

import json
from typing import Any, Callable, Iterator

from flask import Blueprint, Response, request, stream_with_context
from flask_sock import Sock

from ..errors import ApiError
from ..services import streams
from .common import client_gone_check, runtime
from .guard import data_plane_user, guard

bp = Blueprint("events", __name__, url_prefix="/api")
bp.before_request(guard)
sock = Sock()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# WebSocket close codes for errors found after the handshake: policy violation, try again later.
WS_CLOSE_CODES = {429: 1013, 503: 1013}


def sse_frame(item: streams.Item) -> str:
    """One Server-Sent Events frame (pinned byte for byte by a test)."""
    if item.kind == "heartbeat":
        return ": keep-alive\n\n"
    data = json.dumps(item.data, separators=(",", ":"))
    if item.kind == "resync":
        return f"event: resync\ndata: {data}\n\n"
    return f"id: {item.event_id}\nevent: {item.event}\ndata: {data}\n\n"


def retry_frame(milliseconds: int) -> str:
    """The frame telling EventSource how long to wait before reconnecting."""
    return f"retry: {milliseconds}\n\n"


def _open_feed(event_type: str, is_closed: Callable[[], bool]) -> Iterator[streams.Item]:
    user = data_plane_user()
    req = streams.parse_request(user["id"], event_type, request.args.to_dict(),
                                request.headers.get("Last-Event-ID"))
    feed = streams.feed(runtime(), req, is_closed)
    next(feed)  # the `open` item: errors before this point still answer as JSON
    return feed


@bp.get("/events/<event_type>")
def event_stream(event_type: str) -> Response:
    """Stream events of one type as SSE: replay after Last-Event-ID, then live, with heartbeats."""
    feed = _open_feed(event_type, client_gone_check(request.environ))
    retry = runtime().config.sse_retry_ms
    body = _sse_body(feed, retry)
    return Response(stream_with_context(body), mimetype="text/event-stream", headers=SSE_HEADERS)


def _sse_body(feed: Iterator[streams.Item], retry_ms: int) -> Iterator[str]:
    try:
        yield retry_frame(retry_ms)
        for item in feed:
            yield sse_frame(item)
    finally:
        feed.close()  # type: ignore[attr-defined]


@sock.route("/ws/events/<event_type>", bp=bp)
def event_socket(ws: Any, event_type: str) -> None:
    """The same stream over a WebSocket: each event one JSON text message {id, event, data}."""
    # Credentials were checked by the blueprint guard before the handshake (401/403 as JSON);
    # what fails after it can only be reported as a close frame.
    try:
        feed = _open_feed(event_type, lambda: not ws.connected)
    except ApiError as exc:
        ws.close(reason=WS_CLOSE_CODES.get(exc.status, 1008), message=exc.message[:120])
        return
    try:
        for item in feed:
            if item.kind == "event":
                ws.send(json.dumps({"id": item.event_id, "event": item.event, "data": item.data},
                                   separators=(",", ":")))
            elif item.kind == "resync":
                ws.send(json.dumps({"id": None, "event": "resync", "data": item.data}, separators=(",", ":")))
    finally:
        feed.close()  # type: ignore[attr-defined]
