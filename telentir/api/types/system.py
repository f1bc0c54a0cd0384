"""Health, readiness, event streams, the console and this document (docs/protocol.md §6, §9)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

import msgspec
from msgspec import UNSET, Meta, UnsetType

from ...services.events import FILTERS
from ...streaming.feed import MAX_FILTER_LENGTH
from .base import ASCII_PATTERN, Cursor, Schema, UserId, text

EVENT_TYPES = list(FILTERS)
EventType = Annotated[str, Meta(extra_json_schema={"enum": EVENT_TYPES}, examples=["object_created"])]
Filter = Annotated[str, text(0, MAX_FILTER_LENGTH, description="a filter of the event type (§6): exact match")]
# The WebSocket handshake key: 16 random bytes in base64 (RFC 6455 §4.1).
WebSocketKey = Annotated[str, Meta(pattern="^[!-~]([ -~]*[!-~])?$", description="the handshake key")]
Upgrade = Annotated[str, Meta(pattern="^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$", description="websocket")]
ConnectionUpgrade = Annotated[str, Meta(pattern="^[Uu][Pp][Gg][Rr][Aa][Dd][Ee]$", description="Upgrade")]
WebSocketVersion = Annotated[str, Meta(pattern="^13$", description="the WebSocket version: 13")]
AsciiText = Annotated[str, Meta(pattern=ASCII_PATTERN)]


class Health(Schema):
    """The process is alive; `pid` tells which worker answered."""

    status: Literal["ok"]
    pid: int


class Checks(Schema):
    """What readiness checks."""

    database: bool
    blobs: bool
    broker: bool
    disk: bool


class Ready(Schema):
    """Ready to serve."""

    status: Literal["ok"]
    checks: Checks


def _event_query(event_type: str) -> type[Schema]:
    """The query of one event type's stream: its filters (any other parameter is a 400), the owner, the cursor."""
    filters = [(name, Filter | UnsetType, UNSET) for name, _ in FILTERS[event_type]]
    owner = ("userId", Annotated[UserId, Meta(description="your own id only (403 otherwise)")] | UnsetType, UNSET)
    since = (
        "since",
        Annotated[Cursor, Meta(description="resume after this id (Last-Event-ID wins)")] | UnsetType,
        UNSET,
    )
    name = "".join(word.title() for word in event_type.split("_")) + "Query"
    return cast(type[Schema], msgspec.defstruct(name, [*filters, owner, since], bases=(Schema,), kw_only=True))


# Each event type's query: the document has one path per type, since the filters differ (§6).
EVENT_QUERIES = {event_type: _event_query(event_type) for event_type in EVENT_TYPES}


class SseFrame(Schema):
    """One frame of an event stream (the schema of each event, as OpenAPI 3.1 reads it)."""

    id: Annotated[str, Meta(pattern="^[0-9]+$")] | UnsetType = UNSET
    event: Annotated[str, Meta(extra_json_schema={"enum": [*EVENT_TYPES, "resync"]})] | UnsetType = UNSET
    data: (
        Annotated[
            str, Meta(extra_json_schema={"contentMediaType": "application/json", "contentSchema": {"type": "object"}})
        ]
        | UnsetType
    ) = UNSET
    retry: Annotated[int, Meta(ge=0)] | UnsetType = UNSET


class ConsoleConfig(Schema):
    """Whether Stripe top-ups are configured."""

    stripe: bool


class Document(Schema):
    """This document."""

    openapi: str
    paths: dict[str, dict[str, Any]]
