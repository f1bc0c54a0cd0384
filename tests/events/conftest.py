"""Event streams (SSE and WebSocket), their cursors and credentials, and the brokers behind them.

Every module here also runs on PostgreSQL + S3 + Redis unless it is marked `embedded_only`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..redis_server import RedisServer

SCALE_OUT = True


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A dedicated redis-server of the module's own (not the session's), which its tests may stop."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
