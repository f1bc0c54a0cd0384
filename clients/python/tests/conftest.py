"""Fixtures of the client's tests: a real server (gunicorn) with the test scraper, users on it, clients for them.

The server, its users and the scraper come from the server's own test support (`tests/` at
the top of the checkout), so they start exactly as the server's integration tests start
them. The client is imported from `clients/python/src`, never from an installed copy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

CLIENT_ROOT = Path(__file__).resolve().parents[1]
CHECKOUT = CLIENT_ROOT.parents[1]
for path in (CHECKOUT, CLIENT_ROOT / "src"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from telentir.runtime import Runtime  # noqa: E402
from telentir.services import credits  # noqa: E402
from tests.connect_support import PLANS, connect_env  # noqa: E402
from tests.scraper_fixture import TestScraper  # noqa: E402
from tests.support import ServerProcess, make_user, running_server, runtime_over  # noqa: E402

from telentir_client import Telentir  # noqa: E402


@pytest.fixture(scope="session")
def scraper_service() -> Iterator[TestScraper]:
    """The test scraper service."""
    with TestScraper() as service:
        yield service


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, scraper_service: TestScraper) -> Iterator[ServerProcess]:
    """One real server for the client's tests, pointed at the test scraper, with the test plans."""
    with running_server(tmp_path_factory, "client", **connect_env(scraper_service.url)) as process:
        yield process
        scraper_service.stopping.set()


@pytest.fixture(scope="session")
def server_rt(server: ServerProcess) -> Iterator[Runtime]:
    """A runtime over the server's data folder: users are made through it."""
    with closing(runtime_over(server.data_dir, plans=PLANS)) as runtime:
        yield runtime


@pytest.fixture(scope="session")
def api_url(server: ServerProcess) -> str:
    """The server's `/api` base URL, as the client takes it."""
    return server.url + "/api"


@pytest.fixture
def new_user(server_rt: Runtime) -> Callable[..., dict[str, Any]]:
    """Factory: a phone-verified user (with `api_key`) on the `tiny` plan, with `balance` cents of prepaid credit."""

    def factory(balance: int = 0) -> dict[str, Any]:
        user = make_user(server_rt)
        credits.set_plan(server_rt, user["id"], "tiny")
        if balance:
            credits.grant_credits(server_rt, user["id"], balance)
        return user

    return factory


@pytest.fixture
def connect_as(api_url: str) -> Iterator[Callable[..., Telentir]]:
    """Factory: `Telentir.connect` for a user, closed at the end of the test."""
    opened: list[Telentir] = []

    def factory(user: dict[str, Any], **options: Any) -> Telentir:
        client = Telentir.connect(api_key=user["api_key"], api=api_url, **options)
        opened.append(client)
        return client

    yield factory
    for client in opened:
        client.close()


@pytest.fixture
def telentir(new_user: Callable[..., dict[str, Any]], connect_as: Callable[..., Telentir]) -> Telentir:
    """A client for a fresh user."""
    return connect_as(new_user())
