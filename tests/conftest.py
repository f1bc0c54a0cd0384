"""Fixtures shared by the test modules: an in-process app, real servers and runtimes over their data, the fakes.

A module that wants the `server_rt` or `new_account` fixtures defines its own `server`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from telentir import close_app, create_app
from telentir.runtime import Runtime
from telentir.storage.db import Database

from .dataplane_support import Vault
from .events_support import Account, account
from .fake_stripe import FakeStripe
from .redis_server import RedisServer
from .scraper_fixture import TestScraper
from .sse_client import SSEStream
from .support import FIXED_MASTER_KEY, Api, ServerProcess, make_user, running_server, runtime_over

# --- in process: an app, its runtime and a user; a bare database -----------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    """An app over a fresh data folder, open for sign-up (tests register through it)."""
    application = create_app(
        {"data_dir": tmp_path / "data", "master_key": FIXED_MASTER_KEY, "log_level": "WARNING", "signup": "open"}
    )
    application.config["TESTING"] = False  # exercise the real error handlers
    yield application
    close_app(application)


@pytest.fixture
def rt(app: Flask) -> Runtime:
    """The app's runtime (services are called with it)."""
    return app.extensions["telentir"]


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Flask's test client for the app."""
    return app.test_client()


@pytest.fixture
def user(rt: Runtime) -> dict[str, Any]:
    """A phone-verified user with an API key (`user["api_key"]`)."""
    return make_user(rt)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A bare database (schema applied) in a fresh folder, for storage-level tests."""
    database = Database(tmp_path / "t.db")
    database.open_schema()
    yield database
    database.close()


# --- real servers, and runtimes over their data ------------------------------------------------------


@pytest.fixture
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: a started server of the test's own, stopped at the end of the test.

    Called as `server_factory(name, workers=None, threads=None, worker_class=None, **env)`.
    """
    with ExitStack() as servers:

        def start(name: str, **options: Any) -> ServerProcess:
            return servers.enter_context(running_server(tmp_path_factory, name, **options))

        yield start


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real gunicorn server for the session, open for sign-up (tests make their own users)."""
    with running_server(tmp_path_factory, "live", TELENTIR_SIGNUP="open") as server:
        yield server


@pytest.fixture(scope="session")
def live_rt(live_server: ServerProcess) -> Iterator[Runtime]:
    """A runtime over the live server's data folder, for making users from the test side."""
    with closing(runtime_over(live_server.data_dir)) as runtime:
        yield runtime


@pytest.fixture
def new_live_user(live_server: ServerProcess, live_rt: Runtime) -> Iterator[Callable[..., tuple[dict[str, Any], Api]]]:
    """Factory: a user on the live server and an Api client authenticated as them."""
    clients: list[Api] = []

    def factory(verified: bool = True) -> tuple[dict[str, Any], Api]:
        user = make_user(live_rt, verified=verified)
        api = Api(live_server.url, user["api_key"])
        clients.append(api)
        return user, api

    yield factory
    for api in clients:
        api.close()


@pytest.fixture
def vault(new_live_user: Callable[..., tuple[dict[str, Any], Api]]) -> Vault:
    """A fresh verified user's vault on the live server: their client, keys and cryptography."""
    user, api = new_live_user()
    return Vault(api, user)


@pytest.fixture(scope="module")
def server_rt(server: ServerProcess) -> Iterator[Runtime]:
    """A runtime over the data folder of the module's own `server` fixture."""
    with closing(runtime_over(server.data_dir)) as runtime:
        yield runtime


@pytest.fixture
def new_account(server: ServerProcess, server_rt: Runtime) -> Callable[[], Account]:
    """Factory: a fresh user with a writer on the module's own `server`."""
    return lambda: account(server_rt, server)


@pytest.fixture
def streams() -> Iterator[list[SSEStream]]:
    """Event streams a test opens, closed at its end whatever happened."""
    opened: list[SSEStream] = []
    yield opened
    for stream in opened:
        stream.close()


# --- the services around them: Redis, the scraper, Stripe ---------------------------------------------


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A dedicated redis-server of the module's own (not the shared 6379), which its tests may stop."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def scraper() -> Iterator[TestScraper]:
    """The test scraper service."""
    with TestScraper() as service:
        yield service


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStripe]:
    """The fake Stripe API (its record of calls is the module's)."""
    with FakeStripe() as service:
        yield service
