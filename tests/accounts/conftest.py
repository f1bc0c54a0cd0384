"""Accounts and credentials: sign-up policy, sign-in, two-factor, the token cookie, abuse limits.

Every module here also runs on PostgreSQL + S3 + Redis unless it is marked `embedded_only`.
The modules use the session's `live_server` or start servers of their own settings; a module
that wants the `account` fixture defines its own `server`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ..support import Api, ServerProcess
from .test_auth_flow import fresh_addr, read_code, signup

SCALE_OUT = True


@pytest.fixture
def account(server: ServerProcess) -> Iterator[dict[str, Any]]:
    """A user signed up and phone-verified through the module's `server`: email, phone, token, session, addr.

    `addr` is the account's own client address (its X-Forwarded-For), not the one it signed up from.
    """
    addr = fresh_addr()
    made = signup(server.url, headers={"X-Forwarded-For": fresh_addr()})
    session = Api(server.url, made["token"])
    session.session.headers["X-Forwarded-For"] = addr
    assert session.post("/auth/phone/send").status_code == 200
    assert session.post("/auth/phone/verify", json={"code": read_code(server, made["phone"])}).status_code == 200
    yield {**made, "session": session, "addr": addr}
    session.close()
