"""Fixtures: an in-process app for unit-level tests, a real gunicorn server for integration."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from telentir import close_app, create_app
from telentir.config import load_config
from telentir.runtime import Runtime
from telentir.services import accounts, credentials
from telentir.wiring import build_runtime

from .redis_server import RedisServer
from .support import FIXED_MASTER_KEY, Api, ServerProcess

_counter = itertools.count()


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


def make_user(rt: Runtime, verified: bool = True, password: str | None = None) -> dict[str, Any]:
    """A new user with a unique email; the dict gains `api_key`."""
    n = next(_counter)
    user = accounts.create_user(
        rt,
        f"user{n}-{id(rt)}@example.com",
        "+15555550100",
        first_name="Test",
        last_name=f"User{n}",
        password=password,
        verified=verified,
    )
    user["api_key"] = credentials.create_api_key(rt, user["id"], "test")["key"]
    return user


@pytest.fixture
def user(rt: Runtime) -> dict[str, Any]:
    """A phone-verified user with an API key (`user["api_key"]`)."""
    return make_user(rt)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real gunicorn server for the session, open for sign-up (tests make their own users)."""
    data_dir = tmp_path_factory.mktemp("live") / "data"
    server = ServerProcess(data_dir, {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, "TELENTIR_SIGNUP": "open"}).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live_rt(live_server: ServerProcess) -> Iterator[Runtime]:
    """A runtime over the live server's data folder, for making users from the test side."""
    runtime = build_runtime(load_config({"data_dir": live_server.data_dir, "master_key": FIXED_MASTER_KEY}, environ={}))
    yield runtime
    runtime.close()


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


@pytest.fixture(scope="module")
def server_rt(server: ServerProcess) -> Iterator[Runtime]:
    """A runtime over the data folder of the module's own `server` fixture."""
    runtime = build_runtime(load_config({"data_dir": server.data_dir, "master_key": FIXED_MASTER_KEY}, environ={}))
    yield runtime
    runtime.close()


@pytest.fixture
def streams() -> Iterator[list[Any]]:
    """Event streams a test opens, closed at its end whatever happened."""
    opened: list[Any] = []
    yield opened
    for stream in opened:
        stream.close()


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A dedicated redis-server of the module's own (not the shared 6379), which its tests may stop."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
