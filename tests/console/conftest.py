"""The console: its files and rules on the server, and the page in Debian's Chromium (Playwright).

Browser tests run on the embedded backend only; a module that also belongs in the
PostgreSQL + S3 + Redis pass is marked `scale_out`. A browser module defines its `server`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from telentir.runtime import Runtime
from telentir.services import accounts, credentials

from ..support import Api, ServerProcess

if TYPE_CHECKING:  # the browser's modules import Playwright; test_console_server needs none of it
    from ..console_support import Watched

SCALE_OUT = False


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium (Playwright) for the module."""
    from playwright.sync_api import sync_playwright

    from ..console_support import launch

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Watched]]:
    """Factory: a watched page in a fresh browser profile. None may raise a CSP violation or script error."""
    from ..console_support import watch

    opened: list[Watched] = []

    def factory(**options: Any) -> Watched:
        watched = watch(browser.new_context(accept_downloads=True, **options))
        opened.append(watched)
        return watched

    yield factory
    for watched in opened:
        watched.page.context.close()
    assert [problem for watched in opened for problem in watched.problems] == []


@pytest.fixture
def person(server_rt: Runtime, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A verified user with a password and an API key (`api_key`) on the module's server."""
    from ..console_support import PASSWORD

    email = f"{request.node.name[:30]}-{uuid.uuid4().hex[:12]}@example.com"
    user = accounts.create_user(server_rt, email, "+15555550100", password=PASSWORD, verified=True)
    user["api_key"] = credentials.create_api_key(server_rt, user["id"], "test")["key"]
    return user


@pytest.fixture
def api(server: ServerProcess, person: dict[str, Any]) -> Iterator[Api]:
    """The person's API client (as another program would use it)."""
    client = Api(server.url, person["api_key"])
    yield client
    client.close()
