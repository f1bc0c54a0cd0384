"""Event streams: Server-Sent Events at /api/events/{type}, a WebSocket mirror at /api/ws/events/{type}."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from functools import wraps
from typing import Annotated, Any

from flask import Blueprint, Response, g, request, stream_with_context
from msgspec import Meta
from simple_websocket import ConnectionClosed

from ..errors import BadRequest
from ..metrics import Metrics
from ..streaming import feed as streams
from ..streaming.frames import retry_frame, socket_message, sse_frame
from ..streaming.hub import handoff_for
from ..streaming.sockets import client_gone_check
from ..streaming.websocket import LIMIT_NAME, EventSocket, wait_closed
from .common import authenticated_principal, require_same_origin, runtime
from .guard import data_plane_user, guard
from .registry import Answer, Header, operation
from .types.base import Cursor
from .types.system import (
    EVENT_QUERIES,
    ConnectionUpgrade,
    EventType,
    SseFrame,
    Upgrade,
    WebSocketKey,
    WebSocketVersion,
)

bp = Blueprint("events", __name__, url_prefix="/api")
bp.before_request(guard)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
WS_CREDENTIAL_ENDED = 1008  # the close code of a WebSocket whose credential was revoked or expired
EVENT_PATH = {"event_type": Annotated[EventType, Meta(description="one of the seven; else 404")]}
# One documented path per event type: the filters a stream takes are its type's (docs/protocol.md §6).
EACH_TYPE = {"expand": "event_type", "query_by": EVENT_QUERIES}
LAST_EVENT_ID = Header("Last-Event-ID", Annotated[Cursor, Meta(description="resume after this event id")], False)


def _feed_request(event_type: str) -> streams.FeedRequest:
    repeated = sorted(name for name, values in request.args.lists() if len(values) > 1)
    if repeated:  # which one counts would be a guess: a filter too wide, or too narrow
        raise BadRequest(f"The query parameter {repeated[0]!r} is given more than once.")
    return streams.parse_request(
        data_plane_user()["id"], event_type, request.args.to_dict(), request.headers.get("Last-Event-ID")
    )


def _open_feed(
    event_type: str,
    stream_guard: streams.StreamGuard,
    is_closed: Callable[[], bool],
    handoff: streams.Handoff | None = None,
) -> Generator[streams.Item, None, None]:
    feed = streams.feed(runtime(), _feed_request(event_type), stream_guard, is_closed, handoff)
    next(feed)  # the `open` item: errors before this point still answer as JSON
    return feed


def _stream_guard() -> streams.StreamGuard:
    """What ends the stream with the caller's credential (revoked, logged out, expired)."""
    return streams.StreamGuard(authenticated_principal().credential)


@bp.get("/events/<event_type>")
@operation(
    "stream_{}_events",
    "Events",
    "Server-Sent Events of one type",
    ok=Answer(
        type=SseFrame,
        media="text/event-stream",
        description="text/event-stream: `retry:`, then `id`/`event`/`data` frames and `: keep-alive` comments; "
        "`event: resync` first when the cursor is older than what is kept or ahead of the newest id",
        example="retry: 3000\n\n",
    ),
    errors=(404, 429, 503),
    path=EVENT_PATH,
    **EACH_TYPE,
    headers=(LAST_EVENT_ID,),
)
def event_stream(event_type: str) -> Response:
    """Stream events of one type as SSE: replay after Last-Event-ID, then live, with heartbeats."""
    is_closed, handoff = client_gone_check(request.environ), handoff_for(runtime(), request.environ)
    feed = _open_feed(event_type, _stream_guard(), is_closed, handoff)
    if request.method == "HEAD":  # the headers a stream would open with, and no body to wait for
        feed.close()
        return Response(mimetype="text/event-stream", headers=SSE_HEADERS)
    retry = runtime().config.sse_retry_ms
    body = _sse_body(feed, retry, runtime().metrics)
    return Response(stream_with_context(body), mimetype="text/event-stream", headers=SSE_HEADERS)


