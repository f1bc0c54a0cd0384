"""The data plane against real servers: keys, objects, the error shape, bad and slow input, limits.

Every module here also runs on PostgreSQL + S3 + Redis unless it is marked `embedded_only`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ..dataplane_support import Vault
from ..support import Api

SCALE_OUT = True


@pytest.fixture
def vault(new_live_user: Callable[..., tuple[dict[str, Any], Api]]) -> Vault:
    """A fresh verified user's vault on the live server: their client, keys and cryptography."""
    user, api = new_live_user()
    return Vault(api, user)
