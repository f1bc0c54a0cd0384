"""Shared by the event-stream tests (SSE, WebSocket, Redis, hub, gevent): server settings and users."""

from __future__ import annotations

HEARTBEAT = 1.0
RETRY_MS = 1500
# The stream servers' settings: a 1 s heartbeat keeps the tests that wait for one fast.
STREAM_SETTINGS = {"TELENTIR_SSE_HEARTBEAT_SECONDS": str(HEARTBEAT), "TELENTIR_SSE_RETRY_MS": str(RETRY_MS)}
