"""The billing package: a server in Stripe mode over the fake, shared by its modules' fixtures.

Every module here also runs on PostgreSQL + S3 + Redis (SCALE_OUT) unless it is marked
`embedded_only`. A module that wants the Stripe-mode server asks for `server` and `rt`;
each module gets its own (module scope), so the fake's record of calls is the module's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import pytest

from telentir.runtime import Runtime
from telentir.services import credits

from ..billing_support import SdkClient, billing_env, billing_plans, stripe_server
from ..fake_stripe import FakeStripe
from ..scraper_fixture import TestScraper
from ..support import ServerProcess, make_user, runtime_over

SCALE_OUT = True


@pytest.fixture(scope="module")
def plans(fake: FakeStripe) -> dict[str, dict[str, Any]]:
    """The catalog, with the Stripe prices of `pro` and `agency` made in the module's fake."""
    return billing_plans(fake)


@pytest.fixture(scope="module")
def env(fake: FakeStripe, plans: dict[str, Any], scraper: TestScraper) -> dict[str, str]:
    """The Stripe-mode server's settings (and its runtime's)."""
    return billing_env(fake, plans, scraper.url)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeStripe, scraper: TestScraper, env: dict[str, str]
) -> Iterator[ServerProcess]:
    """A real server in Stripe mode whose webhook endpoint the fake delivers to."""
    with stripe_server(tmp_path_factory.mktemp("billing") / "data", fake, env) as process:
        yield process
        scraper.stopping.set()  # no stalled lead job may hold the server's graceful stop


@pytest.fixture(scope="module")
def rt(server: ServerProcess, env: dict[str, str]) -> Iterator[Runtime]:
    """A runtime over the server's data folder with the server's settings."""
    with closing(runtime_over(server.data_dir, env)) as runtime:
        yield runtime


@pytest.fixture
def new_client(rt: Runtime, server: ServerProcess) -> Iterator[Callable[..., tuple[dict[str, Any], SdkClient]]]:
    """Factory: a user on a plan (`payg` unless told; no Stripe customer yet) and an SDK client for them."""
    clients: list[SdkClient] = []

    def factory(plan: str = "payg") -> tuple[dict[str, Any], SdkClient]:
        user = make_user(rt)
        credits.set_plan(rt, user["id"], plan)
        clients.append(SdkClient(server.url, user["api_key"]))
        return user, clients[-1]

    yield factory
    for client in clients:
        client.close()
