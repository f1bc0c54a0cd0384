"""What every test package shares: the storage backend of the run, an in-process app, real servers and runtimes
over their data, the scraper and the Stripe fake. A package's own fixtures live in its conftest.py.

A module that wants the `server_rt` or `new_account` fixtures defines its own `server`.

Which tests also run on PostgreSQL + S3 + Redis (`--backend postgres-s3-redis`) is the `scale_out`
marker: every test of a package whose conftest says `SCALE_OUT = True`, unless its module is marked
`embedded_only(reason)`, and every test of a module marked `scale_out` in another package.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from telentir import close_app, create_app
from telentir.runtime import Runtime

from . import backends, private_services
from .cluster import Cluster
from .events_support import Account, account
from .fake_stripe import FakeStripe
from .scraper_fixture import TestScraper
from .sse_client import SSEStream
from .support import FIXED_MASTER_KEY, Api, ServerProcess, config_over, make_user, running_server, runtime_over

# --- the run: its storage backend, and which tests run on it -----------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """--backend: the storage the integration suite runs on."""
    parser.addoption(
        "--backend",
        choices=backends.BACKENDS,
        default=backends.EMBEDDED,
        help="embedded (SQLite, files, in-process broker) or postgres-s3-redis (the tests marked scale_out only).",
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the session's private Redis and PostgreSQL (tests/private_services.py), if it started them."""
    private_services.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of the PostgreSQL + S3 + Redis pass `scale_out`; on that backend, run only them."""
    for item in items:
        marks = {mark.name for mark in item.iter_markers()}
        if backends.runs_scale_out(_package_scale_out(item), marks):
            item.add_marker(pytest.mark.scale_out)
    if config.getoption("--backend") == backends.EMBEDDED:
        return
    marked = {item: item.get_closest_marker("scale_out") is not None for item in items}
    config.hook.pytest_deselected(items=[item for item in items if not marked[item]])
    items[:] = [item for item in items if marked[item]]


def _package_scale_out(item: pytest.Item) -> bool:
    """The SCALE_OUT its package's conftest declares (False for a package that declares none)."""
    module = getattr(item, "module", None)
    conftest = sys.modules.get(f"{module.__package__}.conftest") if module is not None else None
    return bool(getattr(conftest, "SCALE_OUT", False))


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


# --- in process: an app, its runtime and a user


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


# --- the services around them: the scraper, Stripe ---------------------------------------------


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


@pytest.fixture(autouse=True)
def healthy_stripe(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that uses the fake starts with no failure armed and nothing left to deliver."""
    if "fake" not in request.fixturenames:
        yield
        return
    fake: FakeStripe = request.getfixturevalue("fake")
    fake.clear_failures()
    fake.take_outbox()
    yield
    fake.clear_failures()
