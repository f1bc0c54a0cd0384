"""Shared by the event-stream tests (SSE, WebSocket, Redis, hub, gevent): server settings, users, stored ids."""

from __future__ import annotations

from dataclasses import dataclass

from telentir.runtime import Runtime

from .sse_client import Writes
from .support import ServerProcess, make_user

HEARTBEAT = 1.0
RETRY_MS = 1500
# The stream servers' settings: a 1 s heartbeat keeps the tests that wait for one fast.
STREAM_SETTINGS = {"TELENTIR_SSE_HEARTBEAT_SECONDS": str(HEARTBEAT), "TELENTIR_SSE_RETRY_MS": str(RETRY_MS)}


@dataclass
class Account:
    """A user on a live server: id, credential and a writer."""

    id: str
    key: str
    writes: Writes


def account(rt: Runtime, server: ServerProcess) -> Account:
    """A new verified user with an API key on `server`."""
    user = make_user(rt)
    return Account(user["id"], user["api_key"], Writes(server.url, user["api_key"]))


def stored_ids(rt: Runtime, user_id: str, event_type: str, after: int = 0) -> list[int]:
    """The user's event ids of a type in the table, in order."""
    rows = rt.db.query(
        "SELECT id FROM events WHERE user_id = ? AND type = ? AND id > ? ORDER BY id", (user_id, event_type, after)
    )
    return [row["id"] for row in rows]
