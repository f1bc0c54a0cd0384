"""Fixtures shared by the test modules: an in-process app, real servers and runtimes over their data, the fakes.

A module that wants the `server_rt` or `new_account` fixtures defines its own `server`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from telentir import close_app, create_app
from telentir.runtime import Runtime
from telentir.storage.db import SqliteDatabase

from . import backends, private_services
from .cluster import Cluster
from .dataplane_support import Vault
from .events_support import Account, account
from .fake_stripe import FakeStripe
from .redis_server import RedisServer
from .scraper_fixture import TestScraper
from .sse_client import SSEStream
from .support import FIXED_MASTER_KEY, Api, ServerProcess, config_over, make_user, running_server, runtime_over

# --- in process: an app, its runtime and a user; a bare database -----------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """--backend: the storage the integration suite runs on."""
    parser.addoption(
        "--backend",
        choices=backends.BACKENDS,
        default=backends.EMBEDDED,
        help="embedded (SQLite, files, in-process broker) or postgres-s3-redis (the storage-bound modules only).",
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the session's private Redis and PostgreSQL (tests/private_services.py), if it started them."""
    private_services.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the scale-out backend, run only the modules that exercise storage (backends.SCALE_OUT_MODULES)."""
    if config.getoption("--backend") == backends.EMBEDDED:
        return
    keep = [
        item
        for item in items
        if item.module is not None and item.module.__name__.split(".")[-1] in backends.SCALE_OUT_MODULES
    ]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def storage_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start the scale-out services for the session and point every server and runtime at them."""
    name = request.config.getoption("--backend")
    if name == backends.EMBEDDED:
        yield name
        return
    session = backends.ScaleOutSession(tmp_path_factory.mktemp("scale-out"))
    settings = session.start()
    patch = pytest.MonkeyPatch()
    patch.setenv(backends.ENV_VAR, json.dumps(settings))
    for key, value in backends.AWS_ENV.items():  # for the runtimes the tests build in-process
        patch.setenv(key, value)
    try:
        yield name
    finally:
        patch.undo()
        session.stop()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    """An app over a fresh data folder, open for sign-up (tests register through it)."""
    application = create_app(config_over(tmp_path / "data", log_level="WARNING", signup="open"))
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
def db(tmp_path: Path) -> Iterator[SqliteDatabase]:
    """A bare database (schema applied) in a fresh folder, for storage-level tests."""
    database = SqliteDatabase(tmp_path / "t.db")
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


# Open for sign-up; trusting one proxy hop lets a test that makes many accounts give each its
# own client address (X-Forwarded-For), since sign-ups per address are limited.
LIVE_SETTINGS = {"TELENTIR_SIGNUP": "open", "TELENTIR_PROXY_HOPS": "1"}


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory, storage_backend: str) -> Iterator[ServerProcess | Cluster]:
    """One real gunicorn server for the session, open for sign-up (tests make their own users).

    On the scale-out backend it is two nodes behind a round-robin proxy: every test written
    for one server then also runs across two (a stream on one node, writes on the other).
    """
    if storage_backend == backends.EMBEDDED:
        with running_server(tmp_path_factory, "live", **LIVE_SETTINGS) as server:
            yield server
        return
    root = tmp_path_factory.mktemp("live-cluster")
    env = {"TELENTIR_MASTER_KEY": FIXED_MASTER_KEY, **LIVE_SETTINGS, **backends.env_for(root / "a" / "data")}
    cluster = Cluster(root, env, 1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


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
    """A dedicated redis-server of the module's own (not the session's), which its tests may stop."""
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


# --- the console's browser tests: Debian's Chromium --------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium (Playwright) for the module."""
    from playwright.sync_api import sync_playwright  # only the browser tests need it

    from .console_support import launch

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Factory: a watched page in a fresh browser profile. None may raise a CSP violation or script error."""
    from .console_support import Watched, watch

    opened: list[Watched] = []

    def factory(**options: Any) -> Watched:
        watched = watch(browser.new_context(accept_downloads=True, **options))
        opened.append(watched)
        return watched

    yield factory
    for watched in opened:
        watched.page.context.close()
    assert [problem for watched in opened for problem in watched.problems] == []
