"""Lead jobs (POST /api/connect) and the money they move: local balances, Stripe, leases, crashes.

Every module here also runs on PostgreSQL + S3 + Redis unless it is marked `embedded_only`.
A module defines its `server`; `rt` reads and writes its rows with the connect plans and the
module's Stripe fake (a module whose runtime differs defines its own).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import pytest

from telentir.runtime import Runtime

from ..fake_stripe import FakeStripe
from ..money_support import billing_runtime
from ..support import ServerProcess

SCALE_OUT = True


@pytest.fixture(scope="module")
def rt(server: ServerProcess, fake: FakeStripe) -> Iterator[Runtime]:
    """A runtime over the module server's folder, with the connect plans and the module's Stripe fake."""
    with closing(billing_runtime(server.data_dir, fake)) as runtime:
        yield runtime