def _sse_body(feed: Generator[streams.Item, None, None], retry_ms: int, metrics: Metrics) -> Iterator[str]:
    """The stream's bytes: frames are buffered until the feed is about to wait, then sent in one write."""
    metrics.stream_opened("sse")
    try:
        frames = [retry_frame(retry_ms)]
        for item in feed:
            if item.kind != "idle":
                frames.append(sse_frame(item))
            elif frames:
                yield "".join(frames)
                frames = []
        if frames:  # the feed ended (its credential did) right after these: they were written before
            yield "".join(frames)
    finally:
        feed.close()
        metrics.stream_closed("sse")


@bp.before_request
def _open_socket_feed() -> None:
    """Open a WebSocket's feed before the handshake: errors are still JSON, and events are live at `101`."""
    if request.endpoint != "events.event_socket":
        return
    # Checked here: the WebSocket library would fail on these with an exception, a 500.
    if request.headers.get("Sec-WebSocket-Version") != "13" or not request.headers.get("Sec-WebSocket-Key"):
        raise BadRequest("A WebSocket handshake needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13.")
    require_same_origin()
    peer: list[Any] = []  # the WebSocket, once the handshake has made it
    g.socket_peer = peer
    g.socket_guard = _stream_guard()
    g.socket_feed = _open_feed(
        (request.view_args or {})["event_type"], g.socket_guard, lambda: bool(peer) and not peer[0].connected
    )


@bp.teardown_request
def _close_socket_feed(exc: BaseException | None) -> None:
    """Release the feed's slot and subscription even if the handshake failed."""
    feed = g.pop("socket_feed", None)
    if feed is not None:
        feed.close()


def _websocket_view(handler: Callable[..., None]) -> Callable[..., Response]:
    """A view running `handler(ws, **view_args)` over an EventSocket, as flask-sock's `Sock.route` does.

    Ours rather than flask-sock's, whose socket keeps every message a client sends and
    inflates compressed ones without limit (telentir/streaming/websocket.py).
    """

    @wraps(handler)
    def view(**kwargs: Any) -> Response:
        metrics = runtime().metrics
        ws = EventSocket(
            request.environ,
            ping_interval=runtime().config.sse_heartbeat_seconds,  # keeps idle mirrors alive behind proxies
            on_refused=lambda: metrics.limit_refused(LIMIT_NAME),
        )
        try:
            handler(ws, **kwargs)
        except ConnectionClosed:
            pass
        try:
            ws.close()
        except (ConnectionClosed, OSError):
            pass  # closed already (by either side)
        if ws.refused:  # its reader drains what the client still sends: the connection stays until then
            wait_closed(ws)
        return _SocketDone(ws.mode)

    return view


class _SocketDone(Response):
    """What the view returns once the WebSocket has ended: nothing more goes on the connection."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        if self.mode == "gunicorn":
            # gunicorn (either worker) sent nothing: stopping its iteration closes the connection.
            raise StopIteration()
        if self.mode == "werkzeug":
            return super().__call__(environ, start_response)
        return []


@bp.route("/ws/events/<event_type>", websocket=True)
@operation(
    "stream_{}_events_websocket",
    "Events",
    "WebSocket mirror: each event a JSON text message {id, event, data}",
    ok=Answer(status=101, description="Switching protocols (WebSocket)"),
    errors=(404, 429, 503),
    path=EVENT_PATH,
    **EACH_TYPE,
    headers=(
        LAST_EVENT_ID,
        Header("Sec-WebSocket-Version", WebSocketVersion),
        Header("Sec-WebSocket-Key", WebSocketKey),
        Header("Upgrade", Upgrade),
        Header("Connection", ConnectionUpgrade),
    ),
)
@_websocket_view
def event_socket(ws: Any, event_type: str) -> None:
    """The same stream over a WebSocket: each event one JSON text message {id, event, data}."""
    # Credentials, the request, a stream slot and the subscription were all taken before the
    # handshake (errors as JSON), so an event written once the client has its `101` arrives.
    g.socket_peer.append(ws)
    feed = g.pop("socket_feed")
    metrics = runtime().metrics
    metrics.stream_opened("websocket")
    try:
        for item in feed:
            if item.kind in ("event", "resync"):
                ws.send(socket_message(item))
    finally:
        feed.close()
        metrics.stream_closed("websocket")
    if (reason := g.socket_guard.ended) is not None:
        # 1008 (policy violation): the credential ended; reconnecting with it gets a 401.
        ws.close(reason=WS_CREDENTIAL_ENDED, message=reason)
